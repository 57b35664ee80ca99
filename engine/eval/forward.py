"""One forward pass over a batch of token rows on a chat session, for the next-token
distributions the judge reads its verdict from and the forgetting check compares.

Rows are left padded, as ``ChatSession.generate_batch`` pads its prompts, so every row ends in
the last column: the positions a caller wants (the verdict after the prompt, the answer's
tokens) line up at the right whatever each row's length.
"""

from __future__ import annotations

import inspect
from typing import Any

from engine.chat.batches import left_padded
from engine.errors import StudioError


def last_logits(session: Any, rows: list[list[int]], keep: int) -> Any:
    """The logits of the last ``keep`` positions of each row, as the session's active choice
    gives them: a float tensor [rows, keep, vocabulary] on the CPU.

    Only those positions go through the model's output layer where the model allows it
    (``logits_to_keep``): a large vocabulary times every position of every row is what would
    fill the memory, not the rest of the pass.
    """
    import torch

    session.load()
    tokenizer = session.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids, attention_mask = left_padded(rows, pad)
    width = input_ids.shape[1]
    # Positions counted from each row's first real token, as generate counts them for a left
    # padded batch: a row's outputs do not depend on how much padding the batch gave it.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    options: dict[str, Any] = {}
    if "logits_to_keep" in inspect.signature(session.base_model.forward).parameters:
        options["logits_to_keep"] = keep
    with session.forward_context() as model, torch.inference_mode():
        device = session.device
        # PEFT's virtual-token methods (prompt, prefix, P-tuning) place their tokens themselves and
        # ignore given positions, with a warning per call.
        if not getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
            options["position_ids"] = position_ids.to(device)
        try:
            output = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           use_cache=False, **options)
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise StudioError(f"out of memory in one forward pass of {len(rows)} rows of up to {width} tokens: "
                                  "lower the batch size") from None
            raise
    return output.logits[:, -keep:, :].float().cpu()
