"""What the server offers: its model names (the base, and each adapter by its library name), the
prompt each name is given (its own saved chat template), and the text a reply's tokens make.

Rendering and tokenising run on the server's request threads, beside the batch being generated,
with a tokenizer of their own: a Rust tokenizer used from two threads at once can fail
("Already borrowed"), and the session's one is the generating thread's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from engine.chat.streaming import Detokenizer, TurnEndFilter, literal_turn_end
from engine.data.rendering import render_conversation
from engine.errors import StudioError
from engine.serve.protocol import ApiError


def base_name(model: str) -> str:
    """The base model's name in ``/v1/models``: a folder or file by its name, a catalog name as it is."""
    path = Path(model)
    if len(path.parts) > 1 or path.exists():
        return path.stem if path.suffix.lower() == ".gguf" else path.name
    return model


def adapter_name(ref: str) -> str:
    """An adapter's name in ``/v1/models``: its library name, or a folder's name."""
    return Path(ref).name


class ServedModels:
    """The names clients may put in ``model``, and the prompts and texts for each."""

    def __init__(self, session: Any, model: str, adapters: list[str]) -> None:
        from engine.adapters.library import resolve_adapter
        from engine.models.tokenizer import load_tokenizer

        # Each name maps to its adapter's folder, found once: renaming it in the library while
        # serving changes nothing for clients.
        self.refs: dict[str, Optional[str]] = {base_name(model): None}
        for ref in adapters:
            name = adapter_name(ref)
            if name in self.refs:
                raise StudioError(f"two served models would both be called {name!r}: rename one adapter")
            self.refs[name] = str(resolve_adapter(ref))
        # Each adapter is loaded here, so a bad one is refused before the server opens.
        self.templates = {name: session.template_for(ref) for name, ref in self.refs.items()}
        self.context_tokens: Optional[int] = session.context_tokens
        self.vocabulary: int = session.vocabulary
        self._tokenizer = load_tokenizer(session.model_path)
        self._turn_end = literal_turn_end(self._tokenizer)
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.refs)

    def adapter_for(self, name: str) -> Optional[str]:
        """The adapter a ``model`` field names (None for the base); never a path: only listed names."""
        if name not in self.refs:
            raise ApiError(404, f"the model {name!r} does not exist: GET /v1/models lists what this server has",
                           param="model", code="model_not_found")
        return self.refs[name]

    def chat_ids(self, name: str, messages: list[dict]) -> list[int]:
        """The token ids ``name`` is given for ``messages``: rendered with its own chat template."""
        template, owner = self.templates[name]
        with self._lock:
            try:
                text = render_conversation(messages, self._tokenizer, add_generation_prompt=True,
                                           chat_template=template, template_of=owner)
            except StudioError as exc:
                raise ApiError(400, str(exc), param="messages") from None
            # The template writes its own special tokens (BOS included), as in training.
            return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_ids(self, text: str) -> list[int]:
        """The token ids of a completion's plain prompt, with the tokenizer's own special tokens."""
        with self._lock:
            return self._tokenizer(text)["input_ids"]

    def check_length(self, prompt_tokens: int) -> None:
        if self.context_tokens and prompt_tokens >= self.context_tokens:
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens; this model's context is "
                                f"{self.context_tokens} tokens", param="messages", code="context_length_exceeded")

    def reply_text(self, stops: list[str], *, chat: bool) -> "ReplyText":
        """A reply's text as its tokens come; a chat reply also ends at a literal end-of-turn marker."""
        return ReplyText(self, Detokenizer(self._tokenizer), stops, self._turn_end if chat else None)

    def decode(self, detokenizer: Detokenizer, ids: Optional[list[int]]) -> str:
        """The text ``ids`` complete (None: what is left), decoded under the tokenizer's lock."""
        with self._lock:
            return detokenizer.push(ids) if ids is not None else detokenizer.flush()


class ReplyText:
    """A reply's token ids turned into text as they come, cut at the first stop string (the
    client's, or a literal end-of-turn marker) with what follows it."""

    def __init__(self, served: ServedModels, detokenizer: Detokenizer, stops: list[str],
                 turn_end: Optional[str]) -> None:
        self._served = served
        self._detokenizer = detokenizer
        self._filters = [TurnEndFilter(marker) for marker in ([turn_end] if turn_end else []) + stops]
        self.stopped = False  # a stop string was met: the rest of the reply is not wanted

    def push(self, ids: Optional[list[int]]) -> str:
        """The text ``ids`` complete; None for the end of the reply (what was held back)."""
        text = self._served.decode(self._detokenizer, ids)
        for index, text_filter in enumerate(self._filters):
            text = text_filter.push(text)
            if ids is None:
                text += text_filter.flush()
            if text_filter.ended:
                self.stopped = True
                # The filters after this one still hold what they held back before the stop.
                for later in self._filters[index + 1:]:
                    text = later.push(text) + later.flush()
                return text
        return text
