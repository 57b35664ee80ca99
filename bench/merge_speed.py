"""How long merging an adapter into the starter model takes, and how faithful the result is.

Baseline, measured in the same run: what other tools do, PEFT's ``merge_and_unload`` and
``save_pretrained`` with no check at all. LoRA Studio's merge adds the fidelity check (probe
prompts through base+adapter and through the merged model loaded back from disk); the
ratio is what that check costs.

    .venv/bin/python bench/merge_speed.py [--rank 16] [--threads 2]

The starter is converted into the model store on first use (not timed). The last line
holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base: Path, folder: Path, rank: int) -> Path:
    """A rank-``rank`` LoRA on every linear layer, lora_B randomised so that it changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.models.store import model_fingerprint

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS,
                                                  task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.01
    peft_model.save_pretrained(folder)
    (folder / "studio.json").write_text(json.dumps({"base_model": "starter", "method": "lora", "rank": rank,
                                                    "base_model_fingerprint": model_fingerprint(base)}))
    return folder


def baseline_merge(base: Path, adapter: Path, output: Path) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(output)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is a 2-core CPU)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as transformers_logging

    from engine.adapters.merge import merge_adapter
    from engine.models.store import resolve_model

    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    base = resolve_model("starter")
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as scratch:
        work = Path(scratch)
        adapter = make_adapter(base, work / "adapter", args.rank)
        # Warm the file cache and imports for both, so neither pays the first read.
        baseline_merge(base, adapter, work / "warm")
        baseline_s = baseline_merge(base, adapter, work / "baseline")
        steps: list[tuple[float, str]] = []
        started = time.perf_counter()
        result = merge_adapter(adapter, work / "merged",
                               progress=lambda done, total, message: steps.append((time.perf_counter(), message)))
        studio_s = time.perf_counter() - started
    for (at, message), (next_at, _) in zip(steps, steps[1:]):
        print(f"  {next_at - at:6.2f} s  {message}")
    fidelity = result.fidelity
    print(f"starter ({base.name}), rank {args.rank} on all linear layers, {args.threads} threads")
    print(f"baseline (peft merge_and_unload + save_pretrained, no check): {baseline_s:.2f} s")
    print(f"LoRA Studio merge with fidelity check: {studio_s:.2f} s ({studio_s / baseline_s:.2f}x the baseline)")
    print(f"fidelity over {fidelity.prompts} prompts / {fidelity.tokens} positions ({fidelity.check_precision}): "
          f"max |logit diff| {fidelity.max_abs_logit_diff:.3g}, mean KL {fidelity.mean_kl:.3g}, "
          f"adapter effect {fidelity.adapter_effect:.3g}, within tolerance: {fidelity.within_tolerance}")
    print(f"merge_s={studio_s:.2f} baseline_s={baseline_s:.2f} ratio={studio_s / baseline_s:.2f} "
          f"max_logit_diff={fidelity.max_abs_logit_diff:.3g} mean_kl={fidelity.mean_kl:.3g} "
          f"within_tolerance={fidelity.within_tolerance} target_s=30")
    return 0


if __name__ == "__main__":
    sys.exit(main())
