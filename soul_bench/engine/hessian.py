"""The contract between the engine and second-order optimisers.

The engine never asks an optimiser's name. Any optimiser that has a ``wants_hessian(step)``
method is called, on the steps it asks for, with a :class:`HessianProbe` for the current
batch; it runs whatever extra forward/backward its estimator needs and updates its own
state. The probe offers the two losses the estimators of Sophia (Liu et al. 2023, arXiv
2305.14342, §2.3: Gauss-Newton-Bartlett and Hutchinson) need.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from soul_bench.lm import answer_mask, sampled_label_nll


class HessianProbe:
    """What an optimiser may evaluate on the current batch to refresh its Hessian estimate.

    ``loss_fn()``: the unlearning loss itself (a scalar with a graph; call ``backward`` or
    ``torch.autograd.grad(..., create_graph=True)`` on it for Hessian-vector products).

    ``sampled_nll_fn()``: Gauss-Newton-Bartlett's loss — cross-entropy of the model's logits
    against labels *sampled from the model's own softmax* at every supervised position of the
    batch, mean over those positions.

    ``n_terms``: how many terms that mean runs over — the number of supervised *tokens* of the
    batch, not of sequences. With L̂ = (1/N)·Σ_t ℓ_t(ŷ_t) and independent draws ŷ_t,
    E[∇L̂ ∇L̂ᵀ] = (1/N²)·Σ_t J_tᵀ(diag p_t − p_t p_tᵀ)J_t = (1/N)·GN(L) for the token-mean
    loss L, so N·(∇L̂ ⊙ ∇L̂) is an unbiased estimate of the Gauss-Newton diagonal of L (the
    official ``train_sophiag.py`` multiplies by batch × block tokens for the same reason).
    Scaling by sequences instead shrinks the estimate by the answer length.

    ``average(estimates)``: averages a list of per-parameter estimates (``None`` entries
    skipped) in place over the data-parallel processes, each of which probed its own share of
    the batch, so every process folds the same ĥ into its state; nothing in one process.
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], sampled_nll_fn: Callable[[], torch.Tensor], n_terms: int,
                 average: Callable[[list], None] | None = None):
        self.loss_fn = loss_fn
        self.sampled_nll_fn = sampled_nll_fn
        self.n_terms = int(n_terms)
        self.average = average or (lambda estimates: None)

    @classmethod
    def for_batch(cls, model, batch: dict[str, torch.Tensor], loss_fn: Callable[[], torch.Tensor],
                  average: Callable[[list], None] | None = None) -> "HessianProbe":
        """The probe of a labelled batch: GNB samples at its supervised positions, and
        ``n_terms`` = the number of those positions (the tokens the sampled-label mean runs over)."""
        n_tokens = int(answer_mask(batch["labels"]).sum())
        return cls(loss_fn, lambda: sampled_label_nll(model, batch), n_terms=n_tokens, average=average)

    def loss(self) -> torch.Tensor:
        return self.loss_fn()

    def sampled_nll(self) -> torch.Tensor:
        return self.sampled_nll_fn()


@runtime_checkable
class HessianRefreshing(Protocol):
    """An optimiser that wants a Hessian refresh on some steps (Sophia-style)."""

    def wants_hessian(self, step: int) -> bool: ...

    def update_hessian(self, probe: HessianProbe) -> None: ...
