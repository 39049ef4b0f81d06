"""Optimisers for unlearning: first order (AdamW, SGD) and Sophia-style second order.

Two second-order optimisers live here:

* :class:`Sophia` -- the optimiser of Liu et al. 2023 ("Sophia: A Scalable Stochastic
  Second-order Optimizer for Language Model Pre-training", arXiv 2305.14342), which SOUL
  (Jia et al. 2024, "SOUL: Unlocking the Power of Second-Order Optimization for LLM
  Unlearning", arXiv 2404.18239) proposes for unlearning. Its diagonal Hessian is refreshed
  every k steps through the engine's :class:`~soul_bench.engine.hessian.HessianProbe`
  (Gauss-Newton-Bartlett or Hutchinson estimator).
* :class:`SoulSophia` -- what SOUL's released code (``OPTML-Group/SOUL``,
  ``src/optim/sophia.py``, class ``SophiaG``) really runs: the "Hessian" is an EMA of the
  squared training gradient, refreshed inside every ``step``, and the momentum EMA is applied
  twice per step. Kept separate so the paper can be reproduced beside the official Sophia.

The engine never asks an optimiser's name: it calls ``wants_hessian(step)`` /
``update_hessian(probe)`` on any optimiser that has them (see ``hessian.py``).
:class:`SoulSophia` has no ``wants_hessian``, so the engine treats it like AdamW.

At the bottom, :data:`OPTIMIZERS` maps names to factories, :func:`build_optimizer` builds one
with validated hyper-parameters and :func:`optimizer_defaults` lists the defaults a run
record should store.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable, Sequence

import torch
from torch.optim import Optimizer

from soul_bench.engine.hessian import HessianProbe
from soul_bench.engine.hparams import check_types

__all__ = [
    "Sophia",
    "SoulSophia",
    "OPTIMIZERS",
    "build_optimizer",
    "optimizer_defaults",
    "weight_decay_groups",
]

_ESTIMATORS = ("gnb", "hutchinson")


def _check_betas(betas: Sequence[float]) -> tuple[float, float]:
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"invalid beta parameter at index {i}: {b} (need 0 <= beta < 1)")
    return betas  # type: ignore[return-value]


def _check_nonneg(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"invalid {name}: {value} (need >= 0)")
    return value


def _count(value) -> float:
    """A count summed over parameters: a number, a tensor, or (FSDP) a DTensor summed over shards."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


