"""Compare: one prompt put to several adapter choices with the same seed and settings.

One session serves every column by switching adapters between replies
(``ChatSession.compare``); this module owns what a column is and how one is run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from engine.chat.blends import AdapterChoice, choice_label
from engine.chat.streaming import ChatReply
from engine.errors import StudioError

if TYPE_CHECKING:
    from engine.chat.session import ChatSession

MAX_COMPARE_COLUMNS = 4


@dataclass
class ColumnResult:
    """One column of a comparison: its reply, or why it has none."""

    choice: AdapterChoice
    reply: Optional[ChatReply] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"adapter": None if self.choice is None else choice_label(self.choice)}
        data.update(self.reply.to_dict() if self.reply is not None else {"error": self.error})
        return data


def check_columns(choices: list[AdapterChoice]) -> None:
    if not 1 <= len(choices) <= MAX_COMPARE_COLUMNS:
        raise StudioError(f"compare takes 1 to {MAX_COMPARE_COLUMNS} columns, got {len(choices)}")


def run_column(session: ChatSession, index: int, choice: AdapterChoice, messages: list[dict],
               settings: dict[str, Any], on_token: Optional[Callable[[int, str], None]],
               stop_event: Optional[threading.Event]) -> ColumnResult:
    """Column ``index``'s reply from ``session`` with ``choice`` active, or why it has none."""
    if stop_event is not None and stop_event.is_set():
        return ColumnResult(choice, error="not run: the comparison was stopped")
    try:
        session.set_adapter(choice)
        stream = None if on_token is None else (lambda piece: on_token(index, piece))
        return ColumnResult(choice, reply=session.generate(messages, on_token=stream, stop_event=stop_event,
                                                           **settings))
    except StudioError as exc:
        return ColumnResult(choice, error=str(exc))
