"""Chat speed: the studio's chat path against plain ``transformers`` generate, and an
adapter hot-swap against reloading the model, on the real starter model.

Both paths answer the same prompt on the same loaded model with greedy decoding, in
alternating rounds so that a busy machine slows both alike; the medians are compared.
The chat path is ``ChatSession.generate`` with a token callback, the call the Chat page
makes, with the page's torch thread count. Plain generate is what a script would do:
render the template, tokenise, ``model.generate``. Both are called from a worker thread,
as the page calls them: on a busy machine OpenMP in the main thread was measured two to
three times slower than in any other thread, which would flatter the chat path.

Tokens per second come from the full replies. Time to first token comes from one-token
replies, many more of them (``--ttft-rounds``), each pair in turn led by either path: a
first token takes a quarter of a second, and on a shared machine the median of five
samples per path varied by 20% from run to run, more than any difference between the paths.

    python bench/chat_speed.py [--rounds 5] [--tokens 96] [--ttft-rounds 20] [--home DIR]

Last line: ``tps_ratio=… ttft_ratio=… switch_ms=… reload_ms=…`` (ratios are chat/plain:
tokens/s above 1 is faster, time to first token below 1 is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96, help="new tokens per reply")
    parser.add_argument("--ttft-rounds", type=int, default=20, help="one-token replies per path, for the first token")
    parser.add_argument("--home", help="a scratch LORA_STUDIO_HOME to reuse (the starter is converted once)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: the Chat page's, chat_threads())")
    args = parser.parse_args()
    if args.home:
        return measure(args, Path(args.home))
    with tempfile.TemporaryDirectory(prefix="chat-speed-") as scratch:  # half a gigabyte of converted model
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, home: Path) -> int:
    os.environ["LORA_STUDIO_HOME"] = str(home)

    import torch

    from engine.chat.devices import chat_threads
    from engine.chat.session import ChatSession
    from engine.models.store import resolve_model

    threads = args.threads or chat_threads()
    resolve_model("starter")
    session = ChatSession("starter", device=args.device, threads=threads)
    session.load()
    print(f"model: starter on {session.device}, {torch.get_num_threads()} torch threads, {args.tokens} new tokens, "
          f"{args.rounds} rounds, {args.ttft_rounds} first-token rounds", flush=True)

    plain_runs, chat_runs = [], []
    on_worker(plain_generate, session, args.tokens), on_worker(chat_generate, session, args.tokens)  # warm-up
    for round_number in range(args.rounds):
        plain_runs.append(on_worker(plain_generate, session, args.tokens))
        chat_runs.append(on_worker(chat_generate, session, args.tokens))
        print(f"round {round_number + 1}: plain {describe(plain_runs[-1])} | chat {describe(chat_runs[-1])}",
              flush=True)
    plain_tps, chat_tps = median(plain_runs, "tps"), median(chat_runs, "tps")
    plain_firsts, chat_firsts = [], []
    for round_number in range(args.ttft_rounds):
        # Each path leads every other pair: whatever the one before leaves behind is shared out.
        pair = [(plain_generate, plain_firsts), (chat_generate, chat_firsts)]
        for generate, firsts in (pair if round_number % 2 == 0 else reversed(pair)):
            firsts.append(on_worker(generate, session, 1))
    plain_ttft, chat_ttft = median(plain_firsts, "ttft"), median(chat_firsts, "ttft")

    adapters = [make_adapter(session.base_model, home / "adapters" / name, seed) for name, seed in
                (("bench-a", 1), ("bench-b", 2))]
    first_load_ms = timed_ms(lambda: session.set_adapter(adapters[0]))
    session.set_adapter(adapters[1])
    switches = []
    for choice in [adapters[0], None, adapters[1]] * 5:
        switches.append(timed_ms(lambda: session.set_adapter(choice)))
    switch_ms = statistics.median(switches)
    session.close()
    reload_ms = statistics.median(timed_ms(lambda: reload(adapters[0], args.device, threads)) for _ in range(3))

    print(f"plain: {plain_tps:.2f} tok/s, first token {plain_ttft * 1000:.0f} ms")
    print(f"chat:  {chat_tps:.2f} tok/s, first token {chat_ttft * 1000:.0f} ms")
    print(f"adapter: first load {first_load_ms:.1f} ms, switch median {switch_ms:.2f} ms "
          f"(max {max(switches):.2f} ms), reload model + adapter {reload_ms:.0f} ms")
    print(f"tps_ratio={chat_tps / plain_tps:.3f} ttft_ratio={chat_ttft / plain_ttft:.3f} "
          f"switch_ms={switch_ms:.2f} reload_ms={reload_ms:.0f}")
    return 0


def plain_generate(session: Any, tokens: int) -> dict[str, float]:
    import torch
    from transformers import StoppingCriteriaList

    tokenizer, model = session.tokenizer, session.base_model  # no adapter is loaded yet: a plain model
    first: list[float] = []

    def clock_first_token(input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    started = time.perf_counter()
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    output = model.generate(**encoded, max_new_tokens=tokens, do_sample=False,
                            stopping_criteria=StoppingCriteriaList([clock_first_token]))
    finished = time.perf_counter()
    generated = output.shape[1] - encoded["input_ids"].shape[1]
    return {"tps": (generated - 1) / (finished - first[0]), "ttft": first[0] - started, "tokens": generated}


def chat_generate(session: Any, tokens: int) -> dict[str, float]:
    pieces: list[str] = []
    reply = session.generate(PROMPT, max_new_tokens=tokens, temperature=0.0, on_token=pieces.append)
    return {"tps": reply.tokens_per_second, "ttft": reply.time_to_first_token_s, "tokens": reply.tokens}


def make_adapter(model: Any, folder: Path, seed: int) -> str:
    """A LoRA on every linear layer of the starter with random B, as a trained one would have."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
    peft_model.save_pretrained(folder)
    return str(folder)


def reload(adapter: str, device: str, threads: int) -> None:
    """What switching would cost without hot-swap: load the base again, then the adapter."""
    from engine.chat.session import ChatSession

    session = ChatSession("starter", device=device, threads=threads)
    session.load()
    session.set_adapter(adapter)
    session.close()


def on_worker(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run on a fresh thread, as the studio runs it; its result or its error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = function(*args)
        except BaseException as exc:  # re-raised on the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def timed_ms(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def describe(run: dict[str, float]) -> str:
    return f"{run['tps']:.2f} tok/s, first {run['ttft'] * 1000:.0f} ms, {run['tokens']:.0f} tokens"


if __name__ == "__main__":
    sys.exit(main())
