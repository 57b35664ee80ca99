"""Does a lock file pin what pyproject.toml asks for, and nothing it has stopped asking for?

Run by the set-up before it installs (``python tools/lockcheck.py LOCK``) and by the suite
(tests/test_lock.py). Standard library only, plus the copies of tomli and packaging that pip
carries, because the set-up runs it with a fresh venv's interpreter before anything is installed.
Prints one line naming the first package that disagrees and exits 1; silent and 0 when they agree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
# uv marks what the project itself asks for with this line under the pin.
_FROM_PROJECT = re.compile(r"#\s+(via\s+)?lora-studio \(pyproject\.toml\)")
# The extras both locks include (the Makefile's make lock compiles with these).
LOCKED_EXTRAS = ("test", "dev", "gguf", "trackers")


def project_requirements(pyproject: Path, extras: tuple[str, ...]) -> dict[str, Requirement]:
    """The project's dependencies and those of ``extras``, by canonical name."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}


def locked_pins(lock: Path) -> tuple[dict[str, str], set[str]]:
    """Every pinned version in ``lock``, and the names pinned because the project asked for them."""
    pins: dict[str, str] = {}
    asked: set[str] = set()
    current: Optional[str] = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = pin.group(2)
        elif current and _FROM_PROJECT.search(line):
            asked.add(current)
    return pins, asked


def problem(lock: Path, pyproject: Path = ROOT / "pyproject.toml") -> Optional[str]:
    """One line naming the first disagreement between ``lock`` and ``pyproject``, or None."""
    wanted = project_requirements(pyproject, LOCKED_EXTRAS)
    pins, asked = locked_pins(lock)
    # torch may be left out on purpose: the CUDA lock lets the machine pick torch's build.
    unpinned_torch = "torch" not in pins
    for name, requirement in sorted(wanted.items()):
        if name not in pins:
            if name == "torch" and unpinned_torch:
                continue
            return (f"{lock.name} has no pin for {requirement.name}, which pyproject.toml asks for: "
                    "run make lock")
        if not requirement.specifier.contains(pins[name], prereleases=True):
            return (f"{lock.name} pins {requirement.name}=={pins[name]}, outside pyproject.toml's "
                    f"{requirement}: run make lock")
    for name in sorted(asked - set(wanted)):
        return f"{lock.name} pins {name} for lora-studio, but pyproject.toml no longer asks for it: run make lock"
    return None


def changes(lock: Path, freeze: Path) -> list[str]:
    """What ``pip freeze`` output ``freeze`` installs differently from ``lock``: ``name lock -> now``."""
    pins, _asked = locked_pins(lock)
    now, _ = locked_pins(freeze)
    return [f"{name} {pins.get(name, '(not locked)')} -> {version}"
            for name, version in sorted(now.items()) if pins.get(name) != version and name != "lora-studio"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--changes"]:
        moved = changes(Path(argv[1]), Path(argv[2]))
        print(f"{len(moved)} package(s) newer than {Path(argv[1]).name}" + "".join(f"\n  {line}" for line in moved))
        return 0
    for lock in map(Path, argv):
        message = problem(lock)
        if message:
            print(message, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
