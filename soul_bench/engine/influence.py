"""IU: one-shot influence unlearning, a baseline in SOUL's comparisons.

The update, applied once (no training loop)::

    θ_new = θ + s · (H_R + δ·I)⁻¹ · g_F

* ``g_F = ∇_θ L_F``, ``L_F`` the mean loss over the forget set (so ``g_F = (1/n_F) Σ_F ∇ℓ``);
* ``H_R = ∇²_θ L_R``, ``L_R`` the mean loss over (a sample of) the retain set;
* ``δ > 0`` damping, ``s > 0`` the scale.

Why this direction: if θ minimises ``Σ_R ℓ + Σ_F ℓ``, the model retrained without F minimises
``Σ_R ℓ = n_R·L_R``, whose gradient at θ is ``−n_F·g_F``; one Newton step on it is
``θ + (n_F/n_R)·H_R⁻¹·g_F``. This is the influence-function estimate of removing F (Koh & Liang
2017, "Understanding Black-box Predictions via Influence Functions"), used as the "IU" baseline
by Jia et al. 2023 ("Model Sparsity Can Simplify Machine Unlearning", NeurIPS, code
``OPTML-Group/Unlearn-Sparse``, ``Wfisher.py``) and by SOUL (Jia et al. 2024), where the
inverse-Hessian-vector product is approximated with a WoodFisher (rank-one updates of the
empirical Fisher of the retain set) and the step is scaled by a tuned ``alpha`` -- our ``s``.
With ``s = n_F/n_R`` the step is exactly that Newton step; in practice ``s`` is tuned.
Positive ``s`` moves *up* the forget loss (``Δ L_F ≈ s·g_Fᵀ(H_R+δI)⁻¹g_F > 0``).

Solvers (``solver=``):

* ``"cg"`` (default) -- conjugate gradient on ``(H_R + δI) x = g_F`` with exact
  Hessian-vector products of the retain loss (double backward: the retain gradient is taken
  once with ``create_graph=True`` and each iteration differentiates ``⟨∇L_R, v⟩``). At most
  ``cg_iters`` iterations; stops when ``‖r‖/‖g_F‖ ≤ cg_tol``. All trainable parameters form one
  flattened vector (handled as a list of tensors); CG vectors are kept in float32 or wider.
  A non-convex ``H_R`` (any LLM) can make ``H_R + δI`` indefinite: when CG meets a direction
  ``p`` with ``pᵀ(H_R+δI)p ≤ 0`` it stops and keeps the current iterate (truncated Newton-CG,
  Nocedal & Wright Alg. 7.1); if that happens at the first iteration it steps along
  ``g_F`` with the *absolute* curvature (``x = g_F·‖g_F‖²/|g_Fᵀ(H_R+δI)g_F|``, as saddle-free
  Newton would). Either way the diagnostics say ``negative_curvature: True``. Raise
  ``damping`` to make the system positive definite.
  The retain forward runs with ``scaled_dot_product_attention`` routed to its math kernel
  (fused flash / memory-efficient kernels have no double backward).
  Cost: 2 forward/backward passes for the gradients + one double-backward HVP per iteration,
  and the retain graph (with its gradient graph) held in memory throughout.
* ``"diag-fisher"`` -- cheap approximation ``H_R ≈ diag(F) `` with ``F`` the empirical Fisher
  diagonal, i.e. ``x = g_F / (F + δ)`` element-wise; no HVPs, no double backward. If
  ``retain_loss_fn()`` returns a scalar, ``F = g_R ⊙ g_R`` (the squared gradient of the mean
  retain loss), averaged over ``fisher_samples`` calls of ``retain_loss_fn`` (useful when the
  closure samples a fresh retain batch per call; ``None`` = one call). If it returns a 1-D
  tensor of per-example losses, ``F = (1/m) Σ_i ∇ℓ_i ⊙ ∇ℓ_i`` over the first
  ``m = fisher_samples`` (``None`` = all) examples -- the true empirical Fisher diagonal, one
  backward per example. Note the squared *mean* gradient is roughly ``1/n`` of the
  per-example Fisher in noise-dominated coordinates, so ``δ`` and ``s`` do not transfer
  between the two forms. This is neither exact nor the WoodFisher of the original code; it is
  the diagonal analogue of it.

Closures: ``forget_loss_fn()`` / ``retain_loss_fn()`` return losses with graphs over the
current parameters, normally scalars. The engine (``run_one_shot``) passes the forget side as
one ``(closure, weight)`` pair per batch of the *whole* forget set (the gradients are
accumulated, so ``g_F`` is the gradient of the token-mean CE over every forget sequence) and
the retain side as the mean CE over a seeded sample of ``retain_samples`` sequences (default
64; one batch, because CG differentiates its gradient graph again at every iteration).
A 1-D per-example loss tensor is also accepted and averaged. Each closure is
called once (``retain_loss_fn`` ``fisher_samples`` times for a scalar ``diag-fisher``). Call
with the model in eval mode (no dropout) so the HVPs see one fixed function.

Per-group ``scale`` and ``damping`` are honoured (the damping term is block-diagonal, so CG
still solves one joint system); ``solver``, ``cg_iters``, ``cg_tol`` and ``fisher_samples``
must be the same for every group.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch

from soul_bench.lm import math_attention
from torch.optim import Optimizer

__all__ = ["InfluenceUnlearning", "iu_factory", "IU_DESCRIPTION", "SOLVERS"]

SOLVERS = ("cg", "diag-fisher")

IU_DESCRIPTION = "one-shot influence unlearning: θ + s·(H_retain+δI)⁻¹·∇L_forget (CG on HVPs)"

_GLOBAL_KEYS = ("solver", "cg_iters", "cg_tol", "fisher_samples", "retain_samples")


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"invalid {name}: {value!r} (need a positive number)")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid {name}: {value!r} (need a positive number)") from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"invalid {name}: {value} (need a finite number > 0)")
    return value


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"invalid {name}: {value!r} (need an integer >= {minimum})")
    return value


def _check_hparams(scale, damping, solver, cg_iters, cg_tol, fisher_samples, retain_samples=64) -> dict:
    if solver not in SOLVERS:
        raise ValueError(f"unknown IU solver {solver!r}; valid: {', '.join(SOLVERS)}")
    if isinstance(cg_tol, bool):
        raise ValueError(f"invalid cg_tol: {cg_tol!r} (need a finite number >= 0)")
    try:
        tol = float(cg_tol)
    except (TypeError, ValueError):
        raise ValueError(f"invalid cg_tol: {cg_tol!r} (need a finite number >= 0)") from None
    if not (math.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"invalid cg_tol: {cg_tol!r} (need a finite number >= 0)")
    return {
        "scale": _check_positive("scale", scale),
        "damping": _check_positive("damping", damping),
        "solver": solver,
        "cg_iters": _check_int("cg_iters", cg_iters, 1),
        "cg_tol": tol,
        "fisher_samples": None if fisher_samples is None else _check_int("fisher_samples", fisher_samples, 1),
        "retain_samples": _check_int("retain_samples", retain_samples, 1),
    }


def _dot(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(xs, ys))


def _norm(xs: list[torch.Tensor]) -> float:
    return math.sqrt(float(_dot(xs, xs)))


def _work_dtype(p: torch.Tensor) -> torch.dtype:
    return p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32


def _grads(loss: torch.Tensor, params: list[torch.Tensor], **kw) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def _as_scalar(loss: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(loss).__name__}")
    if loss.dim() == 0:
        return loss
    if loss.dim() == 1 and loss.numel() > 0:
        return loss.mean()
    raise ValueError(f"{what} must return a scalar or a 1-D tensor of per-example losses, got shape {tuple(loss.shape)}")


class InfluenceUnlearning(Optimizer):
    """One-shot influence unlearning (IU): ``θ ← θ + s·(H_R + δI)⁻¹·g_F``.

    ``g_F`` is the gradient of the mean forget loss, ``H_R`` the Hessian of the mean retain
    loss, ``δ`` the damping, ``s`` the scale. This is the influence-function estimate of
    removing the forget set (Koh & Liang 2017, "Understanding Black-box Predictions via
    Influence Functions"); Jia et al. 2023 ("Model Sparsity Can Simplify Machine Unlearning",
    ``OPTML-Group/Unlearn-Sparse``) use it as the IU baseline with a WoodFisher approximation
    of the inverse Hessian, and SOUL (Jia et al. 2024) compares against it.

    Solvers: ``"cg"`` -- conjugate gradient with exact Hessian-vector products of the retain
    loss (double backward), at most ``cg_iters`` iterations, relative-residual tolerance
    ``cg_tol``; ``"diag-fisher"`` -- ``H_R`` replaced by the empirical-Fisher diagonal (squared
    retain gradients), an element-wise division. See the module docstring for details,
    negative-curvature handling and cost.

    The engine calls :meth:`unlearn` once; :meth:`step` raises.
    """

    one_shot = True

    def __init__(self, params, scale: float = 1.0, damping: float = 1e-3, solver: str = "cg",
                 cg_iters: int = 20, cg_tol: float = 1e-6, fisher_samples: int | None = None, retain_samples: int = 64):
        defaults = _check_hparams(scale, damping, solver, cg_iters, cg_tol, fisher_samples, retain_samples)
        super().__init__(params, defaults)
        for group in self.param_groups:
            checked = _check_hparams(*(group[k] for k in ("scale", "damping", "solver", "cg_iters", "cg_tol", "fisher_samples",
                                                          "retain_samples")))
            group.update(checked)
            for key in _GLOBAL_KEYS:
                if group[key] != defaults[key]:
                    raise ValueError(f"IU: {key} must be the same for every parameter group "
                                     f"({group[key]!r} != {defaults[key]!r})")
        self.last_diagnostics: dict | None = None

    def step(self, closure=None):  # noqa: D401 - torch API
        raise RuntimeError("IU is one-shot: the engine calls unlearn(), not step()")

    # -- helpers -----------------------------------------------------------------------------

    def _trainable(self) -> tuple[list[torch.Tensor], list[float], list[float]]:
        params, scales, dampings = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    params.append(p)
                    scales.append(group["scale"])
                    dampings.append(group["damping"])
        return params, scales, dampings

    def _fisher_diag(self, retain_loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]):
        samples = self.defaults["fisher_samples"]
        dts = [_work_dtype(p) for p in params]
        fisher = [torch.zeros_like(p, dtype=dt) for p, dt in zip(params, dts)]
        first = retain_loss_fn()
        _as_scalar(first, "retain_loss_fn")  # validates the shape
        retain_value = float(first.detach().mean())
        if first.dim() == 1:  # per-example losses: true empirical Fisher diagonal
            m = first.numel() if samples is None else min(samples, first.numel())
            for i in range(m):
                gs = _grads(first[i], params, retain_graph=i < m - 1)
                for f, g, dt in zip(fisher, gs, dts):
                    f.addcmul_(g.to(dt), g.to(dt))
            count = m
        else:  # squared gradient of the mean retain loss, averaged over `samples` calls
            count = 1 if samples is None else samples
            loss = first
            for i in range(count):
                if i > 0:
                    loss = _as_scalar(retain_loss_fn(), "retain_loss_fn")
                gs = _grads(loss, params)
                for f, g, dt in zip(fisher, gs, dts):
                    f.addcmul_(g.to(dt), g.to(dt))
        for f in fisher:
            f.div_(count)
        return fisher, retain_value, count

    # -- the one-shot update -------------------------------------------------------------------

    @property
    def retain_samples(self) -> int:
        """How many retain sequences the engine puts in ``retain_loss_fn`` (the sample H_R is
        the Hessian of; its graph — with the gradient's graph — is held through the CG solve,
        so it is one batch). Default 64."""
        return self.defaults["retain_samples"]

    def unlearn(self, forget_loss_fn: Callable[[], torch.Tensor] | Sequence[tuple[Callable[[], torch.Tensor], float]],
                retain_loss_fn: Callable[[], torch.Tensor]) -> dict:
        """Apply ``θ ← θ + s·(H_R + δI)⁻¹·g_F`` once, in place.

        ``forget_loss_fn()`` / ``retain_loss_fn()`` return losses with graphs over the current
        parameters (scalars, or 1-D per-example losses that are averaged). ``forget_loss_fn``
        may also be a sequence of ``(loss_fn, weight)`` pairs, one per forget batch:
        ``g_F = Σ weight·∇loss_fn()``, one backward at a time — the engine passes every batch
        of the forget set with weight = its share of the set's answer tokens, so ``g_F`` is the
        gradient of the token-mean CE over the *whole* forget set at the memory of one batch. Solver ``"cg"``:
        conjugate gradient on retain-loss Hessian-vector products (double backward), at most
        ``cg_iters`` iterations, stopping at relative residual ``cg_tol``. Solver
        ``"diag-fisher"``: ``H_R ≈ diag(empirical Fisher of the retain loss)``. Gradients of
        all parameters are set to ``None`` afterwards.

        Returns diagnostics: ``cg_iters`` (iterations run; 0 for diag-fisher), ``residual``
        (final ‖(H_R+δI)x − g_F‖/‖g_F‖; 0.0 for diag-fisher, whose diagonal system is solved
        exactly), ``update_norm`` (‖θ_new − θ‖), ``seconds``, plus ``solver``,
        ``negative_curvature``, ``forget_loss`` / ``retain_loss`` (before the update),
        ``grad_norm`` (‖g_F‖) and ``num_params``.
        """
        t0 = time.perf_counter()
        solver = self.defaults["solver"]
        params, scales, dampings = self._trainable()
        if not params:
            raise ValueError("IU: no parameter requires grad")
        dts = [_work_dtype(p) for p in params]

        parts = [(forget_loss_fn, 1.0)] if callable(forget_loss_fn) else list(forget_loss_fn)
        if not parts:
            raise ValueError("IU: no forget batch")
        with torch.enable_grad():
            g_f = [torch.zeros_like(p, dtype=dt) for p, dt in zip(params, dts)]
            forget_value = 0.0
            for loss_fn, weight in parts:
                forget_loss = _as_scalar(loss_fn(), "forget_loss_fn")
                for acc, g in zip(g_f, _grads(forget_loss, params)):
                    acc.add_(g.detach().to(acc.dtype), alpha=float(weight))
                forget_value += float(weight) * float(forget_loss.detach())
                del forget_loss
            b_norm = _norm(g_f)

            negative = False
            iters = 0
            if solver == "diag-fisher":
                fisher, retain_value, _ = self._fisher_diag(retain_loss_fn, params)
                x = [g / (f + d) for g, f, d in zip(g_f, fisher, dampings)]
                residual = 0.0
            else:
                with math_attention():  # fused attention kernels have no double backward
                    retain_loss = _as_scalar(retain_loss_fn(), "retain_loss_fn")
                retain_value = float(retain_loss.detach())
                g_r = _grads(retain_loss, params, create_graph=True)
                # HVPs need a graph from every retain-gradient entry; parameters the retain loss
                # does not reach contribute zero curvature (only the damping acts on them).
                live = [i for i, g in enumerate(g_r) if g.requires_grad]

                def apply_a(v: list[torch.Tensor]) -> list[torch.Tensor]:
                    out = [d * vi for vi, d in zip(v, dampings)]
                    if live:
                        hv = torch.autograd.grad(
                            [g_r[i] for i in live], params,
                            grad_outputs=[v[i].to(params[i].dtype) for i in live],
                            retain_graph=True, allow_unused=True,
                        )
                        for i, h in enumerate(hv):
                            if h is not None:
                                out[i] = out[i] + h.detach().to(dts[i])
                    return out

                x = [torch.zeros_like(g) for g in g_f]
                if b_norm == 0.0:
                    residual = 0.0
                else:
                    r = [g.clone() for g in g_f]
                    p = [g.clone() for g in g_f]
                    rr = float(_dot(r, r))
                    residual = math.sqrt(rr) / b_norm
                    while iters < self.defaults["cg_iters"] and residual > self.defaults["cg_tol"]:
                        ap = apply_a(p)
                        pap = float(_dot(p, ap))
                        iters += 1
                        if not math.isfinite(pap):
                            raise FloatingPointError("IU: non-finite Hessian-vector product")
                        if pap <= 0.0:  # truncated Newton-CG (Nocedal & Wright, Alg. 7.1)
                            negative = True
                            if pap < 0.0 and iters == 1:  # no iterate yet: step with |curvature|
                                alpha = rr / -pap
                                for xi, pi, ri, api in zip(x, p, r, ap):
                                    xi.add_(pi, alpha=alpha)
                                    ri.sub_(api, alpha=alpha)  # r = b − A·x stays exact
                                residual = _norm(r) / b_norm
                            break
                        alpha = rr / pap
                        for xi, pi, ri, api in zip(x, p, r, ap):
                            xi.add_(pi, alpha=alpha)
                            ri.sub_(api, alpha=alpha)
                        rr_new = float(_dot(r, r))
                        residual = math.sqrt(rr_new) / b_norm
                        beta = rr_new / rr
                        rr = rr_new
                        for pi, ri in zip(p, r):
                            pi.mul_(beta).add_(ri)
                del g_r

        with torch.no_grad():
            sq = 0.0
            for p_, xi, s in zip(params, x, scales):
                delta = xi.mul(s)
                if not torch.isfinite(delta).all():
                    raise FloatingPointError("IU: non-finite update (try a larger damping)")
                sq += float((delta.double() ** 2).sum())
                p_.add_(delta.to(p_.dtype))
        for group in self.param_groups:
            for p_ in group["params"]:
                p_.grad = None

        diag = {
            "solver": solver,
            "cg_iters": iters,
            "residual": residual,
            "update_norm": math.sqrt(sq),
            "seconds": time.perf_counter() - t0,
            "negative_curvature": negative,
            "forget_loss": forget_value,
            "retain_loss": retain_value,
            "grad_norm": b_norm,
            "num_params": sum(p_.numel() for p_ in params),
        }
        self.last_diagnostics = diag
        return diag


def iu_factory(params, scale: float = 1.0, damping: float = 1e-3, solver: str = "cg",
               cg_iters: int = 20, cg_tol: float = 1e-6, fisher_samples: int | None = None,
               retain_samples: int = 64) -> InfluenceUnlearning:
    """Registry factory for optimiser ``iu`` (see :class:`InfluenceUnlearning`)."""
    return InfluenceUnlearning(params, scale=scale, damping=damping, solver=solver, cg_iters=cg_iters,
                               cg_tol=cg_tol, fisher_samples=fisher_samples, retain_samples=retain_samples)
