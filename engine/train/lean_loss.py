"""The training loss without the batch's logits: cross-entropy over the output head, a chunk of
tokens at a time.

transformers computes a causal LM's loss from the whole batch's logits, batch x length x
vocabulary, upcast to fp32, beside log-softmax's fp32 output and, at the start of backward,
their gradients: some 12 bytes per token per vocabulary entry, 576 MiB for the starter
(49k vocabulary) at batch 4 x 256 and GiBs for 128k-256k vocabularies. Here the head and the
loss run together over a few hundred tokens at a time (``engine.memory.loss_chunk`` says how
many, and why), so only one chunk's logits ever exist.

How: the gradients are computed chunk by chunk during the forward pass, as Liger's fused
linear cross-entropy does (its Triton kernels do not run on a CPU, and cut-cross-entropy's
fallback is ``torch.compile`` of the naive loss, which materialises the logits): for each chunk
the logits in the head's compute dtype, their fp32 copy, log-softmax and the loss, then
``softmax - onehot``, which gives the chunk's rows of the hidden states' gradient (stored:
hidden-sized, not vocabulary-sized) and, when the head trains (full fine-tuning), adds into its
weight's gradient. The backward pass then only scales those by ``grad_output / denominator``:
no logits are recomputed (recomputing them in the backward pass, the other design, would keep
about as much, the hidden rows instead of their gradient, and cost a fourth matmul over the
vocabulary), so the matmuls are the stock path's three
(logits, hidden gradient, weight gradient) and the loss costs no more time than transformers'.
When nothing needs a gradient (evaluation) the gradient work is skipped.

Rows whose label is ignored (-100: prompt tokens, padding, the first token of a packed row)
are dropped before the head runs, so they cost no matmul at all; they contribute neither loss
nor gradient in the stock path either.

``model_loss`` reaches the hidden states of any causal LM, through peft's wrappers, by standing
a pass-through in for the output head for the duration of the forward pass; what the model
does after its head must be linear (Cohere's and Granite's logit scales are) or set aside and
redone here (Gemma 2's tanh soft-capping).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch

from engine.memory import loss_chunk

IGNORE_INDEX = -100


def shifted_labels(labels: torch.Tensor, length: int) -> torch.Tensor:
    """The label each of ``length`` positions predicts, as transformers' ``ForCausalLMLoss``
    shifts them (position i predicts label i + 1; the last predicts nothing). Labels shorter than
    the hidden states (prompt tuning's and P-tuning's virtual tokens come first) are padded on
    the left with ignored labels, as peft does when it passes labels to the base model."""
    labels = torch.nn.functional.pad(labels, (length - labels.shape[-1], 1), value=IGNORE_INDEX)
    return labels[..., 1:]


def head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, *,
                       compute_dtype: torch.dtype, num_items_in_batch: Any = None,
                       softcap: Optional[float] = None) -> torch.Tensor:
    """The causal LM loss of ``hidden`` ([batch, length, hidden]) under ``head``, equal to
    ``ForCausalLMLoss(head(hidden), labels)``: summed over the predicted tokens and divided by
    ``num_items_in_batch`` when given (the Trainer's count over the accumulated batch), else their
    mean. ``compute_dtype`` is the dtype the head's matmul runs in (autocast's, or the weight's)."""
    targets = shifted_labels(labels.to(hidden.device), hidden.shape[1]).reshape(-1)
    kept = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, kept)
    targets = targets.index_select(0, kept)
    if num_items_in_batch is None:
        denominator = torch.tensor(float(len(kept)), device=hidden.device)
    else:
        denominator = torch.as_tensor(num_items_in_batch, device=hidden.device).to(torch.float32)
    return _HeadCrossEntropy.apply(rows, head.weight, head.bias, targets, denominator, softcap, compute_dtype,
                                   loss_chunk.chunk_rows(head.weight.shape[0]), torch.is_grad_enabled())


