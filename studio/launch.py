"""The ``lora-studio`` entry point: no arguments open the studio, a subcommand runs headless.

This module imports nothing heavy at import time, so the headless path never loads Qt.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        from engine.display import check_window

        # Qt's own message when its platform plugin cannot load names the wrong library and
        # aborts; the quick check names every missing one and the packages that hold them.
        window = check_window(probe=False)
        if not window.can_open:
            print(f"error: the window cannot open: {window.reason}", file=sys.stderr)
            return 2
        from studio.app import main as run_studio

        return run_studio()
    from engine.cli.main import main as run_cli

    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
