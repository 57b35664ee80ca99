"""lora-studio desktop: the launcher entry and icons of a pip or pipx install, in the user's XDG data
folder (``$XDG_DATA_HOME``, by default ~/.local/share). The .deb and the bundle place the same files
(engine.desktop) themselves."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.output import print_result
from engine.cli.parsing import add_command


def register(sub: Any) -> None:
    desktop = sub.add_parser("desktop", help="add the studio to the desktop's launcher (Linux)").add_subparsers(
        dest="desktop_command", required=True)
    add_command(desktop, "install", cmd_desktop_install,
                "write the launcher entry and icons for this install under the XDG data folder")
    add_command(desktop, "uninstall", cmd_desktop_uninstall, "remove what `desktop install` wrote")


def cmd_desktop_install(args: argparse.Namespace) -> int:
    from engine.desktop import ENTRY_FILE, install, launcher_command, require_xdg_desktop, xdg_data_home

    require_xdg_desktop()
    data_home, command = xdg_data_home(), launcher_command()
    written = install(data_home, command)
    report = {"data_home": str(data_home), "exec": str(command), "entry": str(data_home / ENTRY_FILE),
              "files": [str(path) for path in written]}
    return print_result(args, report, f"LoRA Studio is in the launcher: {report['entry']} starts {command} "
                                      f"({len(written) - 1} icons beside it)")


def cmd_desktop_uninstall(args: argparse.Namespace) -> int:
    from engine.desktop import uninstall, xdg_data_home

    data_home = xdg_data_home()
    removed = uninstall(data_home)
    report = {"data_home": str(data_home), "removed": [str(path) for path in removed]}
    line = (f"LoRA Studio is out of the launcher: {len(removed)} files removed from {data_home}" if removed
            else f"nothing to remove: no LoRA Studio desktop entry under {data_home}")
    return print_result(args, report, line)
