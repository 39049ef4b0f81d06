"""Token-level likelihood helpers shared by the engine (losses) and the evaluator (metrics)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from soul_bench.data import IGNORE_INDEX


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq-1) bool: which next-token positions are supervised (position t predicts
    labels[:, t+1]); the prompt and padding are IGNORE_INDEX. Its sum is the number of tokens a
    token-mean loss averages over."""
    return labels[:, 1:] != IGNORE_INDEX


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of ``labels`` under next-token ``logits``.

    Returns (nll, mask), both (batch, seq-1): position t scores labels[:, t+1]; mask is 1 on
    supervised (answer) positions. Computed in float32 whatever the model dtype.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = answer_mask(labels)
    safe_labels = shift_labels.masked_fill(~mask, 0)
    nll = F.cross_entropy(shift_logits.transpose(1, 2), safe_labels, reduction="none")
    return nll * mask, mask


def sequence_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum NLL per sequence, answer-token count per sequence, logits) for a labelled batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum(dim=1), mask.sum(dim=1), logits


def mean_token_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy averaged over every answer token of the batch (the usual LM loss, CE)."""
    total, count, _ = sequence_nll(model, batch)
    return total.sum() / count.sum().clamp(min=1)


def sampled_label_nll(model, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """CE of the logits against labels drawn from the model's own softmax at the batch's
    supervised positions (the Gauss-Newton-Bartlett loss). No gradient flows through the draw."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].float()
    mask = answer_mask(batch["labels"])
    with torch.no_grad():
        probs = torch.softmax(shift_logits[mask], dim=-1)
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return F.cross_entropy(shift_logits[mask], sampled)


def math_attention():
    """Route ``scaled_dot_product_attention`` to its plain (math) kernel.

    The flash / memory-efficient kernels (CPU and CUDA) implement no double backward, so a
    Hessian-vector product through a model using ``attn_implementation="sdpa"`` fails with
    "derivative for aten::_scaled_dot_product_flash_attention..._backward is not implemented".
    The math kernel is made of differentiable ops and gives the same values. Wrap the *forward*
    whose graph will be differentiated twice.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: nothing to route
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])
