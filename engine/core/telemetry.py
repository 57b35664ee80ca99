"""The libraries' own telemetry, off: the studio sends nothing anywhere unless the user gives an address.

Set by the ``lora-studio`` entry point for the whole process tree (the window, the CLI, every child
they start) and again by each training child, whose warm-start standby may have imported
huggingface_hub before the setting was read.
"""

from __future__ import annotations

import os

# Under the names each library reads: huggingface_hub.constants (TRL's trainers send a usage ping
# when built), mlflow.telemetry.utils, and wandb.env.error_reporting_enabled (its Sentry reports).
NO_TELEMETRY = {"HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_ERROR_REPORTING": "false"}


def switch_off_telemetry_environment() -> None:
    """For this process and the children it starts; cheap (imports nothing)."""
    os.environ.update(NO_TELEMETRY)


def switch_off_telemetry() -> None:
    """The environment, and huggingface_hub's module constant too: the library reads its setting
    when first imported, which may have happened long ago (it reads the constant at each call)."""
    switch_off_telemetry_environment()
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True
