"""Chat with a base model and its adapters: one loaded base, adapters swapped in place.

The base is loaded once. Each adapter is loaded into one ``PeftModel`` over that base
on first use and kept in a small cache (least recently used out first), so switching
between adapters, to a combination of adapters, or back to the plain base is a
pointer change that never reloads the base. Replies stream: ``generate`` runs on a
worker thread and hands token ids to the caller's thread, which turns them into text,
so the caller sees text as it comes and can stop it at any token.

Prompts are rendered through ``engine.data.rendering.render_conversation`` with the chat
template saved with the adapter (or its training checkpoint), the same function and
template training used: a template that differs between training and chat is the
classic silent quality bug.

Compare mode puts one prompt to several adapters with the same seed and settings;
one session serves every column by switching adapters between replies.

Conversations are saved and read back as JSON or Markdown (``save_transcript``,
``load_transcript``), and ``room_for_training`` / ``room_to_load`` tell whether a
chat model and a training run fit on one device together.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from engine.run.rundir import RunDir
from engine.run.checkpoints import checkpoint_step, complete_checkpoints
from engine.models import trust
from engine.models.tokenizer import load_tokenizer
from engine.core.atomic import write_text
from engine.data.rendering import chat_template_for, render_conversation
from engine.errors import StudioError
from engine.adapters.library import PEFT_CONFIG, read_adapter_meta, read_peft_config, resolve_adapter

MAX_CACHED_ADAPTERS = 4
MAX_COMPARE_COLUMNS = 4
# A loaded chat model must leave this share of the device's free memory unused, as the
# training estimator does: allocators and other programs need some slack.
MEMORY_MARGIN = 0.10
# Room for the key/value cache of a conversation this long is counted when loading;
# chats seldom come near a long-context model's full window.
CHAT_CONTEXT_TOKENS = 4096
TRANSCRIPT_FORMAT = "lora-studio-chat"
TRANSCRIPT_VERSION = 1
ROLES = ("system", "user", "assistant")
SETTINGS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


# what a reply is ------------------------------------------------------------------------------
@dataclass
class ChatReply:
    reply: str
    tokens: int  # new tokens generated
    tokens_per_second: float
    time_to_first_token_s: float
    stopped: bool  # True when the caller's stop_event ended it early
    seed: Optional[int] = None  # the sampling seed used; None for greedy decoding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Blend:
    """Several adapters at once, each one's change to the weights scaled: ΔW = Σ wᵢ·ΔWᵢ.

    Built in memory with PEFT's ``cat`` combination, which is exact (no SVD truncation,
    no rank limit); nothing is written to the library.
    """

    parts: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise StudioError("a combination needs at least one adapter")
        for ref, weight in self.parts:
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise StudioError(f"the weight of {ref!r} in a combination must be a number, got {weight!r}")
        if all(weight == 0 for _ref, weight in self.parts):
            raise StudioError("a combination with every weight 0 is the base model: pick the base model instead")

    @property
    def label(self) -> str:
        return " + ".join(_short_ref(ref) if weight == 1 else f"{weight:g}×{_short_ref(ref)}"
                          for ref, weight in self.parts)


AdapterChoice = Union[str, Blend, None]  # a library name or PEFT folder, a combination, or the base


def choice_label(choice: AdapterChoice) -> str:
    """How an adapter choice is named to people: ``base model``, a name, or ``a + 0.5×b``."""
    if choice is None:
        return "base model"
    return choice.label if isinstance(choice, Blend) else _short_ref(choice)


def _short_ref(ref: str) -> str:
    """A library name as it is; a folder by its name (with its run for a training checkpoint)."""
    path = Path(ref)
    if len(path.parts) == 1:
        return ref
    if path.parent.name == RunDir(path.parent.parent).checkpoints.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


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


@dataclass
class _LoadedAdapter:
    peft_name: str  # its key inside the PeftModel (module keys cannot hold a path's dots)
    chat_template: Optional[str]
    uses_dora: bool


# streaming ------------------------------------------------------------------------------------
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


class _Detokenizer:
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


# the session ----------------------------------------------------------------------------------
class ChatSession:
    """One base model in memory, a small cache of its adapters, one reply at a time.

    Calls are serialised by a lock: switching adapters while a reply is being generated
    waits for that reply instead of changing the weights under it.
    """

    def __init__(self, model: str, *, device: str = "auto", threads: Optional[int] = None,
                 max_cached_adapters: int = MAX_CACHED_ADAPTERS) -> None:
        if max_cached_adapters < 2:
            raise StudioError("the adapter cache must hold at least 2 adapters (a combination needs two)")
        self.model = model
        self.requested_device = device
        self.threads = threads
        self.max_cached_adapters = max_cached_adapters
        self.device: Optional[str] = None
        self.model_path: Optional[Path] = None
        self._lock = threading.RLock()
        self._tokenizer: Any = None
        self._base: Any = None  # the transformers model; PEFT wraps it and never replaces it
        self._peft: Any = None  # the PeftModel over _base, once an adapter has been loaded
        # Least recently used first. Keys: a resolved folder, or a Blend of resolved folders.
        self._adapters: "OrderedDict[Any, _LoadedAdapter]" = OrderedDict()
        self._active: Optional[_LoadedAdapter] = None
        self._active_choice: AdapterChoice = None
        self._names = itertools.count()
        self._fingerprint: Optional[str] = None  # of the loaded base, computed when first needed

    # loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Resolve the model and load its tokenizer and weights; does nothing once loaded."""
        with self._lock:
            if self._base is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM

            from engine.models.store import check_loadable, resolve_model

            if self.threads:
                torch.set_num_threads(self.threads)
            device = _pick_device(self.requested_device)
            path = resolve_model(self.model)
            check_loadable(path)
            try:
                room: Optional[MemoryRoom] = room_to_load(path, device)
            except StudioError:
                room = None  # a config the size cannot be read from: loading says what is wrong with it
            if room is not None and not room.fits:
                raise StudioError(f"not enough free memory to load {self.model}: {room.describe()}")
            try:
                code = trust.load_options(path)
                tokenizer = load_tokenizer(path)
                base = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype_for(device), **code)
            except (OSError, ValueError) as exc:
                raise StudioError(f"cannot load model {self.model!r} from {path}: {_first_line(exc)}") from None
            self._tokenizer, self._base = tokenizer, base.to(device).eval()
            self.device, self.model_path = device, path

    @property
    def loaded(self) -> bool:
        return self._base is not None

    @property
    def base_model(self) -> Any:
        """The loaded transformers model (None before ``load``); adapters live inside it."""
        return self._base

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (None before ``load``), for counting a draft's tokens."""
        return self._tokenizer

    @property
    def adapter(self) -> AdapterChoice:
        """The active adapter as it was given to ``set_adapter``; None for the base model."""
        return self._active_choice

    @property
    def cached_adapters(self) -> int:
        """How many adapters (combinations included) are loaded beside the base now."""
        return len(self._adapters)

    def set_adapter(self, adapter: AdapterChoice) -> None:
        """Make ``adapter`` active: a library name or PEFT folder, a ``Blend``, or None for the base."""
        with self._lock:
            self.load()
            if adapter is None:
                self._active, self._active_choice = None, None
                return
            if isinstance(adapter, Blend):
                loaded = self._blend(adapter)
            else:
                loaded = self._adapter(str(adapter), resolve_adapter(adapter), keep=())
            self._peft.set_adapter(loaded.peft_name)
            self._active, self._active_choice = loaded, adapter

    def _adapter(self, ref: str, path: Path, keep: tuple[Any, ...]) -> _LoadedAdapter:
        """The loaded adapter for ``path``, read from disk when it is not in the cache."""
        loaded = self._adapters.get(path)
        if loaded is None:
            loaded = self._load_adapter(ref, path)
            self._adapters[path] = loaded
            self._evict(keep=(path, *keep))
        self._adapters.move_to_end(path)
        return loaded

    def _load_adapter(self, ref: str, path: Path) -> _LoadedAdapter:
        from peft import PeftModel

        meta = read_adapter_meta(path)
        self._check_base_fingerprint(ref, meta)
        name = f"adapter{next(self._names)}"
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._base, str(path), adapter_name=name)
            else:
                self._peft.load_adapter(str(path), adapter_name=name)
        except Exception as exc:  # any failure reading a user's adapter is theirs to act on
            self._discard_partial_adapter(name)
            raise StudioError(_explain_adapter_failure(ref, self.model, exc)) from None
        self._peft.eval()  # new adapter modules start in training mode, with their dropout on
        return _LoadedAdapter(peft_name=name, chat_template=_saved_chat_template(path, meta),
                              uses_dora=bool(read_peft_config(path).get("use_dora")))

    def _blend(self, blend: Blend) -> _LoadedAdapter:
        paths = [resolve_adapter(ref) for ref, _weight in blend.parts]
        key = Blend(tuple((str(path), weight) for path, (_ref, weight) in zip(paths, blend.parts)))
        loaded = self._adapters.get(key)
        if loaded is None:
            parts = []
            for path, (ref, _weight) in zip(paths, blend.parts):
                parts.append(self._adapter(ref, path, keep=tuple(paths)))
            loaded = self._combine(blend, parts)
            self._adapters[key] = loaded
            self._evict(keep=(key,))
        self._adapters.move_to_end(key)
        return loaded

    def _combine(self, blend: Blend, parts: list[_LoadedAdapter]) -> _LoadedAdapter:
        for (ref, _weight), part in zip(blend.parts, parts):
            if part.uses_dora:
                # PEFT would inject a DoRA layer whose magnitudes belong to none of the parts.
                raise StudioError(f"adapter {ref!r} is a DoRA adapter, which cannot be combined: chat with it alone")
        name = f"adapter{next(self._names)}"
        try:
            self._peft.add_weighted_adapter([part.peft_name for part in parts],
                                            [float(weight) for _ref, weight in blend.parts],
                                            adapter_name=name, combination_type="cat")
        except (ValueError, TypeError) as exc:
            if name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            raise StudioError(f"cannot combine {blend.label}: {_first_line(exc)}") from None
        self._peft.eval()  # as in _load_adapter: the combination's modules start with dropout on
        template = next((part.chat_template for part in parts if part.chat_template), None)
        return _LoadedAdapter(peft_name=name, chat_template=template, uses_dora=False)

    def _evict(self, keep: tuple[Any, ...]) -> None:
        """Drop least recently used adapters beyond the cache's size; the active one stays."""
        for key in list(self._adapters):
            if len(self._adapters) <= self.max_cached_adapters:
                break
            loaded = self._adapters[key]
            if key in keep or loaded is self._active:
                continue
            del self._adapters[key]
            self._peft.delete_adapter(loaded.peft_name)
        if self._active is not None:
            # Deleting an adapter can move PEFT's own active adapter; put ours back.
            self._peft.set_adapter(self._active.peft_name)

    def _check_base_fingerprint(self, ref: str, meta: dict[str, Any]) -> None:
        recorded = meta.get("base_model_fingerprint")
        if recorded and recorded != self._base_fingerprint():
            made_for = meta.get("base_model") or "another base model"
            raise StudioError(
                f"adapter {ref!r} was trained on {made_for}, not on {self.model}: "
                "load that base model to chat with it"
            )

    def _base_fingerprint(self) -> str:
        if self._fingerprint is None:
            from engine.models.store import model_fingerprint

            self._fingerprint = model_fingerprint(self.model_path)
        return self._fingerprint

    def _discard_partial_adapter(self, name: str) -> None:
        """Undo what a failed load injected, so the session keeps working as before it."""
        if self._peft is None:
            _strip_adapter_layers(self._base)
            return
        if name in self._peft.peft_config:
            self._peft.delete_adapter(name)
        if self._active is not None:
            self._peft.set_adapter(self._active.peft_name)

    # prompting -------------------------------------------------------------------------------
    def render_prompt(self, messages: list[dict]) -> str:
        """The exact text the model is given for ``messages``, ending with the reply prompt."""
        _check_messages(messages)
        with self._lock:
            self.load()
            if self._active is not None and self._active.chat_template:
                template = self._active.chat_template
            else:
                template, _fallback = chat_template_for(self._tokenizer)
            return render_conversation(messages, self._tokenizer, add_generation_prompt=True, chat_template=template)

    def generate(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 0.9,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        on_token: Optional[Callable[[str], None]] = None,
        stop_event: Optional[threading.Event] = None,
    ) -> ChatReply:
        """The model's reply to ``messages``; temperature 0 is greedy (deterministic).

        ``on_token`` is called on the calling thread once per generated token with the
        text it completes ("" while a character is still incomplete); setting
        ``stop_event`` ends the reply after the current token. Sampling without a
        ``seed`` draws one, and the reply says which, so any reply can be had again.
        """
        _check_sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
        with self._lock:
            self.load()
            started = time.perf_counter()
            # The template writes its own special tokens (BOS included), as in training.
            encoded = self._tokenizer(self.render_prompt(messages), add_special_tokens=False, return_tensors="pt")
            prompt_tokens = encoded["input_ids"].shape[1]
            reply_tokens = self._room_for_reply(prompt_tokens, max_new_tokens)
            config = self._generation_config(reply_tokens, temperature, top_p, top_k, repetition_penalty)
            used_seed = None
            if temperature > 0:
                import torch

                used_seed = seed if seed is not None else secrets.randbelow(2**31)
                torch.manual_seed(used_seed)
            # Only these two: some tokenizers add token_type_ids, which decoder models reject.
            inputs = {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}
            reply = self._stream(inputs, prompt_tokens, config, started, on_token, stop_event)
            reply.seed = used_seed
            return reply

    def compare(
        self,
        messages: list[dict],
        choices: list[AdapterChoice],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 0.9,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: Optional[int] = None,
        on_token: Optional[Callable[[int, str], None]] = None,
        on_column: Optional[Callable[[int, ColumnResult], None]] = None,
        stop_event: Optional[threading.Event] = None,
    ) -> list[ColumnResult]:
        """Answer ``messages`` once per adapter choice, with the same settings and seed.

        Columns run in order on this one session, switching adapters between replies,
        so each column's reply is the one a chat with that adapter would give.
        ``on_token(column, piece)`` streams them. A column whose adapter cannot be used
        gets its error and the others go on; stopping ends the running column and skips
        the rest. The adapter active before is active again afterwards.
        """
        if not 1 <= len(choices) <= MAX_COMPARE_COLUMNS:
            raise StudioError(f"compare takes 1 to {MAX_COMPARE_COLUMNS} columns, got {len(choices)}")
        _check_messages(messages)
        _check_sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
        if temperature > 0 and seed is None:
            seed = secrets.randbelow(2**31)  # one seed for every column: a fair comparison
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, seed=seed)
        with self._lock:
            self.load()
            before = self._active_choice
            results: list[ColumnResult] = []
            try:
                for index, choice in enumerate(choices):
                    result = self._compare_column(index, choice, messages, settings, on_token, stop_event)
                    results.append(result)
                    if on_column is not None:
                        on_column(index, result)
            finally:
                self.set_adapter(before)
            return results

    def _compare_column(self, index: int, choice: AdapterChoice, messages: list[dict], settings: dict[str, Any],
                        on_token: Optional[Callable[[int, str], None]],
                        stop_event: Optional[threading.Event]) -> ColumnResult:
        if stop_event is not None and stop_event.is_set():
            return ColumnResult(choice, error="not run: the comparison was stopped")
        try:
            self.set_adapter(choice)
            stream = None if on_token is None else (lambda piece: on_token(index, piece))
            return ColumnResult(choice, reply=self.generate(messages, on_token=stream, stop_event=stop_event,
                                                            **settings))
        except StudioError as exc:
            return ColumnResult(choice, error=str(exc))

    def _room_for_reply(self, prompt_tokens: int, wanted: int) -> int:
        """``wanted``, cut to what fits in the model's context after the prompt."""
        context = getattr(self._base.config, "max_position_embeddings", None)
        if not context:
            return wanted
        if prompt_tokens >= context:
            raise StudioError(
                f"the conversation is {prompt_tokens} tokens; this model's context is {context} tokens: "
                "remove earlier turns or start a new chat"
            )
        return min(wanted, context - prompt_tokens)

    def _generation_config(
        self, max_new_tokens: int, temperature: float, top_p: float, top_k: int, repetition_penalty: float
    ) -> Any:
        from transformers import GenerationConfig

        defaults = self._base.generation_config
        # Stop at the model's end-of-sequence tokens and at the tokenizer's: chat templates
        # end a turn with the tokenizer's EOS, which base checkpoints often do not list.
        eos = _as_list(defaults.eos_token_id) + _as_list(self._tokenizer.eos_token_id)
        eos = list(dict.fromkeys(eos))
        pad = next(t for t in (defaults.pad_token_id, self._tokenizer.pad_token_id, *eos, 0) if t is not None)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
            if temperature > 0
            else {"do_sample": False}
        )
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            eos_token_id=eos or None,
            pad_token_id=pad,
            bos_token_id=defaults.bos_token_id,
            repetition_penalty=repetition_penalty,
            **sampling,
        )

    def _stream(
        self,
        inputs: dict[str, Any],
        prompt_tokens: int,
        config: Any,
        started: float,
        on_token: Optional[Callable[[str], None]],
        stop_event: Optional[threading.Event],
    ) -> ChatReply:
        from transformers import StoppingCriteriaList

        stream = _TokenStream()
        abandoned = threading.Event()  # the caller's on_token raised: stop generating for nobody
        stop = _StopWhenSet(stop_event, abandoned)
        outcome: dict[str, Any] = {}
        model = self._peft if self._peft is not None else self._base
        # PEFT applies the active adapter to every forward; the plain base needs it switched off.
        base_only = self._peft is not None and self._active is None
        adapters_off = self._peft.disable_adapter() if base_only else nullcontext()

        def run() -> None:
            try:
                with adapters_off:
                    outcome["ids"] = model.generate(
                        **inputs, generation_config=config, streamer=stream,
                        stopping_criteria=StoppingCriteriaList([stop]),
                    )
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                outcome["error"] = exc
                stream.end()  # unblock the reader, which would otherwise wait forever

        worker = threading.Thread(target=run, name="chat-generate", daemon=True)
        worker.start()
        text = _Detokenizer(self._tokenizer)
        turn_end = TurnEndFilter(self._literal_turn_end())
        pieces: list[str] = []

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
            raise _readable_generation_error(outcome["error"])
        tokens = int(outcome["ids"].shape[1] - prompt_tokens)
        first = stream.first_token_at or finished
        # The rate is decoding speed; prompt processing is what the time to first token measures.
        decoding = finished - first
        rate = (tokens - 1) / decoding if tokens > 1 and decoding > 0 else tokens / max(finished - started, 1e-9)
        return ChatReply(
            reply="".join(pieces),
            tokens=tokens,
            tokens_per_second=rate,
            time_to_first_token_s=first - started,
            stopped=stop.triggered and stop_event is not None and stop_event.is_set(),
        )

    def _literal_turn_end(self) -> Optional[str]:
        """ChatML's end-of-turn marker when this tokenizer spells it as plain text.

        The ChatML fallback used for base models without a template writes ``<|im_end|>``;
        their tokenizers know no such token, so it would reach the reply as text."""
        vocab = self._tokenizer.get_vocab()
        return None if _CHATML_TURN_END in vocab else _CHATML_TURN_END

    # teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the model and every adapter and give their memory back."""
        with self._lock:
            on_cuda = bool(self.device and self.device.startswith("cuda"))
            self._peft = self._base = self._tokenizer = None
            self._adapters.clear()
            self._active, self._active_choice = None, None
            self._fingerprint = None
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()


