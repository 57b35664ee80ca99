"""Auto-fit against real training: the plan it picks for a memory budget must fit that budget
when it really trains, and use most of it.

For each budget, ``engine.memory.autofit.auto_fit`` chooses a plan for the model; the plan then trains
two real steps in a fresh process through the engine's own loading and methods (the memory
calibration's harness) and the measured peak is compared with the budget. On CUDA the peak
is what the GPU holds (``max_memory_reserved`` plus the context the estimate assumes); on a
CPU, the peak of live tensor bytes. Targets: no plan over its budget, each using at least 80%.
A plan trains with at most two accumulated micro-batches (its peak is the same), and a CPU
checks only the starter's smallest budget (larger ones train for over a quarter of an hour each).

    python bench/autofit_check.py [--no-starter]

Last line: ``plans=… over_budget=… min_use=… max_use=…`` (use = measured / budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_calibration import measure_in_child, model_folders  # noqa: E402

MiB = 1 << 20
# Budgets that leave auto-fit real choices (lengths, batches, ranks, savers) on each model.
BUDGETS = {"tiny": (40 * MiB, 80 * MiB, 160 * MiB), "starter": (1024 * MiB, 2048 * MiB, 3072 * MiB)}
# Two CPU cores train the starter's plans (4 x 1024 tokens a micro-batch and more) for over a
# quarter of an hour each: a CPU checks its smallest budget only.
CPU_STARTER_BUDGETS = 1
# The peak comes with the first micro-batch that runs beside the gradients and optimizer states,
# so two accumulated micro-batches measure what four or sixteen would, in a fraction of the time.
MEASURED_ACCUMULATION = 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-starter", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from engine.memory.autofit import auto_fit
    from engine.memory.estimate import CUDA_CONTEXT_BYTES
    from engine.models.spec import spec_from_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "bf16" if device == "cuda" else "fp32"
    uses, over = [], 0
    with tempfile.TemporaryDirectory() as work:
        folders = model_folders(Path(work), not args.no_starter)
        for name, folder in folders.items():
            spec = spec_from_config(json.loads((folder / "config.json").read_text()), name)
            budgets = BUDGETS[name][:CPU_STARTER_BUDGETS] if name == "starter" and device == "cpu" else BUDGETS[name]
            for budget in budgets:
                fit = auto_fit(spec, budget, None, {"method": "lora", "precision": precision, "effective_batch": 16,
                                                    "default_length": 1024}, device=device)
                if not fit.fits:
                    print(f"{name:8} {budget / MiB:7.0f} MiB: nothing fits ({fit.suggestion})")
                    continue
                measured_plan = replace(fit.plan, grad_accum=min(fit.plan.grad_accum, MEASURED_ACCUMULATION))
                raw = measure_in_child(folder, measured_plan.to_dict())
                measured = (raw["cuda_max_reserved_bytes"] + CUDA_CONTEXT_BYTES if device == "cuda"
                            else raw["cpu_allocated_bytes"])
                use = measured / budget
                uses.append(use)
                over += measured > budget
                print(f"{name:8} {budget / MiB:7.0f} MiB: {fit.plan.describe():90} measured {measured / MiB:8.1f} MiB "
                      f"({use:.0%} of the budget)", flush=True)
    print(f"plans={len(uses)} over_budget={over} min_use={min(uses):.3f} max_use={max(uses):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
