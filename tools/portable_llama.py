"""A llama-cpp-python wheel that runs on other people's machines: ``python3 tools/portable_llama.py LOCK OUT``.

``make setup`` compiles llama.cpp for the machine it runs on (``GGML_NATIVE``: every instruction
this CPU has), which is right for a checkout and wrong for anything shipped: a bundle or a
wheelhouse built on a newer CPU would stop with "illegal instruction" on an older one. This
builds the lock's llama-cpp-python for the x86-64-v3 level instead (AVX2, FMA, F16C, BMI2: Intel
since 2013, AMD since 2015), into OUT. It is built once per machine: the wheel is kept in
``~/.cache/lora-studio/portable-llama/`` (``$XDG_CACHE_HOME``), under the build's switches, and
copied from there into a fresh checkout's OUT. pip's own wheel cache is bypassed, because it keys
builds by version and would hand back the native one.

The bundle (tools/bundle.py) and the wheelhouse (tools/wheelhouse.py) both ship this wheel.
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import re
import subprocess
import sys
import time
from pathlib import Path

_LLAMA_PIN = re.compile(r"^llama-cpp-python==(\S+)", re.M)
# How far the build is: ninja's "[84/193]" lines, or make's "[ 43%]".
_BUILD_STEP = re.compile(r"^\s*\[\s*(\d+)(?:/(\d+)|%)\]")
# x86-64-v3, spelled as ggml's switches; GGML_NATIVE off so that the build machine's CPU is not asked.
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_BMI2=ON -DGGML_AVX512=OFF")


def locked_version(lock: Path) -> str:
    found = _LLAMA_PIN.search(lock.read_text(encoding="utf-8"))
    if not found:
        raise SystemExit(f"portable llama: {lock} pins no llama-cpp-python")
    return found.group(1)


def machine_cache() -> Path:
    """Where this machine keeps portable wheels, one folder per set of build switches."""
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    switches = hashlib.sha256(PORTABLE_CMAKE_ARGS.encode()).hexdigest()[:12]
    return Path(home) / "lora-studio" / "portable-llama" / switches


def portable_wheel(lock: Path, out: Path, python: str = sys.executable) -> Path:
    """The wheel in ``out`` for the lock's version: already there, copied from the machine's cache,
    or built first."""
    version = locked_version(lock)
    out.mkdir(parents=True, exist_ok=True)
    pattern = f"llama_cpp_python-{version}-*.whl"
    existing = sorted(out.glob(pattern))
    if existing:
        return existing[-1]
    cache = machine_cache()
    cached = sorted(cache.glob(pattern)) or _build(version, cache, python)
    return Path(shutil.copy2(cached[-1], out / cached[-1].name))


def _build(version: str, out: Path, python: str) -> list[Path]:
    """Compile the wheel into ``out``; [the wheel]."""
    out.mkdir(parents=True, exist_ok=True)
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"portable llama: only x86-64 builds are set up here, not {platform.machine()}")
    print(f"Building llama-cpp-python {version} for x86-64-v3 (about 7 minutes on 2 cores)…", flush=True)
    started = time.monotonic()
    log = out / "build.log"
    env = dict(os.environ, CMAKE_ARGS=PORTABLE_CMAKE_ARGS, FORCE_CMAKE="1")
    command = [python, "-m", "pip", "wheel", "-v", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
               "--wheel-dir", str(out), f"llama-cpp-python=={version}"]
    shown = -10
    with log.open("w", encoding="utf-8") as sink, subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL) as child:
        for line in child.stdout:
            sink.write(line)
            step = _BUILD_STEP.match(line)
            if step:
                percent = 100 * int(step.group(1)) // int(step.group(2)) if step.group(2) else int(step.group(1))
                if percent >= shown + 10:
                    shown = percent // 10 * 10
                    print(f"  llama.cpp build {shown}%", flush=True)
    built = sorted(out.glob(f"llama_cpp_python-{version}-*.whl"))
    if child.returncode != 0 or not built:
        raise SystemExit(f"portable llama: the build failed (details in {log})")
    print(f"Built {built[-1].name} in {time.monotonic() - started:.0f} s.", flush=True)
    return built


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n")[0], file=sys.stderr)
        return 2
    print(portable_wheel(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