def _saved_chat_template(path: Path, meta: dict[str, Any]) -> Optional[str]:
    """The template an adapter was trained with: recorded in ``studio.json``, or, for a
    training checkpoint, in the tokenizer files the trainer saved beside it."""
    if isinstance(meta.get("chat_template"), str) and meta["chat_template"]:
        return meta["chat_template"]
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = tokenizer_config.get("chat_template") if isinstance(tokenizer_config, dict) else None
    return template if isinstance(template, str) and template else None


# devices and memory ---------------------------------------------------------------------------
def chat_threads() -> int:
    """Torch threads for chat in the studio process: one per physical core but one.

    Decoding one token at a time gains little from more threads (the starter model: 16.1
    tok/s on one thread and on two of a two-core machine), while OpenMP threads that wait
    by spinning collapse when another process wants the cores: with a training run or any
    other load beside it, two threads ran 4 times slower than one (4 against 17 tok/s).
    The core left over keeps the window and a training run beside the chat going.
    """
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 2
    return max(1, cores - 1)


@dataclass
class MemoryRoom:
    """Whether something fits in a device's free memory beside what already runs there."""

    device: str
    needed_bytes: int
    free_bytes: int
    what: str

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.free_bytes * (1 - MEMORY_MARGIN)

    def describe(self) -> str:
        from engine.core.units import human_bytes

        return (f"{self.what} needs about {human_bytes(self.needed_bytes)} on {self.device}, "
                f"which has {human_bytes(self.free_bytes)} free")


