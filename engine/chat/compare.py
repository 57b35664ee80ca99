"""Compare: one prompt put to several adapter choices with the same seed and settings.

One session serves every column by switching adapters between replies
(``ChatSession.compare``); a column may instead name a GGUF file, which llama.cpp answers
(``engine.chat.gguf_session``), so an export is judged beside the adapter it came from.
This module owns what a column is and how one is run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from engine.chat.blends import ColumnChoice, GgufFile, choice_label
from engine.chat.streaming import ChatReply
from engine.errors import StudioError

if TYPE_CHECKING:
    from engine.chat.gguf_session import GgufSession
    from engine.chat.session import ChatSession

MAX_COMPARE_COLUMNS = 4


@dataclass
class ColumnResult:
    """One column of a comparison: its reply, or why it has none."""

    choice: ColumnChoice
    reply: Optional[ChatReply] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"adapter": None if self.choice is None else choice_label(self.choice)}
        data.update(self.reply.to_dict() if self.reply is not None else {"error": self.error})
        return data


def check_columns(choices: list[ColumnChoice]) -> None:
    if not 1 <= len(choices) <= MAX_COMPARE_COLUMNS:
        raise StudioError(f"compare takes 1 to {MAX_COMPARE_COLUMNS} columns, got {len(choices)}")


def run_column(session: ChatSession, index: int, choice: ColumnChoice, messages: list[dict],
               settings: dict[str, Any], on_token: Optional[Callable[[int, str], None]],
               stop_event: Optional[threading.Event],
               open_file: Optional[Callable[[GgufFile], GgufSession]] = None) -> ColumnResult:
    """Column ``index``'s reply from ``session`` with ``choice`` active (or from the file
    ``open_file`` gives for a ``GgufFile``), or why it has none."""
    if stop_event is not None and stop_event.is_set():
        return ColumnResult(choice, error="not run: the comparison was stopped")
    try:
        if isinstance(choice, GgufFile):
            if open_file is None:
                raise StudioError("GGUF files cannot be compared here")
            answering: Any = open_file(choice)
        else:
            session.set_adapter(choice)
            answering = session
        stream = None if on_token is None else (lambda piece: on_token(index, piece))
        return ColumnResult(choice, reply=answering.generate(messages, on_token=stream, stop_event=stop_event,
                                                             **settings))
    except StudioError as exc:
        return ColumnResult(choice, error=str(exc))
