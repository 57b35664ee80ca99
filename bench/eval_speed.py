"""Evaluation speed: greedy replies in batches (``ChatSession.generate_batch``) against one
``ChatSession.generate`` per prompt, on the real starter model, with identical replies.

Both paths answer the same prompts (the first rows of the pirate persona dataset, the system
prompt and question of each) for the same candidates (the base and one LoRA on every linear
layer, lora_B random as a trained one's would be, written to a scratch folder), on one loaded
session with the adapter swapped in place, in the same process with the same torch threads.
For each candidate one path runs after the other, so a busy machine slows both alike. The torch
threads are the Chat page's (one per physical core but one): with two threads on a two-core machine
that anything else was using, a batch of 8 took 2.4 s a step against 0.5 s on one thread, as
OpenMP threads that wait by spinning do when a core is taken from them.

The greedy replies must be the same text and token count both ways: the script says how many
differ, shows the first, and exits 1 if any do. ``--sizes 4,8,16,32`` also times the batched path
at other batch sizes (after the comparison; their replies are checked too).

    python bench/eval_speed.py [--examples 24] [--tokens 64] [--batch-size 8] [--sizes 4,8,16,32]
                               [--threads N] [--home DIR]

Last line: ``eval_speed_ratio=X.XX`` (examples/s batched over examples/s one by one, wall clock); the
line before it is the same ratio in CPU seconds, which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASET = ROOT / "engine" / "resources" / "datasets" / "pirate_persona.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=24, help="prompts per candidate")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per reply")
    parser.add_argument("--batch-size", type=int, help="the batched path's (default: generate_batch's for a CPU)")
    parser.add_argument("--sizes", default="", help="more batch sizes to time, comma separated")
    parser.add_argument("--threads", type=int, help="torch threads (default: the Chat page's, chat_threads())")
    parser.add_argument("--home", help="a scratch LORA_STUDIO_HOME to reuse (the starter is converted once)")
    args = parser.parse_args()
    if args.home:
        return measure(args, Path(args.home))
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as scratch:  # half a gigabyte of converted model
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, home: Path) -> int:
    os.environ["LORA_STUDIO_HOME"] = str(home)
    import torch

    from engine.chat.batches import CPU_BATCH_SIZE
    from engine.chat.devices import chat_threads
    from engine.chat.session import ChatSession
    from engine.eval.evalset import load_evalset
    from engine.models.store import resolve_model

    threads = args.threads or chat_threads()
    batch_size = args.batch_size  # None: generate_batch's default for the device
    base = resolve_model("starter")
    session = ChatSession("starter", device="cpu", threads=threads)
    session.load()
    prompts = [example.prompt for example in load_evalset(dataset=DATASET, limit=args.examples).examples]
    with tempfile.TemporaryDirectory(prefix="eval-speed-adapter-") as scratch:
        adapter = make_adapter(base, Path(scratch) / "pirate-random")
        candidates: list[tuple[str, Optional[str]]] = [("base", None), ("lora", adapter)]
        shown_size = batch_size or f"{CPU_BATCH_SIZE} (the CPU default)"
        print(f"model: starter on {session.device}, {torch.get_num_threads()} torch threads, {len(prompts)} prompts "
              f"x {len(candidates)} candidates, up to {args.tokens} new tokens, batch size {shown_size}", flush=True)
        session.set_adapter(adapter)  # loaded once (not timed), as an evaluation loads it before generating
        session.generate(prompts[0], max_new_tokens=4)  # warm-up: the first call pays one-off costs
        session.set_adapter(None)

        single, batched = Clock(), Clock()
        differ = 0
        replies: dict[str, list[Any]] = {}
        for label, choice in candidates:
            session.set_adapter(choice)
            one_by_one = single.time(lambda: [session.generate(prompt, max_new_tokens=args.tokens)
                                              for prompt in prompts])
            many = batched.time(lambda: session.generate_batch(prompts, max_new_tokens=args.tokens,
                                                               batch_size=batch_size))
            replies[label] = one_by_one
            tokens = sum(reply.tokens for reply in one_by_one)
            print(f"{label}: one by one {single.last(len(prompts))}, batched {batched.last(len(prompts))}, "
                  f"{tokens} reply tokens", flush=True)
            differ += report_differences(label, one_by_one, many)
        changed = sum(a.reply != b.reply for a, b in zip(replies["base"], replies["lora"]))
        print(f"the adapter changes {changed} of {len(prompts)} replies")

        for size in [int(size) for size in args.sizes.split(",") if size.strip()]:
            clock = Clock()
            for label, choice in candidates:
                session.set_adapter(choice)
                many = clock.time(lambda: session.generate_batch(prompts, max_new_tokens=args.tokens,
                                                                 batch_size=size))
                differ += report_differences(f"{label} at batch size {size}", replies[label], many)
            print(f"batch size {size}: {clock.total(len(prompts) * len(candidates))}", flush=True)
        session.close()

    examples = len(prompts) * len(candidates)
    print(f"one by one: {single.total(examples)}")
    print(f"batched:    {batched.total(examples)} (batch size {shown_size})")
    print(f"replies that differ: {differ}")
    # CPU seconds (this process's, every thread) are what a busy machine disturbs least: shown beside.
    print(f"cpu_ratio={single.cpu / batched.cpu:.2f}")
    print(f"eval_speed_ratio={single.wall / batched.wall:.2f}")
    return 1 if differ else 0


class Clock:
    """Wall-clock and CPU seconds of the calls it times, the last one's and in all."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.last_wall = self.last_cpu = 0.0

    def time(self, action: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        self.last_wall, self.last_cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall, self.cpu = self.wall + self.last_wall, self.cpu + self.last_cpu
        return result

    def last(self, examples: int) -> str:
        return describe(self.last_wall, self.last_cpu, examples)

    def total(self, examples: int) -> str:
        return describe(self.wall, self.cpu, examples)


def describe(wall: float, cpu: float, examples: int) -> str:
    return f"{wall:.1f} s ({examples / wall:.2f} examples/s; {cpu:.1f} CPU s)"


def report_differences(label: str, one_by_one: list[Any], batched: list[Any]) -> int:
    """How many batched replies differ from the one-by-one ones (text or token count); the first is shown."""
    differ = [index for index, (one, many) in enumerate(zip(one_by_one, batched))
              if (one.reply, one.tokens) != (many.reply, many.tokens)]
    if differ:
        first = differ[0]
        print(f"{label}: {len(differ)} replies differ, the first is prompt {first}:\n"
              f"  one by one ({one_by_one[first].tokens} tokens): {one_by_one[first].reply!r}\n"
              f"  batched    ({batched[first].tokens} tokens): {batched[first].reply!r}", flush=True)
    return len(differ)


def make_adapter(base: Path, folder: Path) -> str:
    """A rank-16 LoRA on every linear layer of the starter, lora_B randomised (PEFT starts it at zero)
    so that it changes the replies, as a trained adapter does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)  # lora_A's initialisation: the same adapter, so the same replies, in every run
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.01
    peft_model.save_pretrained(folder)
    return str(folder)


if __name__ == "__main__":
    sys.exit(main())
