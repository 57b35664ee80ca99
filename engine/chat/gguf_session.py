"""Chat with a GGUF file through llama.cpp, the program that will run it once it is shipped.

A ``GgufSession`` answers like a ``ChatSession`` (``generate`` with the same settings, streaming,
stop, a ``ChatReply``), so the Chat page and a comparison put an exported file beside the
adapter it came from. What llama.cpp users get is what it shows:

- the prompt is rendered with the chat template stored in the file (``tokenizer.chat_template``,
  what llama-cpp-python's ``create_chat_completion`` and llama.cpp's server use), through the
  studio's bounded renderer (``engine.data.templates``: a file's template is code from whoever
  made the file), and tokenised by llama.cpp's own tokenizer with its special tokens;
- the reply is sampled by llama.cpp's samplers, in the order transformers applies the same
  settings (repetition penalty over prompt and reply, temperature, top-k, top-p), so
  temperature 0 is greedy and gives the token the Hugging Face model gives when the file is
  faithful; a reply ends at any of the file's end-of-generation tokens.

``GgufFiles`` keeps the files a page has open, one session each.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from engine.chat.blends import GgufFile
from engine.core.sampling_checks import check_sampling
from engine.chat.session import check_messages, room_for_reply
from engine.chat.streaming import ChatReply, Detokenizer, TurnEndFilter, literal_turn_end, timed_reply
from engine.data.rendering import CHATML_TEMPLATE
from engine.data.templates import render_template
from engine.errors import StudioError, first_line

# llama.cpp allocates the key/value cache for the whole context when the file is loaded: 4096
# tokens is a long chat, and costs an 8B model about 1 GB in f32 (a model trained on less gets less).
CONTEXT_TOKENS = 4096


def _llama_cpp() -> Any:
    """The llama_cpp module, once ``engine.gguf.runtime`` says the pinned llama.cpp is here (else
    its one line why not)."""
    from engine.gguf.runtime import require

    require()
    import llama_cpp

    return llama_cpp


class _FileTokens:
    """The file's tokenizer as the streaming helpers read one (``decode``, ``get_vocab``):
    llama.cpp's detokenizer, special tokens left out as transformers' ``skip_special_tokens`` does."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._llama.detokenize(ids, special=not skip_special_tokens).decode("utf-8", errors="replace")

    def get_vocab(self) -> "_Vocabulary":
        return _Vocabulary(self._llama)


