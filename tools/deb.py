"""The .deb: ``python3 tools/deb.py dist/lora-studio-<version>-linux-x86_64.tar.gz`` (``make deb``)
writes ``dist/lora-studio_<version>_amd64.deb`` from the bundle's tarball, so that the package
holds exactly the bundle that was built (and tested):

- ``/opt/lora-studio``: the bundle (the ``lora-studio`` binary and its ``_internal`` folder);
- ``/usr/bin/lora-studio``: a link to the binary (it finds ``_internal`` through its real path);
- ``/usr/share/applications/lora-studio.desktop`` and the icons under ``/usr/share/icons/hicolor``;
- the control file: ``Depends`` on the system libraries Qt's X11 (xcb) plugin loads, which the
  bundle does not carry (``engine.display`` knows them and their Debian packages), and on a C
  library at least as new as the build machine's (the bundle's Python was built against it).

``dpkg-deb --build --root-owner-group``: every file belongs to root, no fakeroot needed. Standard
library only, with the desktop entry and icons (``engine.desktop``) and the window's libraries
(``engine.display``) read from the checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "lora-studio"
INSTALL_DIR = Path("opt") / PACKAGE
_TARBALL = re.compile(r"lora-studio-(?P<version>[^-]+)-linux-x86_64\.tar\.gz$")
MAINTAINER = "LoRA Studio maintainers <lora-studio@localhost>"
SUMMARY = "desktop studio for fine-tuning language models with LoRA"
DESCRIPTION = """\
 Pick a base model and a dataset, see before you start whether the run fits in
 memory, train while watching live loss and memory curves, keep every result in
 an adapter library, merge or export adapters (GGUF included), and chat with
 them. LoRA, QLoRA, DoRA, prompt and prefix tuning, preference tuning.
 .
 This package is the self-contained bundle (Python, PyTorch's CPU build, Qt)
 under /opt/lora-studio; the command line is lora-studio."""


class DebError(Exception):
    """One line for the user."""


def _checkout_on_path() -> None:
    """engine.desktop and engine.display import only the standard library: read from the checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def desktop_files(exec_path: str) -> tuple[str, list[tuple[str, Path]]]:
    """The desktop entry launching ``exec_path``, and the icons as (path below share/, file)."""
    _checkout_on_path()
    from engine.desktop import desktop_entry, icon_files

    return desktop_entry(exec_path), icon_files()


# Packages renamed by Debian's 64-bit time_t transition (Debian 13, Ubuntu 24.04): either name will do.
_T64_RENAMED = {"libglib2.0-0": "libglib2.0-0t64 | libglib2.0-0"}


def window_packages() -> list[str]:
    """The Debian packages of the libraries Qt's xcb plugin loads (engine.display's table): the
    bundle carries some of them from the build machine, but the graphics stack (libGL, libEGL,
    libxcb) must be the system's. The Wayland ones are left out: Qt falls back to X11 without them."""
    _checkout_on_path()
    from engine.display import PACKAGES

    names = {names["debian"] for library, names in PACKAGES.items() if not library.startswith("libwayland")}
    return sorted(_T64_RENAMED.get(name, name) for name in names)


def glibc_version() -> str:
    version = platform.libc_ver()[1]
    if not version:
        raise DebError("this machine's C library is not glibc: a .deb is built on Debian or Ubuntu")
    return version


def control(version: str, installed_kib: int) -> str:
    depends = ", ".join([f"libc6 (>= {glibc_version()})", *window_packages()])
    return (f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\n"
            f"Installed-Size: {installed_kib}\nDepends: {depends}\nSection: science\nPriority: optional\n"
            f"Description: {SUMMARY}\n{DESCRIPTION}\n")


def installed_kib(root: Path) -> int:
    """What dpkg counts: each file's size rounded up to a KiB, one per link and folder."""
    total = 0
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_dir():
            total += 1
        else:
            total += -(-path.stat().st_size // 1024)
    return total


def stage(tarball: Path, root: Path, version: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    opt = root / INSTALL_DIR
    opt.parent.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        top = archive.getmembers()[0].name.split("/")[0]
        archive.extractall(opt.parent, filter="tar")
    (opt.parent / top).rename(opt)
    binary = Path("/") / INSTALL_DIR / PACKAGE
    if not (opt / PACKAGE).is_file():
        raise DebError(f"{tarball.name} holds no {top}/{PACKAGE} binary: it is not a bundle")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / PACKAGE).symlink_to(binary)
    entry, icons = desktop_files(f"/usr/bin/{PACKAGE}")
    share = root / "usr" / "share"
    (share / "applications").mkdir(parents=True)
    (share / "applications" / f"{PACKAGE}.desktop").write_text(entry, encoding="utf-8")
    for relative, source in icons:
        (share / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, share / relative)
    for path in root.rglob("*"):  # what a package installs: readable by all, writable by root alone
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control(version, installed_kib(root)), encoding="utf-8")


def build(tarball: Path, dist: Path, work: Path) -> Path:
    match = _TARBALL.search(tarball.name)
    if match is None:
        raise DebError(f"{tarball.name} is not a Linux x86-64 bundle (lora-studio-<version>-linux-x86_64.tar.gz)")
    if not tarball.is_file():
        raise DebError(f"{tarball} does not exist: run make bundle first")
    if shutil.which("dpkg-deb") is None:
        raise DebError("dpkg-deb is not installed (apt install dpkg)")
    version = match.group("version")
    started = time.monotonic()
    root = work / "root"
    print(f"Staging {tarball.name} under /{INSTALL_DIR}…", flush=True)
    stage(tarball, root, version)
    dest = dist / f"{PACKAGE}_{version}_amd64.deb"
    partial = dest.with_name(dest.name + ".partial")
    print("Building the package with dpkg-deb…", flush=True)
    # zstd: a tenth of xz's time on a bundle this size; dpkg reads it from Debian 12 and Ubuntu 21.10 on,
    # older than the glibc the bundle needs anyway.
    done = subprocess.run(["dpkg-deb", "--build", "--root-owner-group", "-Zzstd", "-z9", str(root), str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DebError(f"dpkg-deb failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    partial.replace(dest)
    shutil.rmtree(root, ignore_errors=True)
    print(f"Wrote {dest} ({dest.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f} s.", flush=True)
    return dest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tarball", type=Path)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "deb")
    options = parser.parse_args(argv)
    try:
        build(options.tarball, options.dist, options.work)
    except DebError as exc:
        print(f"deb: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