class _HeadCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``rows @ weight.T + bias`` against ``targets``, over ``denominator``.
    The forward pass computes the unscaled gradients chunk by chunk; the backward pass scales
    them by ``grad_output / denominator`` (folded there: on hidden-sized tensors, not on a
    vocabulary-sized one per chunk)."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                targets: torch.Tensor, denominator: torch.Tensor, softcap: Optional[float], dtype: torch.dtype,
                chunk: int, grad_enabled: bool) -> torch.Tensor:
        # needs_input_grad reads requires_grad alone: under no_grad (evaluation) nothing needs a gradient.
        want_rows, want_weight, want_bias = (grad_enabled and needed and tensor is not None for needed, tensor
                                             in zip(ctx.needs_input_grad, (rows, weight, bias)))
        gradients = want_rows or want_weight or want_bias
        # The head computes in ``dtype`` (as autocast would run it), the loss in fp32 (as ForCausalLMLoss upcasts).
        head_weight = weight.to(dtype)
        head_bias = bias.to(dtype) if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad_rows = torch.empty_like(rows) if want_rows else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
        for start in range(0, rows.shape[0], chunk):
            inputs = rows[start:start + chunk].to(dtype)
            loss, grad = _chunk(inputs, targets[start:start + chunk, None], head_weight, head_bias, softcap, gradients)
            total += loss
            if grad is None:
                continue
            if want_rows:
                grad_rows[start:start + chunk] = grad @ head_weight
            if want_weight:
                if dtype == torch.float32:
                    grad_weight.addmm_(grad.t(), inputs)
                else:  # the chunk's 16-bit product, summed in fp32 across chunks
                    grad_weight.add_(grad.t() @ inputs)
            if want_bias:
                grad_bias.add_(grad.sum(0))
            del grad  # before the next chunk's logits: one chunk's vocabulary-sized tensors at a time
        ctx.denominator = denominator
        # Summed in fp32, kept in the parameter's dtype (a pure-bf16 head's gradient is bf16).
        ctx.gradients = (grad_rows, None if grad_weight is None else grad_weight.to(weight.dtype),
                         None if grad_bias is None else grad_bias.to(bias.dtype))
        return total / denominator

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        scale = grad_output / ctx.denominator
        grads = ctx.gradients
        ctx.gradients = None  # scaled in place and handed on: autograd keeps no second copy
        scaled = [None if grad is None else grad.mul_(scale.to(grad.dtype)) for grad in grads]
        return scaled[0], scaled[1], scaled[2], None, None, None, None, None, None


def _chunk(inputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           softcap: Optional[float], gradients: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One chunk's summed loss and, when ``gradients``, its d(loss)/d(logits) (softmax - onehot) in
    the compute dtype. At most two fp32 vocabulary-sized tensors exist at once: the logits and their
    log-softmax, whose buffer becomes the gradient."""
    logits = torch.nn.functional.linear(inputs, weight, bias)
    if softcap is not None:  # as Gemma 2 caps its logits: in the head's dtype, before the upcast
        logits = logits.div_(softcap).tanh_().mul_(softcap)
    logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    loss = -log_probs.gather(1, target).sum()
    if not gradients:
        return loss, None
    # Through the cap, d(cap * tanh(x / cap))/dx = 1 - (capped / cap)^2, built in the logits' buffer.
    slope = logits.div_(softcap).square_().neg_().add_(1) if softcap is not None else None
    del logits
    grad = log_probs.exp_()
    del log_probs  # the name only: the buffer goes with the cast to a 16-bit dtype below
    grad.scatter_add_(1, target, torch.full(target.shape, -1.0, device=grad.device))
    if slope is not None:
        grad.mul_(slope)
    return loss, grad.to(inputs.dtype)


class _PassThrough(torch.nn.Module):
    """Stands in for the output head during the forward pass: returns the hidden states it is
    given and notes the dtype the head would have computed in there (autocast's, or its own)."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        self.head_dtype = head.weight.dtype
        self.compute_dtype = head.weight.dtype

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device.type
        self.compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) \
            else self.head_dtype
        return hidden


def output_head(model: Any) -> Optional[torch.nn.Linear]:
    """The model's output head when the lean loss can stand in for it: a plain linear layer
    (not wrapped by an adapter). ``model`` may be a peft model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(base, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    return head if type(head) is torch.nn.Linear else None


@contextlib.contextmanager
def head_passed_through(model: Any) -> Iterator[tuple[torch.nn.Linear, _PassThrough, Optional[float]]]:
    """For the duration of the block the model's forward returns its last hidden states as
    "logits", with tanh soft-capping (Gemma 2's ``final_logit_softcapping``) set aside, since
    only the loss may apply it. Yields the real head, its stand-in and the soft-cap."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = output_head(model)
    name = next(name for name, module in base.named_modules() if module is head)
    parent_name, _, attribute = name.rpartition(".")
    parent = base.get_submodule(parent_name)
    stand_in = _PassThrough(head)
    config = base.config
    softcap = getattr(config, "final_logit_softcapping", None)
    setattr(parent, attribute, stand_in)
    if softcap is not None:
        config.final_logit_softcapping = None
    try:
        yield head, stand_in, softcap
    finally:
        setattr(parent, attribute, head)
        if softcap is not None:
            config.final_logit_softcapping = softcap


def model_loss(model: Any, head_owner: Any, inputs: dict[str, Any], labels: torch.Tensor,
               num_items_in_batch: Any = None) -> torch.Tensor:
    """``model(**inputs, labels=labels, num_items_in_batch=...)``'s loss, without the logits.
    ``model`` is what runs the forward (peft model, DDP wrapper); ``head_owner`` the unwrapped
    model whose head is passed through."""
    with head_passed_through(head_owner) as (head, stand_in, softcap):
        outputs = model(**inputs)
    hidden = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return head_cross_entropy(hidden, head, labels, compute_dtype=stand_in.compute_dtype,
                              num_items_in_batch=num_items_in_batch, softcap=softcap)
