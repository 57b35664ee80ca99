"""Pre-start checks: everything that can refuse a run before its folder or its process exists."""

from __future__ import annotations

from pathlib import Path

from engine.paths import writable_home
from engine.run.config import RunConfig


def check_can_run(config: RunConfig) -> None:
    """Everything that can be refused before a run directory or a process exists."""
    writable_home()  # a run folder is made in the home
    from engine.models.store import resolve_model
    from engine.train import preflight

    config.validate()
    model_path = resolve_model(config.model)
    preflight.check(config, model_path)
    check_data_can_train(config, model_path)


def check_data_can_train(config: RunConfig, model_path: Path) -> None:
    """Refuse data that cannot train (no usable row, an empty validation split, a bad row under
    "stop"), with the reason the training child would fail with, reading only its first rows
    when it can train (``engine.data.trainable``)."""
    from engine.data.dataset import DataOptions, open_dataset
    from engine.data.preference import check_preferences
    from engine.data.trainable import check_trainable
    from engine.models.tokenizer import load_tokenizer
    from engine.train import preflight

    source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))
    preflight.check_data_objective(config, source.format)  # a preference file given to SFT, and the reverse
    tokenizer = load_tokenizer(model_path)
    if config.is_preference:
        # Pairs that cannot train (all identical, one answer only, labels that are not booleans, every
        # prompt filling max length, a bad row under "stop"), in the words the training child would fail
        # with, reading up to the first pair that can train (engine.data.preference).
        check_preferences(source, tokenizer, objective=config.objective, max_length=config.max_length,
                          bad_rows=config.bad_rows)
        return
    check_trainable(source, tokenizer, max_length=config.max_length, train_on=config.train_on,
                    bad_rows=config.bad_rows, val_fraction=config.val_fraction)
