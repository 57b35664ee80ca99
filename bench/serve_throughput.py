"""Serving throughput: the local server answering 8 concurrent clients that alternate between two
adapters, against the same requests sent one by one to plain ``transformers`` generate with the
adapter already set; and the same clients all on one adapter, for what switching costs.

On the real starter model with two LoRA adapters (rank 16 on every linear layer, made here with
PEFT). Every request is greedy, so the server and plain generate produce the same replies and the
same tokens: the ratios compare the same work. Prompts are the first of the package's general
prompts (the forgetting check's).

    python bench/serve_throughput.py [--requests 32] [--clients 8] [--tokens 64] [--home DIR]

Last line: ``tokens_per_s_ratio=… requests_per_s_ratio=… switching_cost=… p50_s=… p99_s=…
plain_p50_s=… plain_p99_s=…`` (ratios are server/plain: above 1 is faster; switching_cost is the
share of throughput lost by alternating adapters against all clients on one).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per reply")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, for both")
    parser.add_argument("--ttft-rounds", type=int, default=7)
    parser.add_argument("--home", help="a scratch LORA_STUDIO_HOME to reuse (the starter is converted once)")
    args = parser.parse_args()
    if args.home:
        return measure(args, Path(args.home))
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, home: Path) -> int:
    os.environ["LORA_STUDIO_HOME"] = str(home)
    import torch

    from engine.cli.output import quiet_libraries
    from engine.models.store import resolve_model

    quiet_libraries()
    torch.set_num_threads(args.threads)
    base = resolve_model("starter")
    adapters = [make_adapter(base, home / "bench-adapters" / name, seed) for seed, name in enumerate(("one", "two"))]
    prompts = general_prompts(args.requests)
    # Client c's j-th request goes to adapter (c + j) % 2: every moment has both in flight.
    plan = [(prompts[i], adapters[(i % args.clients + i // args.clients) % 2].name) for i in range(args.requests)]

    plain = run_plain(base, adapters, plan, args.tokens)
    print(f"plain generate, one by one: {describe(plain)}", flush=True)
    alternating = run_server(base, adapters, plan, args.clients, args.tokens, args.threads)
    print(f"server, {args.clients} clients, two adapters: {describe(alternating)}", flush=True)
    one = [(prompt, adapters[0].name) for prompt, _ in plan]
    single = run_server(base, adapters, one, args.clients, args.tokens, args.threads)
    print(f"server, {args.clients} clients, one adapter: {describe(single)}", flush=True)
    if alternating["tokens"] != plain["tokens"]:
        print(f"note: the server generated {alternating['tokens']} tokens, plain generate {plain['tokens']}")

    ttft = first_token_times(base, adapters[0], prompts[0], args.threads, rounds=args.ttft_rounds)
    print(f"time to first token, one streamed request: server {ttft['server']:.3f} s, plain {ttft['plain']:.3f} s "
          f"(medians of {args.ttft_rounds})", flush=True)

    tokens_ratio = alternating["tokens_per_s"] / plain["tokens_per_s"]
    requests_ratio = alternating["requests_per_s"] / plain["requests_per_s"]
    switching = 1 - alternating["tokens_per_s"] / single["tokens_per_s"]
    print(f"tokens_per_s_ratio={tokens_ratio:.2f} requests_per_s_ratio={requests_ratio:.2f} "
          f"switching_cost={switching:.3f} p50_s={alternating['p50']:.2f} p99_s={alternating['p99']:.2f} "
          f"plain_p50_s={plain['p50']:.2f} plain_p99_s={plain['p99']:.2f} "
          f"ttft_ratio={ttft['server'] / ttft['plain']:.2f}")
    return 0


def make_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter on every linear layer of ``base``, with lora_B drawn (PEFT starts it at zero)."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape) * 0.01
    peft_model.save_pretrained(folder)
    return folder


def general_prompts(count: int) -> list[list[dict]]:
    from engine.eval.forgetting import load_general_prompts

    return load_general_prompts()[:count]


def run_plain(base: Path, adapters: list[Path], plan: list[tuple[list[dict], str]], tokens: int) -> dict[str, Any]:
    """What a script does: the model with both adapters loaded, one request at a time (grouped by
    adapter, each group after ``set_adapter``), render, tokenise, ``generate``; from a worker thread,
    as the server generates (OpenMP in the main thread measured slower on a busy machine)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=adapters[0].name)
    model.load_adapter(str(adapters[1]), adapter_name=adapters[1].name)
    model.eval()
    latencies: list[float] = []
    generated = 0

    def work() -> None:
        nonlocal generated
        for adapter in adapters:
            model.set_adapter(adapter.name)
            for messages, name in plan:
                if name != adapter.name:
                    continue
                started = time.perf_counter()
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
                with torch.inference_mode():
                    output = model.generate(**inputs, max_new_tokens=tokens, do_sample=False,
                                            pad_token_id=tokenizer.eos_token_id)
                generated += output.shape[1] - inputs["input_ids"].shape[1]
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return summary(latencies, generated, time.perf_counter() - started)


