"""Make the project's virtual environment from a lock: ``python3 tools/setup_venv.py VENV LOCK``.

What ``make setup`` runs. It checks that the lock matches pyproject.toml, creates VENV, installs
exactly the lock's versions (and the project itself, editable, and the starter model's package),
and marks VENV finished only at the very end. Whatever fails, the user reads one line saying
what and where the details are, and no half-made VENV is left for the next ``make`` to take for
a finished one. Standard library only: it runs before anything is installed.

Options: ``--torch-index URL`` (a PyTorch wheel index for machines whose default index would
give another build of torch), ``--torch VERSION`` (install torch at this version beside a lock
that leaves it out, so that pip picks the build the machine needs), ``--starter REQ`` (the
starter model's package, installed without dependencies).

llama.cpp (llama-cpp-python, for GGUF export and GGUF chat) is compiled from source with the
machine's compiler, in a step of its own after everything else: if that build fails, the studio
is installed without it and ``<venv>/share/lora-studio/llama.cpp.UNAVAILABLE`` says why, which
the studio repeats where GGUF is asked for (``engine.gguf.runtime``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".lora-studio-installed"
# What pip says (at -vv) when it cannot reach an index at all.
_UNREACHABLE = re.compile(r"connection error|NewConnectionError|Failed to establish a new connection|"
                          r"Temporary failure in name resolution|Name or service not known|"
                          r"Network is unreachable|ConnectTimeoutError|ProxyError")
# What pip says (at its normal level) when no index offered any version of a package.
_NOTHING_FOUND = re.compile(r"Could not find a version that satisfies the requirement (\S+) \(from versions: none\)")


# Built from source in a step of its own (build_llama); the kit beside it comes from its sdist.
LLAMA = "llama-cpp-python"
_LLAMA_PIN = re.compile(r"^llama-cpp-python==(\S+)", re.M)
# How far the build is: ninja's "[84/193]" lines, or make's "[ 43%]".
_BUILD_STEP = re.compile(r"^\s*\[\s*(\d+)(?:/(\d+)|%)\]")


class SetupError(Exception):
    """One line for the user; the details are in the log."""


def log_path(venv: Path) -> Path:
    """Beside the venv, so that it outlives a venv that is removed."""
    return venv.with_name(f"{venv.name}-setup.log")


def run(step: str, command: list[str], log, env: dict | None = None) -> None:
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    start = log.tell()
    result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    if result.returncode != 0:
        with open(log.name, encoding="utf-8", errors="replace") as written:
            written.seek(start)
            output = written.read()
        raise SetupError(f"{step} failed: {why(output, command[0], log)}")


def why(output: str, python: str, log) -> str:
    """The cause in a failed step's output, as one line: pip's last error, else the last line."""
    nothing = _NOTHING_FOUND.search(output)
    if nothing and unreachable(python, nothing.group(1), log):
        return "the package registry could not be reached (no network, or a proxy or PIP_INDEX_URL is needed)"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["see the log"])[-1]


def unreachable(python: str, requirement: str, log) -> bool:
    """Ask for ``requirement`` once more, verbosely: did pip fail to connect, or find nothing?"""
    with tempfile.TemporaryDirectory() as scratch:
        probe = subprocess.run([python, "-m", "pip", "download", "-vv", "--no-deps", "--dest", scratch, requirement],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.write(f"\n$ pip download -vv {requirement} (why nothing was found)\n{probe.stdout}{probe.stderr}")
    return bool(_UNREACHABLE.search(probe.stdout + probe.stderr))


def setup(venv: Path, lock: Path, options: argparse.Namespace) -> None:
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--require-virtualenv", "--disable-pip-version-check"]
    with log_path(venv).open("w", encoding="utf-8") as log:
        run("creating the virtual environment", [sys.executable, "-m", "venv", str(venv)], log)
        run("checking the lock", [str(python), str(ROOT / "tools" / "lockcheck.py"), str(lock)], log)
        torch_index = ["--extra-index-url", options.torch_index] if options.torch_index else []
        torch = [f"torch=={options.torch}"] if options.torch else []
        print(f"Installing the versions in {lock.relative_to(ROOT)} (a few minutes the first time)…", flush=True)
        llama = _LLAMA_PIN.search(lock.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as scratch:
            rest = Path(scratch) / lock.name
            rest.write_text(_LLAMA_PIN.sub("", lock.read_text(encoding="utf-8")), encoding="utf-8")
            run(f"installing {lock.name}", pip + ["install", *torch_index, "-r", str(rest), *torch], log)
        # The project and the starter model's package bring nothing the lock does not pin.
        run("installing lora-studio",
            pip + ["install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)], log)
        if options.starter:
            # Over a venv set up before, the starter is there already, and pip check would fail on the
            # dependencies it leaves out on purpose (and the whole venv be thrown away): set it aside.
            starter_name = re.split(r"[=<>!~ ]", options.starter, maxsplit=1)[0]
            run("setting the starter model aside", pip + ["uninstall", "--yes", starter_name], log)
        if llama:
            build_llama(pip, venv, llama.group(1), log)
        run("checking the installed packages", pip + ["check"], log)
        if options.starter:  # after the check: its own dependencies are left out on purpose
            run("installing the starter model", pip + ["install", "--no-deps", options.starter], log)
    (venv / STAMP).touch()


def build_llama(pip: list[str], venv: Path, version: str, log) -> None:
    """Compile llama.cpp (llama-cpp-python ``version``) and unpack its converter kit; on failure
    leave the reason where the studio reads it, and go on without it."""
    kit = venv / "share" / "lora-studio" / "llama.cpp"
    refused = kit.with_name(kit.name + ".UNAVAILABLE")
    refused.unlink(missing_ok=True)
    print(f"Building llama.cpp ({LLAMA} {version}) from source for GGUF export, with this machine's compiler "
          "(about 7 minutes on 2 cores the first time; pip keeps the build for the next set-up)…", flush=True)
    started = time.monotonic()
    try:
        _compile(pip + ["install", "-v", "--no-deps", "--no-binary", LLAMA, f"{LLAMA}=={version}"], log)
        with tempfile.TemporaryDirectory() as scratch:
            run(f"fetching {LLAMA}'s source for its converter",
                pip + ["download", "--no-deps", "--no-binary", ":all:", "--dest", scratch, f"{LLAMA}=={version}"], log)
            sdist = next(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
            run("unpacking llama.cpp's converter", [str(venv / "bin" / "python"), str(ROOT / "tools" / "llama_kit.py"),
                                                    str(sdist), str(kit)], log)
    except (SetupError, OSError, StopIteration) as exc:
        reason = str(exc) or "its source could not be fetched"
        refused.parent.mkdir(parents=True, exist_ok=True)
        refused.write_text(reason + "\n", encoding="utf-8")
        print(f"set-up: {reason}; the studio is installed without GGUF export (details in {log.name})", flush=True)
        return
    print(f"Built llama.cpp in {time.monotonic() - started:.0f} s.", flush=True)


def _compile(command: list[str], log) -> None:
    """``run``, printing the build's progress every tenth of the way."""
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    shown = -10
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL) as child:
        for line in child.stdout:
            log.write(line)
            lines.append(line)
            step = _BUILD_STEP.match(line)
            percent = (100 * int(step.group(1)) // int(step.group(2)) if step.group(2) else int(step.group(1))) \
                if step else -1
            if percent >= shown + 10:
                shown = percent // 10 * 10
                print(f"  llama.cpp build {shown}%", flush=True)
    if child.returncode != 0:
        raise SetupError(f"building llama.cpp failed: {why(''.join(lines[-200:]), command[0], log)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("lock", type=Path)
    parser.add_argument("--torch-index")
    parser.add_argument("--torch")
    parser.add_argument("--starter")
    options = parser.parse_args(argv)
    venv, lock = options.venv.absolute(), options.lock.resolve()
    if (venv / STAMP).exists():
        (venv / STAMP).unlink()  # installing over a finished venv: unfinished until it succeeds
    else:
        shutil.rmtree(venv, ignore_errors=True)  # a set-up that never finished: start again
    try:
        setup(venv, lock, options)
    except (SetupError, OSError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        print(f"set-up: {exc}; nothing was kept, details in {log_path(venv)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