class _Vocabulary:
    """``text in vocabulary``: whether the file has ``text`` as one token (for a literal turn end),
    without listing the vocabulary."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def __contains__(self, text: str) -> bool:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)) == 1


class GgufSession:
    """One GGUF file loaded in llama.cpp, one reply at a time (calls are serialised by a lock)."""

    def __init__(self, path: str | Path, *, threads: Optional[int] = None) -> None:
        self.path = Path(path).expanduser()
        self.threads = threads
        self._lock = threading.RLock()
        self._lib: Any = None  # the llama_cpp module, once loaded
        self._llama: Any = None
        self._template: Optional[str] = None

    @property
    def label(self) -> str:
        return GgufFile(str(self.path)).label

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> None:
        """Load the file in llama.cpp; does nothing once loaded."""
        with self._lock:
            if self._llama is not None:
                return
            llama_cpp = self._lib = _llama_cpp()
            if not self.path.is_file():
                raise StudioError(f"no GGUF file at {self.path}")
            try:
                # n_gpu_layers -1: every layer on the GPU when llama.cpp was built with one. The
                # key/value cache in f32, not llama.cpp's default f16: the reply is then the file's
                # own, which is what a comparison with the adapter asks. An f16 cache rounds keys and
                # values by about 2e-3, enough to flip tokens whose scores are closer (the tiny test
                # model's are 1e-3 apart); it costs twice the cache's memory (1 GB for an 8B model).
                llama = llama_cpp.Llama(model_path=str(self.path), n_ctx=CONTEXT_TOKENS, n_threads=self.threads,
                                        n_gpu_layers=-1, type_k=llama_cpp.GGML_TYPE_F32,
                                        type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise StudioError(f"llama.cpp cannot load {self.path.name}: {first_line(exc)}") from None
            self._llama = llama
            self._template = llama.metadata.get("tokenizer.chat_template") or None

    @property
    def context_tokens(self) -> int:
        """How many tokens a conversation and its reply may take together."""
        return min(self._llama.n_ctx(), self._lib.llama_model_n_ctx_train(self._llama.model))

    def chat_template(self) -> tuple[str, Optional[str]]:
        """The template the file answers with, and whose it is: the file's own, else ChatML (as a
        model without one gets in ``engine.data.rendering.chat_template_for``)."""
        with self._lock:
            self.load()
            return (self._template, f"file {self.path.name!r}") if self._template else (CHATML_TEMPLATE, None)

    def render_prompt(self, messages: list[dict]) -> str:
        """The exact text llama.cpp is given for ``messages``, ending with the reply prompt."""
        check_messages(messages)
        with self._lock:
            template, owner = self.chat_template()
            context = {**self._special_tokens(), "messages": messages, "tools": None, "documents": None,
                       "add_generation_prompt": True}
            return render_template(template, owner or f"file {self.path.name!r}", context)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The prompt's tokens as llama.cpp reads them: the template writes its own special tokens
        (BOS included), so none is added."""
        with self._lock:
            text = self.render_prompt(messages)
            return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _special_tokens(self) -> dict[str, str]:
        """The special tokens a template may write, by the names transformers gives them."""
        llama_cpp = self._lib
        vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        ids = {"bos_token": self._llama.token_bos(), "eos_token": self._llama.token_eos()}
        return {name: llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8")
                for name, token in ids.items() if token >= 0}

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
        """The file's reply to ``messages``, as ``ChatSession.generate`` gives the model's: temperature
        0 is greedy, ``on_token`` gets each token's text on this thread, ``stop_event`` ends the
        reply after the current token, and a sampled reply says its seed."""
        check_sampling(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        with self._lock:
            self.load()
            started = time.perf_counter()
            prompt = self.prompt_ids(messages)
            limit = room_for_reply(len(prompt), max_new_tokens, self.context_tokens)
            used_seed = (seed if seed is not None else secrets.randbelow(2**31)) if temperature > 0 else None
            tokens = _FileTokens(self._llama)
            text, turn_end = Detokenizer(tokens), TurnEndFilter(literal_turn_end(tokens))
            pieces: list[str] = []

            def deliver(piece: str) -> None:
                if piece:
                    pieces.append(piece)
                    if on_token is not None:
                        on_token(piece)

            count, first_at, stopped = 0, None, False
            sampler = self._sampler(prompt, temperature, top_p, top_k, repetition_penalty, used_seed)
            llama_cpp = self._lib
            vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
            try:
                self._llama.reset()
                self._llama.eval(prompt)
                while count < limit:
                    token = llama_cpp.llama_sampler_sample(sampler, self._llama.ctx, -1)
                    count += 1
                    first_at = first_at or time.perf_counter()
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        break
                    deliver(turn_end.push(text.push([token])))
                    if stop_event is not None and stop_event.is_set():
                        stopped = True
                        break
                    if count < limit:
                        self._llama.eval([token])
            finally:
                llama_cpp.llama_sampler_free(sampler)
            deliver(turn_end.push(text.flush()))
            deliver(turn_end.flush())
            return timed_reply("".join(pieces), count, started, first_at, time.perf_counter(), stopped=stopped,
                               seed=used_seed)

    def _sampler(self, prompt: list[int], temperature: float, top_p: float, top_k: int, repetition_penalty: float,
                 seed: Optional[int]) -> Any:
        """llama.cpp's sampler chain for the page's settings, in transformers' order."""
        llama_cpp = self._lib
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if repetition_penalty != 1.0:
            # Over the whole context, the prompt included, as transformers penalises every token in
            # the input; the prompt is counted by accepting its tokens below.
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_penalties(
                self._llama.n_vocab(), self._llama.n_ctx(), repetition_penalty, 0.0, 0.0))
        if temperature > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(top_k))  # 0 is off
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        if repetition_penalty != 1.0:
            for token in prompt:
                llama_cpp.llama_sampler_accept(chain, token)
        return chain

    def close(self) -> None:
        """Free the model and its context."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
            self._llama = self._template = self._lib = None


class GgufFiles:
    """The GGUF files a chat has open, each loaded once, on first use; closed together."""

    def __init__(self, *, threads: Optional[int] = None) -> None:
        self.threads = threads
        self._sessions: dict[Path, GgufSession] = {}

    def open(self, file: GgufFile) -> GgufSession:
        """The loaded session of ``file``, loading it now when it is not."""
        path = Path(file.path).expanduser().resolve()
        session = self._sessions.get(path)
        if session is None:
            session = GgufSession(path, threads=self.threads)
            session.load()
            self._sessions[path] = session
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