def chat_memory_bytes(model_path: str | Path, device: str) -> int:
    """What chatting with a model takes: its weights in the chat dtype, and the key/value
    cache of a ``CHAT_CONTEXT_TOKENS``-token conversation (read from config.json alone)."""
    from engine.models.spec import load_model_spec

    spec = load_model_spec(model_path)
    element = 2 if device.startswith("cuda") else 4  # see _dtype_for
    context = min(spec.max_position_embeddings or CHAT_CONTEXT_TOKENS, CHAT_CONTEXT_TOKENS)
    kv_cache = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * context * element
    return spec.total_params * element + kv_cache


def room_to_load(model_path: str | Path, device: str, free_bytes: Optional[int] = None) -> MemoryRoom:
    """Whether a chat model fits in ``device``'s free memory (measured unless given), beside
    whatever runs there already: a training run, another program."""
    free = _free_bytes(device) if free_bytes is None else free_bytes
    return MemoryRoom(device, chat_memory_bytes(model_path, device), free, f"chatting with {Path(model_path).name}")


def room_for_training(session: ChatSession, config: Any, free_bytes: Optional[int] = None) -> Optional[MemoryRoom]:
    """Whether the training run ``config`` (a RunConfig) fits beside ``session``'s loaded model.

    None when they do not share a device (or nothing is loaded). The run's need is the
    memory estimator's peak for it; the free memory is measured now, with the chat model
    in it, unless given.
    """
    from engine.hardware import best_device
    from engine.memory.estimate import estimate_memory
    from engine.models.spec import load_model_spec
    from engine.memory.planning import plan_for

    if not session.loaded or session.device is None:
        return None
    device = best_device().torch_device if config.device == "auto" else config.device
    if _same_device(device) != _same_device(session.device):
        return None
    kind = device.split(":")[0]
    plan = plan_for(config, kind, bf16=kind == "cuda" and _cuda_bf16())
    estimate = estimate_memory(load_model_spec(config.model), plan, kind)
    free = _free_bytes(session.device) if free_bytes is None else free_bytes
    return MemoryRoom(session.device, estimate.device_bytes, free, f"training {config.model}")


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def _same_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device  # torch reads a bare "cuda" as the first GPU