class Sophia(Optimizer):
    r"""Sophia (Liu et al. 2023), clipped diagonal-Newton update with a lazily refreshed Hessian.

    Per parameter θ with gradient g, state m (EMA of gradients) and h (EMA of diagonal
    Hessian estimates, zeros until the first refresh), t = steps taken, r = refreshes done::

        on refresh steps:   h ← β2·h + (1−β2)·ĥ                            (update_hessian)
        every step:         m ← β1·m + (1−β1)·g
                            m̂ = m / (1−β1^t),  ĥ_r = h / (1−β2^r)          (bias_correction)
                            θ ← θ·(1 − lr·wd)                               (decoupled decay)
                            θ ← θ − lr·clamp( m̂ / max(ρ·ĥ_r, ε), −1, 1 )   (element-wise)

    Coordinates with tiny or negative curvature (Hutchinson can give ĥ < 0) are clipped to a
    sign step. :meth:`step_stats` reports the fraction of coordinates whose last update was
    *not* clipped (``unclipped_fraction``, the engine logs it per step): at 0 the optimiser
    is sign-momentum descent and no curvature was used.

    **Bias correction** (``bias_correction=True``, the default here; the official ``SophiaG``
    has none): unlearning runs are short (tens of steps, a few refreshes), so without it the
    EMAs never warm up — after r refreshes with β2 = 0.99, h holds only 1−0.99^r (1 % after
    the first, 3 % after three) of the curvature estimate, ρ·h is that much too small and
    essentially every coordinate is clipped; m likewise starts at (1−β1)·g. Dividing both by
    their warm-up factors, as Adam does, makes h the average of the estimates so far and the
    comparison with AdamW (which corrects both) one of curvature, not of warm-up. Together
    with the refresh on step 0 (``wants_hessian(0)`` is True) no step runs on h = 0.
    ``bias_correction=False`` is the official rule (for pre-training runs of 10⁵ steps the two
    coincide after a few hundred steps).

    Estimators of ĥ (``estimator``), both computed on the probe of the current batch:

    * ``"gnb"`` -- Gauss-Newton-Bartlett: L̂ = cross-entropy against labels sampled from the
      model's own softmax (``probe.sampled_nll()``, mean over the N supervised tokens);
      ĥ = N·∇L̂⊙∇L̂ with N = ``probe.n_terms`` (tokens, not sequences: see
      :class:`~soul_bench.engine.hessian.HessianProbe`). Unbiased for the Gauss-Newton
      diagonal of the token-mean loss.
    * ``"hutchinson"`` -- u ~ Rademacher, ĥ = u ⊙ (∇²L·u) with L = ``probe.loss()`` (the
      unlearning loss itself) via a double backward. Unbiased for diag(∇²L).

    What GNB estimates when the unlearning loss is not a likelihood (GA's −CE, NPO's
    softplus of a log-ratio): the sampled-label loss does not depend on the objective at
    all — ĥ is the Gauss-Newton / Fisher diagonal of the model's *predictive distribution*
    on the step's forget + retain inputs. For GA the true Hessian of −CE is −(that matrix)
    plus a residual term, i.e. negative curvature the clipped step could not use anyway; so
    GNB acts as a positive-definite preconditioner measuring how sensitive the output
    distribution is to each weight: steps shrink where the model's predictions move most.
    That is the choice the Sophia paper makes for any LM loss, and the one `sophia` keeps;
    `sophia-h` (Hutchinson on the unlearning loss itself) and `soul` (squared gradients of
    the unlearning loss) are the objective-aware alternatives.

    Compared with the official implementation (``Liuhong99/Sophia``, ``sophia.py`` and
    ``train_sophiag.py``): there h stores the EMA of the raw squared sampled gradient and the
    token factor enters the step as ``|m| / (ρ·bs·h + 1e-15)`` clamped at 1 with bs = batch ×
    block tokens; here the factor N is folded into ĥ (the same number, N counting the
    supervised tokens of the probe batch) and the denominator is ``max(ρ·h, ε)`` as in the
    paper. Its training script also clips the sampled gradient and uses the refresh iteration
    *instead of* a training step; neither is done here.

    ``wants_hessian(step)`` is True when ``step % hessian_interval == 0``, so step 0 refreshes
    too: the official script first refreshes after k−1 steps, which makes the first k steps
    pure sign descent (h = 0), a different optimiser from the one the paper analyses.

    The engine calls ``update_hessian`` on the steps ``wants_hessian`` asks for; every
    parameter's ``.grad`` is ``None`` when it returns (call it before the training backward
    of that step, or after ``step()``). Only parameters with ``requires_grad`` count;
    parameters the probe's loss does not reach get ĥ = 0. ``hessian_interval``,
    ``estimator`` and ``bias_correction`` are optimiser-wide; ``lr``, ``betas``, ``rho``,
    ``weight_decay``, ``eps`` may differ per param group.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-5,
        betas: Sequence[float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
        hessian_interval: int = 10,
        estimator: str = "gnb",
        bias_correction: bool = True,
    ):
        lr = _check_nonneg("learning rate", lr)
        betas = _check_betas(betas)
        rho = _check_nonneg("rho", rho)
        weight_decay = _check_nonneg("weight_decay", weight_decay)
        eps = _check_nonneg("eps", eps)
        if int(hessian_interval) != hessian_interval or hessian_interval < 1:
            raise ValueError(f"invalid hessian_interval: {hessian_interval!r} (need an integer >= 1)")
        if estimator not in _ESTIMATORS:
            raise ValueError(f"unknown Hessian estimator {estimator!r}; valid: {', '.join(_ESTIMATORS)}")
        self.hessian_interval = int(hessian_interval)
        self.estimator = estimator
        self.bias_correction = bool(bias_correction)
        self._unclipped: float | None = None
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps)
        super().__init__(params, defaults)

    # -- state ------------------------------------------------------------------------------
    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian_refreshes"] = 0
        return state

    def _trainable(self) -> list[tuple[dict, torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.requires_grad]

    # -- the engine's hook ------------------------------------------------------------------
    def wants_hessian(self, step: int) -> bool:
        """True on steps 0, k, 2k, ... (k = ``hessian_interval``)."""
        return step % self.hessian_interval == 0

    def update_hessian(self, probe: HessianProbe) -> None:
        """Refresh h ← β2·h + (1−β2)·ĥ from one estimate on the probe's batch."""
        pairs = self._trainable()
        if not pairs:
            return
        params = [p for _, p in pairs]
        # torch.autograd.grad never accumulates into .grad, so a stale .grad cannot leak in.
        with torch.enable_grad():
            if self.estimator == "gnb":
                estimates = self._gnb(probe, params)
            else:
                estimates = self._hutchinson(probe, params)
                probe.average(estimates)  # linear in the loss: the processes' mean is the global batch's
        with torch.no_grad():
            for (group, p), h_hat in zip(pairs, estimates):
                beta2 = group["betas"][1]
                state = self._state(p)
                state["hessian_refreshes"] = state.get("hessian_refreshes", 0) + 1
                h = state["hessian"]
                h.mul_(beta2)
                if h_hat is not None:
                    h.add_(h_hat.to(h.dtype), alpha=1.0 - beta2)
        for p in params:
            p.grad = None

    @staticmethod
    def _gnb(probe: HessianProbe, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
        loss = probe.sampled_nll()
        grads = probe.gradients(loss, params)  # (averaged over data-parallel processes: the global batch's)
        scale = float(probe.n_terms)  # tokens the sampled-label mean runs over
        return [None if g is None else g.detach().square().mul_(scale) for g in grads]

    @staticmethod
    def _hutchinson(probe: HessianProbe, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
        with math_attention():  # fused attention kernels have no double backward
            loss = probe.loss()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # Parameters the loss does not reach, or reaches only linearly (a gradient with no
        # graph), have zero Hessian rows.
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        out: list[torch.Tensor | None] = [None] * len(params)
        if not live:
            return out
        us = [torch.randint(0, 2, params[i].shape, device=params[i].device).to(params[i].dtype).mul_(2).sub_(1) for i in live]
        hvps = torch.autograd.grad(
            [grads[i] for i in live], [params[i] for i in live], grad_outputs=us, allow_unused=True
        )
        for i, u, hu in zip(live, us, hvps):
            if hu is not None:
                out[i] = u * hu.detach()
        return out

    # -- the update -------------------------------------------------------------------------
    def step_stats(self) -> dict:
        """What the last ``step`` did: ``unclipped_fraction``, the share of moving coordinates
        (m ≠ 0) with |m̂| < ρ·ĥ — the ones whose step used the curvature (the rest took
        lr·sign(m))."""
        return {} if self._unclipped is None else {"unclipped_fraction": self._unclipped}

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        unclipped, total = 0, 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, rho, wd, eps = group["lr"], group["rho"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Sophia does not support sparse gradients")
                state = self._state(p)
                state["step"] += 1
                m, h = state["exp_avg"], state["hessian"]
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                numerator, curvature = m, h
                if self.bias_correction:
                    numerator = m / (1.0 - beta1 ** float(state["step"]))
                    if state.get("hessian_refreshes", 0) > 0:
                        curvature = h / (1.0 - beta2 ** state["hessian_refreshes"])
                ratio = numerator / (curvature * rho).clamp(min=eps)
                moving = numerator != 0  # coordinates that move at all (unused embedding rows do not)
                unclipped = unclipped + ((ratio.abs() < 1.0) & moving).sum()  # tensors: one device sync per step
                total = total + moving.sum()
                p.add_(ratio.clamp_(-1.0, 1.0), alpha=-lr)
        unclipped, total = _count(unclipped), _count(total)
        self._unclipped = unclipped / total if total else None
        return loss


class SoulSophia(Optimizer):
    r"""SOUL's own Sophia variant -- what ``SophiaG`` in OPTML-Group/SOUL's code runs.

    From the gradient g already in ``.grad`` (in SOUL: the accumulated, globally clipped
    gradient of the unlearning loss -- the engine does the clipping), every step::

        h ← β2·h + (1−β2)·g⊙g                      (EMA of squared gradients, k = 1)
        m ← β1·m + (1−β1)·g                         (applied twice if faithful_double_momentum,
                                                     i.e. m ← β1²·m + (1−β1²)·g)
        θ ← θ·(1 − lr·wd)
        θ ← θ − lr·sign(m)·min( |m| / (ρ·B·h + 1e-15), 1 )      B = batch_constant

    Read from ``OPTML-Group/SOUL`` ``src/optim/sophia.py`` (commit 30f7a41): ``step()`` first
    calls ``update_hessian()`` (h from the squared ``.grad``), then ``update_exp_avg()`` (the
    first m EMA), then per tensor ``param.mul_(1 - lr*wd)``, a second
    ``exp_avg.mul_(beta1).add_(grad, 1-beta1)`` and ``ratio = (|m| / (rho*bs*h +
    1e-15)).clamp(None, 1)``; ``param.addcmul_(sign(m), ratio, value=-lr)``. So the step uses
    the *new* h (already containing this step's g²) and the doubly-updated m; ``bs`` is the
    default argument 5120 since HF Trainer calls ``step()`` without it. Their
    ``create_sophia_optimizer`` puts biases and LayerNorm weights in a group with weight_decay
    0 (the engine does the same: :func:`weight_decay_groups`). The TOFU
    configs use betas (0.9, 0.95), rho 0.04, wd 0.1; their CLI default rho is 0.03.

    With h ≈ g² the ratio is |m|/(ρ·B·g²), which is ≥ 1 for most coordinates once the
    gradient is clipped to norm 1 on a large model: the update is then close to
    lr·sign(m) (sign-momentum descent). There is no ``wants_hessian``: the engine treats it as
    a first-order optimiser.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-5,
        betas: Sequence[float] = (0.9, 0.95),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        batch_constant: float = 5120,
        faithful_double_momentum: bool = True,
    ):
        defaults = dict(
            lr=_check_nonneg("learning rate", lr),
            betas=_check_betas(betas),
            rho=_check_nonneg("rho", rho),
            weight_decay=_check_nonneg("weight_decay", weight_decay),
            batch_constant=_check_nonneg("batch_constant", batch_constant),
            faithful_double_momentum=bool(faithful_double_momentum),
        )
        super().__init__(params, defaults)
        self._unclipped: float | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        unclipped, total = 0, 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, rho, wd = group["lr"], group["rho"], group["weight_decay"]
            scale = rho * group["batch_constant"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SoulSophia does not support sparse gradients")
                g = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, h = state["exp_avg"], state["hessian"]
                h.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                if group["faithful_double_momentum"]:
                    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                ratio = m.abs() / (h * scale + 1e-15)
                moving = m != 0
                unclipped = unclipped + ((ratio < 1.0) & moving).sum()
                total = total + moving.sum()
                p.addcmul_(m.sign(), ratio.clamp_(max=1.0), value=-lr)
        unclipped, total = _count(unclipped), _count(total)
        self._unclipped = unclipped / total if total else None
        return loss

    def step_stats(self) -> dict:
        """``unclipped_fraction``: share of moving coordinates (m ≠ 0) of the last step with |m| < ρ·B·h (see
        :meth:`Sophia.step_stats`); near 0 on real models, where the update is sign descent."""
        return {} if self._unclipped is None else {"unclipped_fraction": self._unclipped}


from soul_bench.engine.influence import IU_DESCRIPTION, iu_factory  # noqa: E402  (registry below)
from soul_bench.lm import math_attention  # noqa: E402

# -- registry ------------------------------------------------------------------------------


def _adamw(params, lr: float = 1e-5, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01, amsgrad: bool = False):
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def _sgd(params, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)


def _sophia(params, lr: float = 1e-5, betas=(0.965, 0.99), rho: float = 0.04, weight_decay: float = 0.0, eps: float = 1e-12,
            hessian_interval: int = 10, bias_correction: bool = True):
    return Sophia(params, lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps,
                  hessian_interval=hessian_interval, estimator="gnb", bias_correction=bias_correction)


def _sophia_h(params, lr: float = 1e-5, betas=(0.965, 0.99), rho: float = 0.04, weight_decay: float = 0.0, eps: float = 1e-12,
              hessian_interval: int = 10, bias_correction: bool = True):
    return Sophia(params, lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps,
                  hessian_interval=hessian_interval, estimator="hutchinson", bias_correction=bias_correction)


OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], str]] = {
    "adamw": (_adamw, "AdamW (torch.optim.AdamW), decoupled weight decay"),
    "sgd": (_sgd, "SGD with momentum (torch.optim.SGD, momentum 0.9)"),
    "sophia": (_sophia, "Sophia (Liu et al. 2023), Gauss-Newton-Bartlett Hessian every k steps"),
    "sophia-h": (_sophia_h, "Sophia (Liu et al. 2023), Hutchinson Hessian of the unlearning loss every k steps"),
    "soul": (SoulSophia, "SOUL's SophiaG as released: EMA of squared gradients every step, sign-like clipped update"),
    "iu": (iu_factory, IU_DESCRIPTION),
}


def _factory(name: str) -> Callable[..., Optimizer]:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name][0]


def optimizer_defaults(name: str) -> dict:
    """The default hyper-parameters of optimiser ``name`` (read from its factory's signature)."""
    sig = inspect.signature(_factory(name))
    out = {}
    for pname, prm in list(sig.parameters.items())[1:]:  # skip params
        if prm.default is inspect.Parameter.empty or prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        out[pname] = tuple(prm.default) if isinstance(prm.default, (list, tuple)) else prm.default
    return out


def weight_decay_groups(model: torch.nn.Module, decay_biases_and_norms: bool = False) -> list[dict]:
    """The model's trainable parameters as optimiser param groups: matrices (≥ 2-D: linear
    layers, embeddings, LoRA factors) decay; 1-D tensors — biases and norm weights — get
    ``weight_decay = 0``, as HF's Trainer (``get_decay_parameter_names``) and SOUL's
    ``create_sophia_optimizer`` (nanoGPT's rule: ``p.dim() >= 2`` decays) do. Shrinking a norm
    gain towards 0 rescales a whole layer's output, which is not the regularisation weight
    decay is meant to be. ``decay_biases_and_norms=True`` puts everything in one group."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if decay_biases_and_norms:
        return [{"params": trainable}]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    return [group for group in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if group["params"]]


def build_optimizer(name: str, params, **hparams) -> Optimizer:
    """Build optimiser ``name`` over ``params`` (tensors or param-group dicts).

    Unknown names and unknown hyper-parameters raise ``ValueError`` listing the valid ones;
    list-valued ``betas`` (as YAML gives them) become tuples.
    """
    factory = _factory(name)
    valid = optimizer_defaults(name)
    for key in hparams:
        if key not in valid:
            raise ValueError(
                f"unknown hyper-parameter {key!r} for optimizer {name!r}; valid: {', '.join(valid)}"
            )
    check_types(name, valid, hparams)
    if isinstance(hparams.get("betas"), list):
        hparams["betas"] = tuple(hparams["betas"])
    return factory(params, **hparams)
