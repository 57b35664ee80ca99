"""Work the Train page's memory side runs on a worker thread: finding the device training
would use, and auto-fitting the settings to its free memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.run.config import RunConfig
from studio.workers import TaskReporter


def best_device(reporter: TaskReporter) -> Any:
    from engine.hardware import best_device

    return best_device()


def auto_fit(config: RunConfig, spec: Any, device: Any, reporter: TaskReporter) -> Any:
    """The auto-fit plan for ``config`` on ``device``, sized to the dataset's token lengths when
    the dataset and the model's tokenizer can be read (the plan is sized without them otherwise)."""
    from engine.memory.planning import fit_run, length_stats_of

    stats = None
    if config.dataset != "-" and Path(config.dataset).exists():
        from engine.data.dataset import DataOptions, open_dataset
        from engine.data.scan import scan_dataset
        from engine.models.store import resolve_model
        from engine.models.tokenizer import load_tokenizer

        source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {},
                                                          config.text_split))
        tokenizer = load_tokenizer(resolve_model(config.model))
        report = scan_dataset(source, tokenizer, progress=lambda fraction: reporter.progress(int(fraction * 100), 100),
                              cancelled=lambda: reporter.cancelled)
        if report is not None and report.token_lengths is not None:
            stats = length_stats_of(report.token_lengths)
    return fit_run(config, spec, device.kind, device.free_bytes, stats, bf16=device.bf16)