def _free_bytes(device: str) -> int:
    from engine.hardware import detect_devices

    for info in detect_devices():
        if info.torch_device == _same_device(device):
            return info.free_bytes
    raise StudioError(f"device {device!r} is not available here")


_CHATML_TURN_END = "<|im_end|>"


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


def _pick_device(requested: str) -> str:
    from engine.hardware import best_device, detect_devices

    if requested == "auto":
        return best_device().torch_device
    available = [device.torch_device for device in detect_devices()]
    if _same_device(requested) in available:
        return requested
    raise StudioError(f"device {requested!r} is not available here; choose auto or one of {', '.join(available)}")


def _dtype_for(device: str) -> Any:
    import torch

    # 16-bit halves memory and doubles speed on GPUs; CPUs are slow or inexact in 16-bit.
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# transcripts ----------------------------------------------------------------------------------
@dataclass
class ChatTranscript:
    """A conversation as saved: the messages (a system prompt first, if any), with what
    produced them. ``model`` and ``adapter`` are labels for people, not references."""

    messages: list[dict[str, str]]
    model: Optional[str] = None
    adapter: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for message in self.messages:
            if not (isinstance(message, dict) and message.get("role") in ROLES
                    and isinstance(message.get("content"), str)):
                raise StudioError(f"every message needs a role ({', '.join(ROLES)}) and a text content")
        unknown = sorted(set(self.settings) - set(SETTINGS))
        if unknown:
            raise StudioError(f"unknown generation setting(s): {', '.join(unknown)}")
        for name, value in self.settings.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise StudioError(f"generation setting {name} must be a number, got {value!r}")
        self.messages = [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def to_json(self) -> str:
        data = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "model": self.model,
                "adapter": self.adapter, "settings": self.settings, "messages": self.messages}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        """Readable as it is; the heading lines and the metadata comment make it loadable again."""
        title = f"# Chat with {self.model or 'a model'}" + (f" · adapter {self.adapter}" if self.adapter else "")
        meta = {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION, "model": self.model,
                "adapter": self.adapter, "settings": self.settings}
        parts = [title, "", f"<!-- {json.dumps(meta, ensure_ascii=False)} -->", ""]
        for message in self.messages:
            parts += [f"## {message['role'].capitalize()}", "", _escape_headings(message["content"]), ""]
        return "\n".join(parts) + "\n"


