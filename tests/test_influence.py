"""Tests for soul_bench.engine.influence: IU against closed-form Newton steps on convex models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from soul_bench.engine.influence import IU_DESCRIPTION, InfluenceUnlearning, iu_factory

LAM = 1e-2  # L2 strength of the logistic regression


# -- a convex model: L2-regularised logistic regression ------------------------------------


def _data(seed=0, d=6, n_r=120, n_f=12):
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    x_r = torch.randn(n_r, d, generator=g, dtype=torch.float64)
    y_r = (torch.rand(n_r, generator=g, dtype=torch.float64) < torch.sigmoid(x_r @ w_true)).double()
    # the forget set comes from a shifted distribution with flipped labels: clearly "other" data
    x_f = torch.randn(n_f, d, generator=g, dtype=torch.float64) + 1.0
    y_f = 1.0 - (torch.sigmoid(x_f @ w_true) > 0.5).double()
    return x_r, y_r, x_f, y_f


def _model(d, seed=1):
    torch.manual_seed(seed)
    return torch.nn.Linear(d, 1).double()


def _ce(model, x, y):
    return F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)


def _reg(model):
    return 0.5 * LAM * sum((p ** 2).sum() for p in model.parameters())


def _closures(model, x_r, y_r, x_f, y_f):
    forget = lambda: _ce(model, x_f, y_f)  # noqa: E731
    retain = lambda: _ce(model, x_r, y_r) + _reg(model)  # noqa: E731
    return forget, retain


def _flat(model):
    return torch.cat([model.weight.detach().reshape(-1), model.bias.detach().reshape(-1)])


def _fit(model, objective, iters=200):
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iters, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def _analytic(model, x_r, y_r, x_f, y_f):
    """g_F and H_R (= XᵀSX/n + λI) in the flattened (weight, bias) coordinates."""
    theta = _flat(model)
    xa_r = torch.cat([x_r, torch.ones(len(x_r), 1, dtype=x_r.dtype)], 1)
    xa_f = torch.cat([x_f, torch.ones(len(x_f), 1, dtype=x_f.dtype)], 1)
    s_r = torch.sigmoid(xa_r @ theta)
    h_r = xa_r.T @ (xa_r * (s_r * (1 - s_r))[:, None]) / len(x_r) + LAM * torch.eye(len(theta), dtype=theta.dtype)
    g_f = xa_f.T @ (torch.sigmoid(xa_f @ theta) - y_f) / len(x_f)
    return theta, g_f, h_r


@pytest.fixture
def problem():
    x_r, y_r, x_f, y_f = _data()
    model = _model(x_r.shape[1])
    # trained on everything (the "target" model): Σ_R ℓ + Σ_F ℓ + n_R·reg
    n_r = len(x_r)

    def full():
        ce = F.binary_cross_entropy_with_logits(model(torch.cat([x_r, x_f])).squeeze(-1), torch.cat([y_r, y_f]), reduction="sum")
        return (ce + n_r * _reg(model)) / n_r

    _fit(model, full)
    return model, (x_r, y_r, x_f, y_f)


# -- cg ------------------------------------------------------------------------------------


def test_analytic_hessian_matches_autograd(problem):
    # guards the reference the other tests compare against
    model, data = problem
    theta, _, h_r = _analytic(model, *data)
    x_r, y_r = data[0], data[1]

    def retain_of(flat):
        w, b = flat[:-1], flat[-1]
        return F.binary_cross_entropy_with_logits(x_r @ w + b, y_r) + 0.5 * LAM * (flat ** 2).sum()

    h_auto = torch.autograd.functional.hessian(retain_of, theta)
    torch.testing.assert_close(h_auto, h_r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale,damping", [(1.0, 1e-3), (0.25, 0.1)])
def test_cg_matches_closed_form_newton_step(problem, scale, damping):
    model, data = problem
    theta, g_f, h_r = _analytic(model, *data)
    expected = theta + scale * torch.linalg.solve(h_r + damping * torch.eye(len(theta), dtype=theta.dtype), g_f)

    opt = InfluenceUnlearning(model.parameters(), scale=scale, damping=damping, solver="cg", cg_iters=50, cg_tol=1e-12)
    diag = opt.unlearn(*_closures(model, *data))

    torch.testing.assert_close(_flat(model), expected, rtol=1e-8, atol=1e-10)
    assert diag["residual"] <= 1e-12
    assert 1 <= diag["cg_iters"] <= len(theta) + 2  # CG is exact in ≤ dim steps (up to rounding)
    assert diag["update_norm"] == pytest.approx(float((expected - theta).norm()), rel=1e-8)
    assert diag["negative_curvature"] is False
    assert diag["seconds"] >= 0.0
    assert all(p.grad is None for p in model.parameters())


def test_more_cg_iterations_reduce_residual(problem):
    model, data = problem
    start = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for iters in (1, 2, 4, 50):
        model.load_state_dict(start)
        opt = InfluenceUnlearning(model.parameters(), damping=1e-3, cg_iters=iters, cg_tol=0.0 if iters < 50 else 1e-12)
        diag = opt.unlearn(*_closures(model, *data))
        results[iters] = (diag, _flat(model))
    assert results[1][0]["cg_iters"] == 1 and results[4][0]["cg_iters"] == 4
    residuals = [results[i][0]["residual"] for i in (1, 2, 4, 50)]
    assert residuals == sorted(residuals, reverse=True) and residuals[0] > residuals[1] > residuals[2] > residuals[3]
    assert residuals[-1] < 1e-10 < 1e-2 < residuals[0]
    converged, one = results[50][1], results[1][1]
    assert (one - converged).norm() > 1e-2 * (converged - _flat_of(start)).norm()


def _flat_of(state):
    return torch.cat([state["weight"].reshape(-1), state["bias"].reshape(-1)])


def test_positive_scale_raises_forget_loss_more_than_it_moves_retain_loss(problem):
    model, data = problem
    x_r, y_r, x_f, y_f = data
    forget, retain = _closures(model, *data)
    with torch.no_grad():
        f0, r0 = float(forget()), float(_ce(model, x_r, y_r))
    InfluenceUnlearning(model.parameters(), scale=len(x_f) / len(x_r), damping=1e-4).unlearn(forget, retain)
    with torch.no_grad():
        f1, r1 = float(forget()), float(_ce(model, x_r, y_r))
    assert f1 > f0 + 0.05
    assert abs(r1 - r0) < 0.2 * (f1 - f0)


def test_newton_scale_is_a_newton_step_towards_the_retrained_model(problem):
    # at the joint optimum ∇L_R = −(n_F/n_R)·g_F, so with s = n_F/n_R the IU update is exactly one
    # Newton step θ − H_R⁻¹∇L_R on the retain objective, and it moves towards the retrained model
    model, data = problem
    x_r, y_r, x_f, y_f = data
    theta, _, h_r = _analytic(model, *data)
    _, retain = _closures(model, *data)
    g_r = torch.cat([g.reshape(-1) for g in torch.autograd.grad(retain(), list(model.parameters()))])
    newton = theta - torch.linalg.solve(h_r, g_r)
    retrained = _model(x_r.shape[1])
    _fit(retrained, lambda: _ce(retrained, x_r, y_r) + _reg(retrained))
    before = (theta - _flat(retrained)).norm()

    InfluenceUnlearning(model.parameters(), scale=len(x_f) / len(x_r), damping=1e-9, cg_iters=50, cg_tol=1e-12).unlearn(
        *_closures(model, *data))
    torch.testing.assert_close(_flat(model), newton, rtol=0, atol=1e-5 * float(before))
    assert (_flat(model) - _flat(retrained)).norm() < 0.5 * before


def test_quadratic_exact_and_grouped_hyperparameters():
    # L_R = ½ xᵀAx (A SPD), L_F = bᵀx: the update is s·(A+δI)⁻¹b per group-consistent system
    a = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.5]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x1 = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    x2 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    frozen = torch.ones(2, dtype=torch.float64, requires_grad=False)

    def vec():
        return torch.cat([x1, x2])

    opt = InfluenceUnlearning([{"params": [x1, frozen]}, {"params": [x2], "scale": 2.0, "damping": 0.5}],
                              scale=1.0, damping=0.1, cg_iters=10, cg_tol=1e-14)
    opt.unlearn(lambda: b @ vec(), lambda: 0.5 * vec() @ a @ vec())
    sol = torch.linalg.solve(a + torch.diag(torch.tensor([0.1, 0.1, 0.5], dtype=torch.float64)), b)
    torch.testing.assert_close(vec().detach(), sol * torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.equal(frozen, torch.ones(2, dtype=torch.float64))


def test_indefinite_hessian_is_flagged_and_stays_finite():
    a = torch.diag(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    diag = InfluenceUnlearning([x], damping=1e-3).unlearn(lambda: b @ x, lambda: 0.5 * x @ a @ x)
    assert diag["negative_curvature"] is True
    # one step along b with the absolute curvature |−1 + δ|
    torch.testing.assert_close(x.detach(), torch.tensor([1.0 / (1.0 - 1e-3), 0.0], dtype=torch.float64))


def test_negative_curvature_after_the_first_iteration_keeps_the_iterate():
    a = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    damping = 1e-3
    diag = InfluenceUnlearning([x], damping=damping).unlearn(lambda: b @ x, lambda: 0.5 * x @ a @ x)
    a_d = a + damping * torch.eye(2, dtype=torch.float64)
    first = b * (b @ b) / (b @ a_d @ b)  # the first CG iterate; the second direction is indefinite
    assert float(b @ a_d @ b) > 0
    assert diag["negative_curvature"] is True and diag["cg_iters"] == 2
    torch.testing.assert_close(x.detach(), first)
    assert diag["residual"] == pytest.approx(float((b - a_d @ first).norm() / b.norm()))


def test_zero_forget_gradient_is_a_no_op():
    x = torch.ones(3, requires_grad=True)
    diag = InfluenceUnlearning([x]).unlearn(lambda: (x * 0).sum(), lambda: (x ** 2).sum())
    assert diag["update_norm"] == 0.0 and diag["cg_iters"] == 0
    assert torch.equal(x.detach(), torch.ones(3))


# -- diag-fisher ---------------------------------------------------------------------------


def test_diag_fisher_matches_hand_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    xf, yf = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    xr, yr = torch.randn(5, 3, dtype=torch.float64), torch.tensor([1, 0, 1, 1, 0])
    forget = lambda: F.cross_entropy(lin(xf), yf)  # noqa: E731
    retain = lambda: F.cross_entropy(lin(xr), yr)  # noqa: E731
    params = list(lin.parameters())
    g_f = torch.autograd.grad(forget(), params)
    g_r = torch.autograd.grad(retain(), params)
    scale, damping = 0.7, 1e-2
    expected = [p.detach() + scale * gf / (gr * gr + damping) for p, gf, gr in zip(params, g_f, g_r)]

    diag = InfluenceUnlearning(lin.parameters(), scale=scale, damping=damping, solver="diag-fisher").unlearn(forget, retain)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e)
    assert diag["cg_iters"] == 0 and diag["residual"] == 0.0 and diag["solver"] == "diag-fisher"
    assert all(p.grad is None for p in params)


def test_diag_fisher_per_example_losses_use_the_empirical_fisher():
    torch.manual_seed(1)
    lin = torch.nn.Linear(3, 2).double()
    xf, yf = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    xr, yr = torch.randn(5, 3, dtype=torch.float64), torch.tensor([1, 0, 1, 1, 0])
    forget = lambda: F.cross_entropy(lin(xf), yf)  # noqa: E731
    retain = lambda: F.cross_entropy(lin(xr), yr, reduction="none")  # noqa: E731
    params = list(lin.parameters())
    g_f = torch.autograd.grad(forget(), params)
    per = [torch.autograd.grad(F.cross_entropy(lin(xr[i:i + 1]), yr[i:i + 1]), params) for i in range(3)]
    fisher = [sum(g[j] ** 2 for g in per) / 3 for j in range(len(params))]
    expected = [p.detach() + gf / (f + 1e-3) for p, gf, f in zip(params, g_f, fisher)]

    InfluenceUnlearning(lin.parameters(), solver="diag-fisher", fisher_samples=3).unlearn(forget, retain)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e)


# -- API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"damping": 0.0}, "damping"),
    ({"damping": -1.0}, "damping"),
    ({"damping": float("nan")}, "damping"),
    ({"scale": 0.0}, "scale"),
    ({"scale": float("inf")}, "scale"),
    ({"solver": "lissa"}, "cg, diag-fisher"),
    ({"cg_iters": 0}, "cg_iters"),
    ({"cg_iters": 2.5}, "cg_iters"),
    ({"cg_tol": -1e-3}, "cg_tol"),
    ({"fisher_samples": 0}, "fisher_samples"),
    ({"retain_samples": 0}, "retain_samples"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfluenceUnlearning([torch.zeros(2, requires_grad=True)], **kwargs)


def test_group_solver_must_agree():
    with pytest.raises(ValueError, match="solver"):
        InfluenceUnlearning([{"params": [torch.zeros(1, requires_grad=True)], "solver": "diag-fisher"},
                             {"params": [torch.zeros(1, requires_grad=True)]}])


def test_step_raises_and_class_is_one_shot():
    opt = InfluenceUnlearning([torch.zeros(2, requires_grad=True)])
    assert InfluenceUnlearning.one_shot is True
    with pytest.raises(RuntimeError, match="one-shot"):
        opt.step()


def test_factory_and_description():
    p = torch.zeros(2, requires_grad=True)
    opt = iu_factory([p], scale=0.5, solver="diag-fisher")
    assert isinstance(opt, InfluenceUnlearning)
    assert opt.defaults["scale"] == 0.5 and opt.defaults["solver"] == "diag-fisher"
    assert opt.defaults["damping"] == 1e-3 and opt.defaults["cg_iters"] == 20 and opt.defaults["cg_tol"] == 1e-6
    assert "influence" in IU_DESCRIPTION and isinstance(IU_DESCRIPTION, str)
    assert not math.isnan(opt.defaults["cg_tol"])


# -- the forget gradient covers the whole forget set --------------------------------------------


def test_forget_gradient_accumulated_over_weighted_batches_equals_the_whole_set(problem):
    import copy

    target, data = problem
    x_r, y_r, x_f, y_f = data
    whole, parts = copy.deepcopy(target), copy.deepcopy(target)
    forget, retain = _closures(whole, *data)
    InfluenceUnlearning(whole.parameters(), scale=0.5, damping=1e-2).unlearn(forget, retain)
    _, retain_parts = _closures(parts, *data)
    batches = [(lambda: _ce(parts, x_f[:5], y_f[:5]), 5 / 12), (lambda: _ce(parts, x_f[5:], y_f[5:]), 7 / 12)]
    diag = InfluenceUnlearning(parts.parameters(), scale=0.5, damping=1e-2).unlearn(batches, retain_parts)
    torch.testing.assert_close(_flat(parts), _flat(whole), rtol=1e-10, atol=1e-12)
    assert diag["forget_loss"] == pytest.approx(float(_ce(target, x_f, y_f).detach()), rel=1e-10)


class _GradientRecorder:
    """A one-shot updater that only records what run_one_shot hands it."""

    retain_samples = 8

    def unlearn(self, forget_parts, retain_loss_fn):
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.grads = [torch.zeros_like(p) for p in params]
        for loss_fn, weight in forget_parts:
            for acc, g in zip(self.grads, torch.autograd.grad(loss_fn(), params, allow_unused=True)):
                if g is not None:
                    acc.add_(g, alpha=weight)
        self.n_parts = len(forget_parts)
        return {}


def test_run_one_shot_uses_every_forget_sequence_and_the_retain_sample_size():
    from soul_bench.data import PromptFormat, collate, encode_examples
    from soul_bench.engine.loop import LoopSettings, run_one_shot
    from soul_bench.lm import mean_token_nll
    from soul_bench.models import build_tiny_llama, train_tokenizer

    rows = [{"question": f"What is fact {i}?", "answer": "It is " + "a fact " * (1 + i % 5)} for i in range(100)]
    tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], 300)
    model = build_tiny_llama(tokenizer, hidden_size=16, layers=1, heads=2, seed=0)
    encoded = encode_examples(tokenizer, PromptFormat(), rows)
    recorder = _GradientRecorder()
    recorder.model = model
    result = run_one_shot(model, recorder, encoded, encoded[:40], LoopSettings(batch_size=16, seed=0), tokenizer.pad_token_id)
    assert result.log[0]["forget_sequences"] == 100 and result.log[0]["retain_sequences"] == 8
    assert recorder.n_parts == 7  # ⌈100 / 16⌉ batches, not the first 64 sequences
    # Σ (token share)·∇CE(batch) = ∇ of the token-mean CE over all 100 sequences (answers differ in length)
    params = [p for p in model.parameters() if p.requires_grad]
    expected = torch.autograd.grad(mean_token_nll(model, collate(encoded, tokenizer.pad_token_id)), params)
    for got, want in zip(recorder.grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
