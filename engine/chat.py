"""Chat with a base model and its adapters: one loaded base, adapters swapped in place.

The base is loaded once. Each adapter is loaded into one ``PeftModel`` over that base
on first use and kept, so switching between adapters (or back to the plain base) is
instant and never reloads the base. Replies stream: ``generate`` runs on a worker
thread and the caller's thread reads a ``TextIteratorStreamer``, so the caller sees
text as it comes and can stop it at any token.

Prompts are rendered through ``engine.data.render_conversation`` with the chat
template saved with the adapter, the same function and template training used: a
template that differs between training and chat is the classic silent quality bug.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.data import render_conversation
from engine.errors import StudioError
from engine.library import read_adapter_meta, resolve_adapter

# For models that ship without a chat template (base, non-instruct checkpoints).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class ChatReply:
    reply: str
    tokens: int  # new tokens generated
    tokens_per_second: float
    time_to_first_token_s: float
    stopped: bool  # True when the caller's stop_event ended it early

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _LoadedAdapter:
    peft_name: str  # its key inside the PeftModel (module keys cannot hold a path's dots)
    path: Path
    chat_template: Optional[str]


class _StopWhenSet:
    """A stopping criterion: ends generation after the current token once an event is set.

    ``generate`` calls it after every new token, so it also clocks the first token.
    A plain callable is all ``StoppingCriteriaList`` needs; not subclassing
    ``StoppingCriteria`` keeps transformers out of this module's import.
    """

    def __init__(self, *events: Optional[threading.Event]) -> None:
        self.events = [event for event in events if event is not None]
        self.first_token_at: Optional[float] = None
        self.triggered = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.triggered = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), self.triggered, dtype=torch.bool, device=input_ids.device)


class ChatSession:
    """One base model in memory, any number of its adapters, one conversation turn at a time.

    Calls are serialised by a lock: switching adapters while a reply is being generated
    waits for that reply instead of changing the weights under it.
    """

    def __init__(self, model: str, *, device: str = "auto", threads: Optional[int] = None) -> None:
        self.model = model
        self.requested_device = device
        self.threads = threads
        self.device: Optional[str] = None
        self.model_path: Optional[Path] = None
        self._lock = threading.RLock()
        self._tokenizer: Any = None
        self._base: Any = None  # the transformers model; PEFT wraps it and never replaces it
        self._peft: Any = None  # the PeftModel over _base, once an adapter has been loaded
        self._adapters: dict[Path, _LoadedAdapter] = {}
        self._active: Optional[_LoadedAdapter] = None
        self._active_ref: Optional[str] = None
        self._names = itertools.count()
        self._fingerprint: Optional[str] = None  # of the loaded base, computed when first needed

    # loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Resolve the model and load its tokenizer and weights; does nothing once loaded."""
        with self._lock:
            if self._base is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from engine.models import resolve_model

            if self.threads:
                torch.set_num_threads(self.threads)
            device = _pick_device(self.requested_device)
            path = resolve_model(self.model)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                base = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype_for(device))
            except (OSError, ValueError) as exc:
                raise StudioError(f"cannot load model {self.model!r} from {path}: {_first_line(exc)}") from None
            self._tokenizer, self._base = tokenizer, base.to(device).eval()
            self.device, self.model_path = device, path

    @property
    def base_model(self) -> Any:
        """The loaded transformers model (None before ``load``); adapters live inside it."""
        return self._base

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (None before ``load``), for counting a draft's tokens."""
        return self._tokenizer

    @property
    def adapter(self) -> Optional[str]:
        """The active adapter as it was given to ``set_adapter``; None for the base model."""
        return self._active_ref

    def set_adapter(self, adapter: Optional[str]) -> None:
        """Make ``adapter`` (a library name or a PEFT folder) active; None chats with the base."""
        with self._lock:
            self.load()
            if adapter is None:
                self._active, self._active_ref = None, None
                return
            path = resolve_adapter(adapter)
            loaded = self._adapters.get(path) or self._load_adapter(str(adapter), path)
            self._peft.set_adapter(loaded.peft_name)
            self._active, self._active_ref = loaded, str(adapter)

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
        loaded = _LoadedAdapter(peft_name=name, path=path, chat_template=meta.get("chat_template"))
        self._adapters[path] = loaded
        return loaded

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
            from engine.models import model_fingerprint

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
                template: Optional[str] = self._active.chat_template
            elif getattr(self._tokenizer, "chat_template", None):
                template = None  # the tokenizer's own
            else:
                template = CHATML_TEMPLATE
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

        ``on_token`` receives each piece of text, on the calling thread, as it is
        generated; setting ``stop_event`` ends the reply after the current token.
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
            if seed is not None:
                import torch

                torch.manual_seed(seed)
            # Only these two: some tokenizers add token_type_ids, which decoder models reject.
            inputs = {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}
            return self._stream(inputs, prompt_tokens, config, started, on_token, stop_event)

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
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
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
                        **inputs, generation_config=config, streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([stop]),
                    )
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                outcome["error"] = exc
                streamer.end()  # unblock the reader, which would otherwise wait forever

        worker = threading.Thread(target=run, name="chat-generate", daemon=True)
        worker.start()
        pieces: list[str] = []
        try:
            for piece in streamer:
                if not piece:
                    continue  # the streamer emits "" while it waits for a word to complete
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
        finally:
            abandoned.set()  # a no-op after a normal finish: generation is already over
            worker.join()
        finished = time.perf_counter()
        if "error" in outcome:
            raise _readable_generation_error(outcome["error"])
        tokens = int(outcome["ids"].shape[1] - prompt_tokens)
        first = stop.first_token_at or finished
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

    # teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the model and every adapter and give their memory back."""
        with self._lock:
            on_cuda = bool(self.device and self.device.startswith("cuda"))
            self._peft = self._base = self._tokenizer = None
            self._adapters.clear()
            self._active, self._active_ref = None, None
            self._fingerprint = None
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()


def _pick_device(requested: str) -> str:
    from engine.hardware import best_device, detect_devices

    if requested == "auto":
        return best_device().torch_device
    available = [device.torch_device for device in detect_devices()]
    # torch reads a bare "cuda" as the first GPU.
    if requested in available or (requested == "cuda" and "cuda:0" in available):
        return requested
    raise StudioError(f"device {requested!r} is not available here; choose auto or one of {', '.join(available)}")


def _dtype_for(device: str) -> Any:
    import torch

    # 16-bit halves memory and doubles speed on GPUs; CPUs are slow or inexact in 16-bit.
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


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
    if not any(message["content"].strip() for message in messages):
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
