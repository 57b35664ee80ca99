"""The ``lora-studio`` entry point: no arguments open the studio, a subcommand runs headless.

This module imports nothing heavy at import time, so the headless path never loads Qt. In the
desktop bundle this binary is also the studio's Python: ``lora-studio -m MODULE ARGS`` runs a
module as ``python -m`` would (``engine.core.child_python``), which is how the studio starts its
training runs and other children there.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from engine.core.telemetry import switch_off_telemetry_environment

    # Before any library is imported, for this process and every child it starts (training runs,
    # the server, the converter): the studio sends nothing the user did not ask for.
    switch_off_telemetry_environment()
    if getattr(sys, "frozen", False):
        # PyInstaller's multiprocessing hook: a helper process multiprocessing starts from this
        # binary (its resource tracker) runs here and exits, instead of opening the studio.
        import multiprocessing

        multiprocessing.freeze_support()
    from engine.core.child_python import run_module_argv

    ran = run_module_argv(args)
    if ran is not None:
        return ran
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