def run_server(base: Path, adapters: list[Path], plan: list[tuple[list[dict], str]], clients: int, tokens: int,
               threads: int) -> dict[str, Any]:
    import openai

    from engine.serve.server import LocalServer, ServeSettings

    server = LocalServer(ServeSettings(model=str(base), adapters=[str(path) for path in adapters], port=0,
                                       threads=threads, max_batch=clients))
    server.start()
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
    latencies: list[float] = []
    generated = 0
    lock = threading.Lock()

    def work(mine: list[tuple[list[dict], str]]) -> None:
        nonlocal generated
        for messages, name in mine:
            started = time.perf_counter()
            reply = client.chat.completions.create(model=name, messages=messages, max_tokens=tokens, temperature=0)
            with lock:
                latencies.append(time.perf_counter() - started)
                generated += reply.usage.completion_tokens

    try:
        workers = [threading.Thread(target=work, args=(plan[index::clients],)) for index in range(clients)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    return summary(latencies, generated, seconds)


class _FirstToken:
    """A streamer for ``generate`` that notes when the first new token comes (the prompt comes first)."""

    def __init__(self) -> None:
        self.calls = 0
        self.at = 0.0

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def first_token_times(base: Path, adapter: Path, messages: list[dict], threads: int, rounds: int) -> dict[str, float]:
    """The median time from asking to the first token of a reply: one streamed request to the
    server (to its first chunk with text) against plain generate with a streamer, in alternate rounds."""
    import httpx2
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models.tokenizer import load_tokenizer
    from engine.serve.server import LocalServer, ServeSettings

    tokenizer = load_tokenizer(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    model.eval()
    server = LocalServer(ServeSettings(model=str(base), adapters=[str(adapter)], port=0, threads=threads))
    server.start()
    times: dict[str, list[float]] = {"server": [], "plain": []}

    def plain() -> None:
        started = time.perf_counter()
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        streamer = _FirstToken()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=8, do_sample=False, streamer=streamer,
                           pad_token_id=tokenizer.eos_token_id)
        times["plain"].append(streamer.at - started)

    # Plain generate runs on one long-lived worker thread, as the server's batches do (a new thread
    # per call would pay for starting its own OpenMP threads).
    asked, answered = threading.Semaphore(0), threading.Semaphore(0)

    def plain_worker() -> None:
        for _ in range(rounds + 1):
            asked.acquire()
            plain()
            answered.release()

    worker = threading.Thread(target=plain_worker, daemon=True)
    worker.start()
    try:
        with httpx2.Client(timeout=600) as client:
            body = {"model": adapter.name, "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True}
            for _ in range(rounds + 1):  # the first round of each warms up, and is not counted
                asked.release()
                answered.acquire()
                started = time.perf_counter()
                with client.stream("POST", f"{server.url}/chat/completions", json=body) as response:
                    for line in response.iter_lines():
                        if '"content": "' in line and '"content": ""' not in line:
                            times["server"].append(time.perf_counter() - started)
                            break
    finally:
        server.stop()
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def summary(latencies: list[float], tokens: int, seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"requests": len(latencies), "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "requests_per_s": len(latencies) / seconds,
            "p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]}


def describe(result: dict[str, Any]) -> str:
    return (f"{result['requests']} requests, {result['tokens']} tokens in {result['seconds']:.1f} s: "
            f"{result['tokens_per_s']:.1f} tokens/s, {result['requests_per_s']:.2f} requests/s, "
            f"p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
