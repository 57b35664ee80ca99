"""Chat with a base model and its adapters: one loaded base, adapters swapped in place.

The base is loaded once. Each adapter is loaded into one ``PeftModel`` over that base
on first use and kept in a small cache (least recently used out first), so switching
between adapters, to a combination of adapters (``engine.chat.blends``), or back to the
plain base is a pointer change that never reloads the base. Replies stream
(``engine.chat.streaming``).

Prompts are rendered through ``engine.data.rendering.render_conversation`` with the chat
template saved with the adapter (or its training checkpoint), the same function and
template training used: a template that differs between training and chat is the
classic silent quality bug.

Compare (``engine.chat.compare``) puts one prompt to several adapters on this one session.
Whether a model fits before it is loaded is ``engine.chat.room``'s to say.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.adapters.base_model import load_peft
from engine.adapters.library import read_adapter_meta, read_peft_config, resolve_adapter
from engine.chat.blends import AdapterChoice, Blend, ColumnChoice, GgufFile
from engine.chat.compare import ColumnResult, check_columns, run_column
from engine.chat.devices import dtype_for, pick_device
from engine.chat.failures import explain_adapter_failure
from engine.chat.loaded_adapters import LoadedAdapter, saved_chat_template, strip_adapter_layers
from engine.chat.room import MemoryRoom, room_to_load
from engine.chat.mixed_rows import RowMix
from engine.chat.rows import RowRequest, RowResult, RowSampler, RowTracker
from engine.chat.sampling import check_sampling, generation_config
from engine.chat.batches import BatchReply, default_batch_size, left_padded, length_batches, reply_from_ids
from engine.chat.failures import readable_generation_error
from engine.chat.streaming import ChatReply, stop_when_set, stream_reply
from engine.data.rendering import chat_template_for, render_conversation
from engine.core import garbage
from engine.core.checks import whole
from engine.errors import StudioError, first_line
from engine.models.weights import model_options
from engine.models.tokenizer import load_tokenizer

MAX_CACHED_ADAPTERS = 4


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
        self._adapters: "OrderedDict[Any, LoadedAdapter]" = OrderedDict()
        self._active: Optional[LoadedAdapter] = None
        self._active_choice: AdapterChoice = None
        self._names = itertools.count()
        self._fingerprint: Optional[str] = None  # of the loaded base, computed when first needed
        self._mix: Optional[RowMix] = None  # the loaded LoRA adapters as one, for batches that mix them

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
            device = pick_device(self.requested_device)
            path = resolve_model(self.model)
            check_loadable(path)
            try:
                room: Optional[MemoryRoom] = room_to_load(path, device)
            except StudioError:
                room = None  # a config the size cannot be read from: loading says what is wrong with it
            if room is not None and not room.fits:
                raise StudioError(f"not enough free memory to load {self.model}: {room.describe()}")
            try:
                tokenizer = load_tokenizer(path)
                base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_for(device), **model_options(path))
            except (OSError, ValueError) as exc:
                raise StudioError(f"cannot load model {self.model!r} from {path}: {first_line(exc)}") from None
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

    def _adapter(self, ref: str, path: Path, keep: tuple[Any, ...]) -> LoadedAdapter:
        """The loaded adapter for ``path``, read from disk when it is not in the cache."""
        loaded = self._adapters.get(path)
        if loaded is None:
            loaded = self._load_adapter(ref, path)
            self._adapters[path] = loaded
            self._evict(keep=(path, *keep))
        self._adapters.move_to_end(path)
        return loaded

    def _load_adapter(self, ref: str, path: Path) -> LoadedAdapter:
        meta = read_adapter_meta(path)
        self._check_base_fingerprint(ref, meta)
        name = f"adapter{next(self._names)}"
        try:
            self._peft = load_peft(self._base, path, name, self._peft)
        except StudioError:
            self._discard_partial_adapter(name)
            raise
        except Exception as exc:  # any failure reading a user's adapter is theirs to act on
            self._discard_partial_adapter(name)
            raise StudioError(explain_adapter_failure(ref, self.model, exc)) from None
        self._peft.eval()  # new adapter modules start in training mode, with their dropout on
        config = read_peft_config(path)
        uses_dora = bool(config.get("use_dora"))
        # What a batch of rows for several adapters can combine exactly (engine.chat.mixed_rows).
        mixes = (config.get("peft_type") == "LORA" and not uses_dora and config.get("bias", "none") == "none"
                 and not config.get("modules_to_save"))
        return LoadedAdapter(peft_name=name, chat_template=saved_chat_template(path, meta), uses_dora=uses_dora,
                             template_of=f"adapter {ref!r}", mixes=mixes)

    def _blend(self, blend: Blend) -> LoadedAdapter:
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

    def _combine(self, blend: Blend, parts: list[LoadedAdapter]) -> LoadedAdapter:
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
            raise StudioError(f"cannot combine {blend.label}: {first_line(exc)}") from None
        self._peft.eval()  # as in _load_adapter: the combination's modules start with dropout on
        first = next((part for part in parts if part.chat_template), None)
        return LoadedAdapter(peft_name=name, chat_template=first.chat_template if first else None, uses_dora=False,
                             template_of=first.template_of if first else "the adapter")

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
            strip_adapter_layers(self._base)
            return
        if name in self._peft.peft_config:
            self._peft.delete_adapter(name)
        if self._active is not None:
            self._peft.set_adapter(self._active.peft_name)

    # prompting -------------------------------------------------------------------------------
    def chat_template(self) -> tuple[str, Optional[str]]:
        """The chat template the active choice answers with, and whose it is (None: the model's own):
        the adapter's saved template, else the tokenizer's (or the ChatML fallback)."""
        with self._lock:
            self.load()
            return self._template_of(self._active)

    def _template_of(self, loaded: Optional[LoadedAdapter]) -> tuple[str, Optional[str]]:
        """The template ``loaded`` (None: the base) answers with: its saved one, else the model's."""
        if loaded is not None and loaded.chat_template:
            return loaded.chat_template, loaded.template_of
        return chat_template_for(self._tokenizer)[0], None

    def render_prompt(self, messages: list[dict]) -> str:
        """The exact text the model is given for ``messages``, ending with the reply prompt."""
        check_messages(messages)
        with self._lock:
            template, owner = self.chat_template()
            return render_conversation(messages, self._tokenizer, add_generation_prompt=True, chat_template=template,
                                       template_of=owner)

    def template_for(self, adapter: Optional[str]) -> tuple[str, Optional[str]]:
        """The chat template ``adapter`` (None: the base) answers with, and whose it is, as
        ``chat_template`` says for the active choice, without making it active: a server's rows
        each have their own. Loads the adapter when it is not loaded yet."""
        with self._lock:
            self.load()
            return self._template_of(None if adapter is None else
                                     self._adapter(adapter, resolve_adapter(adapter), keep=()))

    @property
    def vocabulary(self) -> int:
        """How many token ids the loaded model scores (its output layer's width)."""
        return int(self._base.get_output_embeddings().weight.shape[0])

    @property
    def context_tokens(self) -> Optional[int]:
        """The model's context length in tokens (None when its config does not say)."""
        return getattr(self._base.config, "max_position_embeddings", None) if self._base is not None else None

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
        check_sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        with self._lock:
            self.load()
            started = time.perf_counter()
            # The template writes its own special tokens (BOS included), as in training.
            encoded = self._tokenizer(self.render_prompt(messages), add_special_tokens=False, return_tensors="pt")
            prompt_tokens = encoded["input_ids"].shape[1]
            reply_tokens = self._room_for_reply(prompt_tokens, max_new_tokens)
            config = generation_config(self._base.generation_config, self._tokenizer, reply_tokens, temperature, top_p,
                                       top_k, repetition_penalty)
            used_seed = None
            if temperature > 0:
                import torch

                used_seed = seed if seed is not None else secrets.randbelow(2**31)
                torch.manual_seed(used_seed)
            # Only these two: some tokenizers add token_type_ids, which decoder models reject.
            inputs = {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}
            reply = stream_reply(self._model_to_run(), self._tokenizer, inputs, prompt_tokens, config, started,
                                 on_token, stop_event, adapters_off=self._adapters_off())
            reply.seed = used_seed
            return reply

    def generate_batch(
        self,
        conversations: list[list[dict]],
        *,
        max_new_tokens: int = 256,
        batch_size: Optional[int] = None,
        stop_event: Optional[threading.Event] = None,
        on_done: Optional[Callable[[int], None]] = None,
    ) -> list[BatchReply]:
        """The active choice's greedy replies to many conversations, in their order.

        Prompts of similar length are batched together, left padded, and decoded with the KV
        cache, so one forward pass moves every reply in the batch by one token: on the starter
        model this is several times the examples per second of one ``generate`` per prompt,
        with the same replies (``bench/eval_speed.py`` measures both). ``on_done(n)`` is called
        after each batch with how many replies are done; once ``stop_event`` is set, the batch
        in progress ends after its current token and the rest are not started: their replies
        are None. ``batch_size`` None is the device's (``engine.chat.batches.default_batch_size``).
        """
        check_sampling(max_new_tokens, 0.0, 1.0, 0, 1.0)
        if batch_size is not None:
            whole("batch size", batch_size, 1, 4096)
        with self._lock:
            self.load()
            prompts = [self._tokenizer(self.render_prompt(messages), add_special_tokens=False)["input_ids"]
                       for messages in conversations]
            if batch_size is None:
                longest = max((len(ids) for ids in prompts), default=0)
                batch_size = default_batch_size(self.device, self._kv_bytes_per_token(), longest + max_new_tokens)
            replies: list[Optional[BatchReply]] = [None] * len(prompts)
            done = 0
            for batch in length_batches([len(ids) for ids in prompts], batch_size):
                if stop_event is not None and stop_event.is_set():
                    break
                for index, reply in zip(batch, self._greedy_batch([prompts[i] for i in batch], max_new_tokens,
                                                                  stop_event)):
                    replies[index] = reply
                done += len(batch)
                if on_done is not None:
                    on_done(done)
            return replies

    def _greedy_batch(self, prompts: list[list[int]], max_new_tokens: int,
                      stop_event: Optional[threading.Event]) -> list[BatchReply]:
        import torch
        from transformers import StoppingCriteriaList

        width = max(len(ids) for ids in prompts)
        reply_tokens = self._room_for_reply(width, max_new_tokens)
        config = generation_config(self._base.generation_config, self._tokenizer, reply_tokens, 0.0, 1.0, 0, 1.0)
        # Left padding: every prompt ends where its reply starts, so one new column per step serves all.
        input_ids, attention_mask = left_padded(prompts, config.pad_token_id)
        stop = StoppingCriteriaList([stop_when_set(stop_event)])
        try:
            with self._adapters_off(), torch.inference_mode():
                output = self._model_to_run().generate(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    generation_config=config, stopping_criteria=stop)
        except Exception as exc:
            raise readable_generation_error(exc) from None
        ends = set(config.eos_token_id or [])
        return [reply_from_ids(self._tokenizer, row[width:].tolist(), ends) for row in output.cpu()]

    def _kv_bytes_per_token(self) -> int:
        """The key/value cache one token of one row takes (0 when the config does not say)."""
        from engine.models.spec import load_model_spec

        try:
            spec = load_model_spec(self.model_path)
        except StudioError:
            return 0
        return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * self._base.dtype.itemsize

    @contextmanager
    def forward_context(self) -> Iterator[Any]:
        """The module that answers as the active choice, for a forward pass of the caller's own
        (held-out loss, a forgetting check's next-token distributions): the adapters are switched
        off for the base, and the session's lock is held throughout, so no switch happens under it."""
        with self._lock:
            self.load()
            with self._adapters_off():
                yield self._model_to_run()

    def compare(
        self,
        messages: list[dict],
        choices: list[ColumnChoice],
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
        open_file: Optional[Callable[[GgufFile], Any]] = None,
    ) -> list[ColumnResult]:
        """Answer ``messages`` once per adapter choice, with the same settings and seed.

        Columns run in order on this one session, switching adapters between replies,
        so each column's reply is the one a chat with that adapter would give.
        ``on_token(column, piece)`` streams them. A column whose adapter cannot be used
        gets its error and the others go on; stopping ends the running column and skips
        the rest. The adapter active before is active again afterwards. A ``GgufFile`` column is
        answered by the session ``open_file`` gives for it (``engine.chat.gguf_session.GgufFiles``).
        """
        check_columns(choices)
        check_messages(messages)
        check_sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
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
                    result = run_column(self, index, choice, messages, settings, on_token, stop_event, open_file)
                    results.append(result)
                    if on_column is not None:
                        on_column(index, result)
            finally:
                self.set_adapter(before)
            return results

    def shares_batches(self, adapters: set[Optional[str]]) -> bool:
        """Whether replies for all of ``adapters`` (None: the base) can be generated in one batch:
        one choice always can; several only when each is the base or a plain LoRA adapter."""
        if len(adapters) <= 1:
            return True
        with self._lock:
            self.load()
            return all(adapter is None or self._adapter(adapter, resolve_adapter(adapter), keep=()).mixes
                       for adapter in adapters)

    def generate_rows(self, rows: list[RowRequest], adapters: list[Optional[str]],
                      on_tokens: Callable[[int, list[int]], None],
                      on_finished: Optional[Callable[[int, RowResult], None]] = None) -> list[RowResult]:
        """Replies to many prompts in one batch, row ``i`` answered by ``adapters[i]`` (None: the base)
        with its own sampling settings; ``on_tokens(i, ids)`` gets each row's new token ids as they
        come (on this thread). A row ends at its end-of-sequence token or its ``max_new_tokens``
        (``on_finished(i, result)`` is called then, while longer rows go on), or when its ``cancel``
        event is set; the batch ends when every row has.

        Rows for different adapters share the batch through the loaded adapters' masked combination
        (``engine.chat.mixed_rows``; ``shares_batches`` says when they can); each row's reply is the
        one it would get alone, sampled rows included (``engine.chat.rows``).
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        for row in rows:
            row.check()
        with self._lock:
            self.load()
            if not self.shares_batches(set(adapters)):
                raise StudioError("these adapters cannot answer in one batch: DoRA and prompt-learning adapters "
                                  "answer in batches of their own")
            width = max(len(row.prompt_ids) for row in rows)
            limits = [self._room_for_reply(len(row.prompt_ids), row.max_new_tokens) for row in rows]
            config = generation_config(self._base.generation_config, self._tokenizer, max(limits), 0.0, 1.0, 0, 1.0)
            for row in rows:
                if row.temperature > 0 and row.seed is None:
                    row.seed = secrets.randbelow(2**31)
            input_ids, attention_mask = left_padded([row.prompt_ids for row in rows], config.pad_token_id)
            tracker = RowTracker(rows, width, limits, set(config.eos_token_id or []), on_tokens, on_finished)
            sampler = RowSampler(rows, [width - len(row.prompt_ids) for row in rows], self.device)
            try:
                with self._batch_adapters(adapters), torch.inference_mode():
                    self._model_to_run().generate(
                        input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                        generation_config=config, logits_processor=LogitsProcessorList([sampler]),
                        stopping_criteria=StoppingCriteriaList([tracker]), streamer=tracker)
            except Exception as exc:
                raise readable_generation_error(exc) from None
            return tracker.results()

    def _batch_adapters(self, adapters: list[Optional[str]]) -> Any:
        """The context ``generate`` runs in to answer each row with its adapter: the adapter made
        active when all rows share one, else the masked combination of the loaded adapters."""
        distinct = set(adapters)
        if len(distinct) == 1:
            self.set_adapter(adapters[0])
            return self._adapters_off()
        paths = {adapter: resolve_adapter(adapter) for adapter in distinct if adapter is not None}
        names = {adapter: self._adapter(adapter, path, keep=tuple(paths.values())).peft_name
                 for adapter, path in paths.items()}
        names[None] = None  # a row the adapters leave alone
        return self._row_mix().rows([names[adapter] for adapter in adapters], self.device)

    def _row_mix(self) -> RowMix:
        """The combination of every loaded plain LoRA adapter that a batch's rows share
        (``engine.chat.mixed_rows``), made again when the loaded adapters have changed."""
        parts = tuple(loaded.peft_name for loaded in self._adapters.values() if loaded.mixes)
        if self._mix is None or self._mix.parts != parts:
            if self._mix is not None:
                self._mix.close()
            self._mix = RowMix(self._peft, parts)
        return self._mix

    def _room_for_reply(self, prompt_tokens: int, wanted: int) -> int:
        return room_for_reply(prompt_tokens, wanted, self.context_tokens)

    def _model_to_run(self) -> Any:
        """The PeftModel once an adapter was loaded (the base answers through it), else the base."""
        return self._peft if self._peft is not None else self._base

    def _adapters_off(self) -> Any:
        """What generation runs inside: the adapters switched off while the base model is chosen."""
        # PEFT applies the active adapter to every forward; the plain base needs it switched off.
        base_only = self._peft is not None and self._active is None
        return self._peft.disable_adapter() if base_only else nullcontext()

    # teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the model and every adapter and give their memory back."""
        with self._lock:
            on_cuda = bool(self.device and self.device.startswith("cuda"))
            self._peft = self._base = self._tokenizer = self._mix = None
            self._adapters.clear()
            self._active, self._active_choice = None, None
            self._fingerprint = None
            garbage.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()


def check_messages(messages: list[dict]) -> None:
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


def room_for_reply(prompt_tokens: int, wanted: int, context: Optional[int]) -> int:
    """``wanted`` reply tokens, cut to what fits in a ``context`` of that many tokens (None: no
    limit known) after the prompt."""
    if not context:
        return wanted
    if prompt_tokens >= context:
        raise StudioError(
            f"the conversation is {prompt_tokens} tokens; this model's context is {context} tokens: "
            "remove earlier turns or start a new chat"
        )
    return min(wanted, context - prompt_tokens)