_HEADING = re.compile(r"^(\\*)## (System|User|Assistant)\s*$")


def _escape_headings(text: str) -> str:
    # A line of the message that reads like a role heading gets one more backslash, so
    # that reading the file back splits the messages where they were split.
    return "\n".join(f"\\{line}" if _HEADING.match(line) else line for line in text.split("\n"))


def save_transcript(path: str | Path, transcript: ChatTranscript) -> Path:
    """Write ``transcript`` as Markdown for a ``.md`` file, else JSON; atomically."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise StudioError(f"cannot save the chat: folder {path.parent} does not exist")
    markdown = path.suffix.lower() in (".md", ".markdown")
    try:
        write_text(path, transcript.to_markdown() if markdown else transcript.to_json())
    except OSError as exc:
        raise StudioError(f"cannot save the chat to {path}: {exc.strerror or exc}") from None
    return path


def load_transcript(path: str | Path) -> ChatTranscript:
    """Read a transcript saved by ``save_transcript`` (JSON or Markdown)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudioError(f"chat file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudioError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() in (".md", ".markdown"):
        return _parse_markdown(text, path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StudioError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
        raise StudioError(f"{path.name} is not a LoRA Studio chat (no \"format\": \"{TRANSCRIPT_FORMAT}\")")
    return _transcript_from(data, data.get("messages"), path)


def _transcript_from(meta: dict[str, Any], messages: Any, path: Path) -> ChatTranscript:
    if not isinstance(messages, list):
        raise StudioError(f"{path.name} has no list of messages")
    if meta.get("version", TRANSCRIPT_VERSION) > TRANSCRIPT_VERSION:
        raise StudioError(f"{path.name} was written by a newer LoRA Studio (chat format {meta['version']})")
    settings = meta.get("settings") or {}
    if not isinstance(settings, dict):
        raise StudioError(f"{path.name}: settings must be an object")
    labels = [meta.get(key) if isinstance(meta.get(key), str) else None for key in ("model", "adapter")]
    try:
        return ChatTranscript(messages=messages, model=labels[0], adapter=labels[1], settings=settings)
    except StudioError as exc:
        raise StudioError(f"{path.name}: {exc}") from None


def _parse_markdown(text: str, path: Path) -> ChatTranscript:
    lines = text.split("\n")
    headings = [(index, match) for index, line in enumerate(lines) if (match := _HEADING.match(line))
                and not match.group(1)]
    if not headings:
        raise StudioError(f"{path.name} has no '## User' or '## Assistant' headings: not a LoRA Studio chat")
    meta: dict[str, Any] = {}
    comment = re.search(r"<!--\s*(\{.*?\})\s*-->", "\n".join(lines[:headings[0][0]]), re.DOTALL)
    if comment:
        try:
            meta = json.loads(comment.group(1))
        except ValueError:
            raise StudioError(f"{path.name}: the metadata comment is not valid JSON") from None
    ends = [index for index, _match in headings[1:]] + [len(lines) - 1 if lines[-1] == "" else len(lines)]
    messages = []
    for (start, match), end in zip(headings, ends):
        body = lines[start + 1:end]
        if body and body[0] == "":
            body = body[1:]  # the blank line under the heading
        if body and body[-1] == "":
            body = body[:-1]  # the blank line before the next heading
        content = "\n".join(_unescape_heading(line) for line in body)
        messages.append({"role": match.group(2).lower(), "content": content})
    return _transcript_from(meta if isinstance(meta, dict) else {}, messages, path)


def _unescape_heading(line: str) -> str:
    match = _HEADING.match(line)
    return line[1:] if match and match.group(1) else line


# training checkpoints -------------------------------------------------------------------------
@dataclass
class CheckpointRecord:
    """A complete checkpoint of a training run: a PEFT folder that chat can load."""

    run: str
    step: int
    path: str
    model: str  # the run's base model reference

    @property
    def label(self) -> str:
        return f"{self.run} · step {self.step}"


def list_checkpoints(model: Optional[str] = None) -> list[CheckpointRecord]:
    """Complete checkpoints of every run (of runs on ``model`` when given), newest first.

    Reads JSON and file headers only; a checkpoint that is not complete
    (``engine.run.checkpoints``) is not listed.
    """
    from engine.paths import runs_dir

    found = []
    for run in runs_dir().iterdir():
        try:
            config = json.loads(RunDir(run).config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        run_model = config.get("model") if isinstance(config, dict) else None
        if not isinstance(run_model, str) or (model is not None and run_model != model):
            continue
        for folder in complete_checkpoints(run):
            if (folder / PEFT_CONFIG).is_file():  # an adapter's, not a full fine-tune's
                found.append((folder.stat().st_mtime,
                              CheckpointRecord(run.name, checkpoint_step(folder), str(folder), run_model)))
    return [record for _mtime, record in sorted(found, key=lambda item: (item[0], item[1].step), reverse=True)]


# checks and messages --------------------------------------------------------------------------
def _strip_adapter_layers(model: Any) -> None:
    """Put back the original layers that a failed ``PeftModel.from_pretrained`` wrapped."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _explain_adapter_failure(ref: str, model: str, exc: Exception) -> str:
    text = _first_line(exc)
    if "size mismatch" in str(exc):
        return f"adapter {ref!r} was made for a different base model: its weight shapes do not match {model}"
    if "not found in the base model" in text or "Target module" in text:
        return f"adapter {ref!r} was made for a different base model: {model} has no modules it targets"
    return f"adapter {ref!r} could not be loaded: {text}"


def _readable_generation_error(exc: BaseException) -> BaseException:
    if "out of memory" in str(exc).lower():
        return StudioError("out of memory while generating: lower the max new tokens or shorten the conversation")
    return exc


def _check_messages(messages: list[dict]) -> None:
    if not messages:
        raise StudioError("nothing to answer: the conversation is empty")
    for message in messages:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise StudioError("every message needs a text 'role' and 'content'")
    if not any(message["content"].strip() for message in messages if message["role"] != "system"):
        raise StudioError("nothing to answer: every message in the conversation is empty")


def _check_sampling(
    max_new_tokens: int, temperature: float, top_p: float, top_k: int, repetition_penalty: float
) -> None:
    if max_new_tokens < 1:
        raise StudioError(f"max new tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise StudioError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if not 0 < top_p <= 1:
        raise StudioError(f"top-p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise StudioError(f"top-k must be 0 (off) or more, got {top_k}")
    if repetition_penalty <= 0:
        raise StudioError(f"repetition penalty must be positive, got {repetition_penalty}")


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
