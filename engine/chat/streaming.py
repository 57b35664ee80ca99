"""Streaming a reply: ``generate`` runs on a worker thread and hands token ids to the caller's
thread, which turns them into text, so the caller sees text as it comes and can stop it at
any token. A ``ChatReply`` is what comes out: the text, with its speed and how it ended.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional

from engine.chat.failures import readable_generation_error

_CHATML_TURN_END = "<|im_end|>"


@dataclass
class ChatReply:
    """One reply, with how fast it came and how it ended."""

    reply: str
    tokens: int  # new tokens generated
    tokens_per_second: float
    time_to_first_token_s: float
    stopped: bool  # True when the caller's stop_event ended it early
    seed: Optional[int] = None  # the sampling seed used; None for greedy decoding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed_reply(reply: str, tokens: int, started: float, first_token_at: Optional[float], finished: float, *,
                stopped: bool, seed: Optional[int] = None) -> ChatReply:
    """A reply with its speed: the rate is decoding speed (tokens after the first over the time
    after it); prompt processing is what the time to first token measures."""
    first = first_token_at or finished
    decoding = finished - first
    rate = (tokens - 1) / decoding if tokens > 1 and decoding > 0 else tokens / max(finished - started, 1e-9)
    return ChatReply(reply=reply, tokens=tokens, tokens_per_second=rate, time_to_first_token_s=first - started,
                     stopped=stopped, seed=seed)


class _StopWhenSet:
    """A stopping criterion: ends generation after the current token once an event is set.

    A plain callable is all ``StoppingCriteriaList`` needs; not subclassing
    ``StoppingCriteria`` keeps transformers out of this module's import.
    """

    def __init__(self, *events: Optional[threading.Event]) -> None:
        self.events = [event for event in events if event is not None]
        self.triggered = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.triggered = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), self.triggered, dtype=torch.bool, device=input_ids.device)


def stop_when_set(*events: Optional[threading.Event]) -> _StopWhenSet:
    """A stopping criterion for ``generate`` that ends it after the current token once any of
    ``events`` is set (None entries are ignored)."""
    return _StopWhenSet(*events)


class _TokenStream:
    """What ``generate`` hands each new token to (its ``streamer``), for the reading thread.

    ``generate`` calls ``put`` with the prompt first, then once per new token. Only the
    ids cross threads: decoding them is the reader's work, so the generating thread does
    as little per token as the library's own loop. Duck-typed like transformers'
    ``BaseStreamer`` so that importing this module does not import transformers.
    """

    def __init__(self) -> None:
        self._ids: "queue.SimpleQueue[Optional[list[int]]]" = queue.SimpleQueue()
        self._prompt_seen = False
        self.first_token_at: Optional[float] = None

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._ids.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self._ids.put(None)

    def __iter__(self) -> Iterator[list[int]]:
        while (ids := self._ids.get()) is not None:
            yield ids


class Detokenizer:
    """Turns a growing list of token ids into text pieces in constant time per token.

    Decoding the whole reply at every token costs quadratic time. Instead it decodes a
    short window: the tokens since the last emitted piece plus the few before them, whose
    text is subtracted (they carry the spacing a tokenizer attaches to the next word).
    Text that ends in an incomplete UTF-8 character waits for the next token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window that gives context
        self._read = 0  # end of what was already emitted

    def push(self, ids: list[int]) -> str:
        self._ids.extend(ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """What is left at the end, incomplete characters included."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix:self._read], skip_special_tokens=True)
        text = decode(self._ids[self._prefix:], skip_special_tokens=True)
        if len(text) <= len(before) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(before):]


class TurnEndFilter:
    """Passes streamed text through until a literal end-of-turn marker, which it drops with
    anything after it. Text that could be the start of the marker is held back until the
    next piece shows whether it is."""

    def __init__(self, marker: Optional[str]) -> None:
        self.marker = marker
        self._held = ""
        self._ended = False

    def push(self, piece: str) -> str:
        if not self.marker:
            return piece
        if self._ended:
            return ""
        text = self._held + piece
        cut = text.find(self.marker)
        if cut >= 0:
            self._ended, self._held = True, ""
            return text[:cut]
        keep = next((n for n in range(min(len(self.marker) - 1, len(text)), 0, -1)
                     if self.marker.startswith(text[-n:])), 0)
        self._held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = ("" if self._ended else self._held), ""
        return held

    @property
    def ended(self) -> bool:
        """Whether the marker was met: everything from it on is dropped."""
        return self._ended


def literal_turn_end(tokenizer: Any) -> Optional[str]:
    """ChatML's end-of-turn marker when this tokenizer spells it as plain text.

    The ChatML fallback used for base models without a template writes ``<|im_end|>``;
    their tokenizers know no such token, so it would reach the reply as text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # A fast tokenizer looks one token up; get_vocab() builds the whole vocabulary as a dict
        # (55 ms on the starter), which cost a batch of replies more than its decoding.
        known = backend.token_to_id(_CHATML_TURN_END) is not None
    else:
        known = _CHATML_TURN_END in tokenizer.get_vocab()
    return None if known else _CHATML_TURN_END


def stream_reply(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, Any],
    prompt_tokens: int,
    config: Any,
    started: float,
    on_token: Optional[Callable[[str], None]],
    stop_event: Optional[threading.Event],
    adapters_off: ContextManager[Any],
) -> ChatReply:
    """Generate with ``model`` on a worker thread, inside ``adapters_off``, and collect the reply here.

    ``started`` is when the caller began (the time to first token counts from it).
    """
    import torch
    from transformers import StoppingCriteriaList

    stream = _TokenStream()
    abandoned = threading.Event()  # the caller's on_token raised: stop generating for nobody
    stop = _StopWhenSet(stop_event, abandoned)
    outcome: dict[str, Any] = {}
    # The reader is ready before generation starts: once it starts, this thread only waits for
    # tokens. Work here meanwhile holds the interpreter lock that generation needs between its
    # tensor operations (building the vocabulary here, 50 ms a reply, once made the starter's
    # first token come 17% later than plain generate's).
    text = Detokenizer(tokenizer)
    turn_end = TurnEndFilter(literal_turn_end(tokenizer))
    pieces: list[str] = []

    def run() -> None:
        try:
            # Inference mode, as batched replies use: none of the autograd bookkeeping that
            # generate's own no_grad still does (a decoding step of the starter took 4% less CPU).
            with adapters_off, torch.inference_mode():
                outcome["ids"] = model.generate(
                    **inputs, generation_config=config, streamer=stream,
                    stopping_criteria=StoppingCriteriaList([stop]),
                )
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            outcome["error"] = exc
            stream.end()  # unblock the reader, which would otherwise wait forever

    worker = threading.Thread(target=run, name="chat-generate", daemon=True)
    worker.start()

    def deliver(piece: str) -> None:
        if piece:
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)

    try:
        for ids in stream:
            deliver(turn_end.push(text.push(ids)))
        deliver(turn_end.push(text.flush()))
        deliver(turn_end.flush())
    finally:
        abandoned.set()  # a no-op after a normal finish: generation is already over
        worker.join()
    finished = time.perf_counter()
    if "error" in outcome:
        raise readable_generation_error(outcome["error"])
    tokens = int(outcome["ids"].shape[1] - prompt_tokens)
    return timed_reply("".join(pieces), tokens, started, stream.first_token_at, finished,
                       stopped=stop.triggered and stop_event is not None and stop_event.is_set())
