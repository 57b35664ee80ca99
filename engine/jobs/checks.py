"""Pre-start checks: everything that can refuse a run before its folder or its process exists."""

from __future__ import annotations

from engine.paths import writable_home
from engine.run.config import RunConfig


def check_can_run(config: RunConfig) -> None:
    """Everything that can be refused before a run directory or a process exists."""
    writable_home()  # a run folder is made in the home
    from engine.data.dataset import DataOptions, open_dataset
    from engine.models.store import resolve_model
    from engine.train import preflight

    config.validate()
    preflight.check(config, resolve_model(config.model))
    open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))
