"""What several commands read the same way: the dataset-reading flags, a dataset named on
the command line, and a model's tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from engine.cli.output import print_progress, quiet_libraries


def add_data_reading_flags(parser: argparse.ArgumentParser) -> None:
    from engine.core.choices import DATASET_FORMATS, TEXT_SPLITS

    parser.add_argument("--format", choices=DATASET_FORMATS, help="the row format (detected when left out)")
    parser.add_argument("--columns", metavar="FIELD=COLUMN,...",
                        help="which column holds each field, e.g. question=prompt,answer=reply")
    parser.add_argument("--text-split", choices=TEXT_SPLITS, help="plain text: one document per line, or chunks (auto: guessed)")


def open_data(reference: str, data_format: Optional[str], columns: dict[str, str], text_split: str) -> Any:
    from engine.data.dataset import DataOptions, open_dataset

    return open_dataset(dataset_reference(reference), DataOptions(data_format, columns, text_split))


def dataset_reference(reference: str) -> str:
    """An absolute path for a file or folder; anything else (a hub dataset id) as given."""
    path = Path(reference).expanduser()
    return str(path.resolve()) if path.exists() else reference


def tokenizer_for(model: str) -> Any:
    from engine.models.store import resolve_model

    from engine.models.tokenizer import load_tokenizer

    quiet_libraries()
    return load_tokenizer(resolve_model(model, progress=print_progress))
