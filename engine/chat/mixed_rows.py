"""One batch, a different adapter per row, at the cost of one adapter.

PEFT's own mixed-adapter batches (``adapter_names``) gather each adapter's rows, run its LoRA
matrices on them and scatter the result back, in every LoRA layer: on the starter with two rank-16
all-linear adapters (210 LoRA layers) that cost 12-25 % of a CPU batch's throughput against the
same batch on one adapter (measured with ``generate_rows``, 8 rows, one thread).

``RowMix`` instead concatenates the adapters into one (PEFT's exact ``cat`` combination: the
ranks side by side, each adapter's scale folded into its rows of A), and a forward hook on each
layer's A multiplies its output by a per-row mask that keeps only that row's adapter's ranks.
Every layer then does the two small matrix products of a single adapter, whatever the mix; a row
for the base model keeps no rank at all.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

MIX_NAME = "rows-mix"


class RowMix:
    """The session's plain LoRA adapters (PEFT names ``parts``) as one masked combination."""

    def __init__(self, peft: Any, parts: tuple[str, ...]) -> None:
        from peft.tuners.lora import LoraLayer

        self.peft, self.parts = peft, parts
        peft.add_weighted_adapter(list(parts), [1.0] * len(parts), adapter_name=MIX_NAME, combination_type="cat")
        peft.eval()  # the new modules start in training mode, with their dropout on
        self._masks: Optional[dict[tuple, Any]] = None  # per slot layout, while a batch runs
        self._hooks = []
        for module in peft.modules():
            if isinstance(module, LoraLayer) and MIX_NAME in module.lora_A:
                # Where each part's ranks sit in this layer's combined A: in ``parts`` order, as
                # ``cat`` lays them out, skipping the parts that do not adapt this layer.
                # The combined rank is every part's together in every layer; the slots past the parts
                # this layer has are zero.
                layout = (module.lora_A[MIX_NAME].weight.shape[0],
                          tuple((name, module.lora_A[name].weight.shape[0]) for name in parts if name in module.lora_A))
                self._hooks.append(module.lora_A[MIX_NAME].register_forward_hook(self._masking(layout)))
        # The combination's own scale must be 1: each part's is already in its rows of A.
        for module in peft.modules():
            if isinstance(module, LoraLayer) and MIX_NAME in module.scaling:
                module.scaling[MIX_NAME] = 1.0

    def _masking(self, layout: tuple) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            return output * self._masks[layout] if self._masks is not None else output
        return hook

    @contextmanager
    def rows(self, row_parts: list[Optional[str]], device: Any) -> Iterator[None]:
        """The mix made active for a batch whose row ``i`` answers as ``row_parts[i]`` (None: the base)."""
        import torch

        def mask(layout: tuple) -> Any:
            width, slots = layout
            built = torch.zeros((len(row_parts), 1, width), device=device)
            start = 0
            for name, rank in slots:
                for row, part in enumerate(row_parts):
                    if part == name:
                        built[row, 0, start:start + rank] = 1.0
                start += rank
            return built

        self._masks = _LazyMasks(mask)
        previous = self.peft.active_adapter
        self.peft.set_adapter(MIX_NAME)
        try:
            yield
        finally:
            self._masks = None
            self.peft.set_adapter(previous)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if MIX_NAME in self.peft.peft_config:
            self.peft.delete_adapter(MIX_NAME)


class _LazyMasks(dict):
    """Masks by slot layout, each built the first time a layer with that layout asks."""

    def __init__(self, build: Any) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, layout: tuple) -> Any:
        mask = self._build(layout)
        self[layout] = mask
        return mask
