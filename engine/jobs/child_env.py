"""The environment a training child runs in, whether started cold or forked by the standby."""

from __future__ import annotations

import os
from pathlib import Path

import engine

# The folder that holds the engine package: a child imports this very engine from there.
_ENGINE_ROOT = Path(engine.__file__).resolve().parent.parent


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """A training child's environment: the caller's, unbuffered, importing this very engine
    wherever the caller was started from."""
    env = dict(env, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ENGINE_ROOT), env.get("PYTHONPATH")]))
    return env
