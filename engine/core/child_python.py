"""How the studio starts a Python child (a training run, the warm-start standby, llama.cpp's
converter, the window probe), and how the entry point runs one: ``python -m MODULE ARGS``.

Always the ``-m`` form, with ``sys.executable``: in a checkout or a pip install that is Python
itself; in the desktop bundle (PyInstaller) it is the bundle's own ``lora-studio`` binary, and
there is no Python beside it. The entry point (``studio.launch``) hands ``-m MODULE ARGS`` to
``run_module_argv`` before anything else, which runs the module as Python's ``-m`` would, so one
command line works in both.
"""

from __future__ import annotations

import runpy
import sys
from typing import Optional

MODULE_SWITCH = "-m"


def python_module_command(module: str, *args: object) -> list[str]:
    """The command line that runs ``module`` as ``__main__`` in a new process."""
    return [sys.executable, MODULE_SWITCH, module, *map(str, args)]


def run_module_argv(argv: list[str]) -> Optional[int]:
    """Run ``-m MODULE ARGS`` (``argv`` without the program) as Python would; None for any other
    command line, which is the caller's to handle."""
    if len(argv) < 2 or argv[0] != MODULE_SWITCH:
        return None
    module, args = argv[1], argv[2:]
    # As under `python -m`: the module reads its own arguments from sys.argv[1:], and runpy puts
    # the module's file in sys.argv[0].
    sys.argv = [sys.argv[0], *args]
    # The module's sys.exit() goes on up to the process's end, as it would under Python.
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0
