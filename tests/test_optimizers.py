"""Tests for soul_bench.engine.optimizers: hand-computed updates, estimator statistics, registry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from soul_bench.engine.hessian import HessianProbe, HessianRefreshing
from soul_bench.engine.optimizers import (
    OPTIMIZERS,
    Sophia,
    SoulSophia,
    build_optimizer,
    optimizer_defaults,
)


def _set_state(opt, p, exp_avg, hessian):
    opt.state[p] = {
        "step": torch.tensor(0.0),
        "exp_avg": torch.tensor(exp_avg, dtype=p.dtype),
        "hessian": torch.tensor(hessian, dtype=p.dtype),
    }


def _no_probe_loss():
    raise AssertionError("this estimator must not evaluate this loss")


# -- Sophia: one step by hand -----------------------------------------------------------------


def test_sophia_one_step_by_hand():
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0], dtype=torch.float64))
    opt = Sophia([theta], lr=0.1, betas=(0.5, 0.9), rho=0.5, weight_decay=0.2, eps=1e-12, bias_correction=False)
    _set_state(opt, theta, exp_avg=[0.2, 0.0, 0.4, -1.0, 0.2], hessian=[4.0, 1.0, 0.0, 2.0, -1.0])
    theta.grad = torch.tensor([1.0, -0.4, 2.0, -3.0, 0.4], dtype=torch.float64)
    opt.step()
    # m   = 0.5*m0 + 0.5*g   = [0.1+0.5, 0-0.2, 0.2+1.0, -0.5-1.5, 0.1+0.2] = [0.6, -0.2, 1.2, -2.0, 0.3]
    # decay: theta*(1-0.1*0.2) = theta*0.98 = [0.98, -1.96, 0.49, 2.94, 0.98]
    # max(rho*h, eps)        = [2, 0.5, 1e-12, 1, 1e-12]   (rho*h = -0.5 < eps for coord 4)
    # m / that               = [0.3, -0.4, 1.2e12, -2, 3e11]  -> clamp -> [0.3, -0.4, 1, -1, 1]
    #   (coords 0,1 unclipped; 2 clipped with h = 0; 3 clipped with h > 0; 4 negative
    #    curvature -> sign step, not a step uphill as m / (rho*h + eps) would give)
    # theta -= 0.1*ratio     = [0.98-0.03, -1.96+0.04, 0.49-0.1, 2.94+0.1, 0.98-0.1]
    expected = [0.95, -1.92, 0.39, 3.04, 0.88]
    assert theta.detach().tolist() == pytest.approx(expected, abs=1e-12)
    assert opt.state[theta]["exp_avg"].tolist() == pytest.approx([0.6, -0.2, 1.2, -2.0, 0.3], abs=1e-12)
    assert opt.state[theta]["hessian"].tolist() == [4.0, 1.0, 0.0, 2.0, -1.0]  # step never touches h
    assert float(opt.state[theta]["step"]) == 1.0
    assert opt.step_stats() == {"unclipped_fraction": pytest.approx(2 / 5)}  # coords 0 and 1


def _deterministic_refresh(opt, theta, a):
    """One refresh whose 'sampled' loss is (a·θ): ĥ = n_terms·a² exactly."""
    opt.update_hessian(HessianProbe(_no_probe_loss, lambda: (a * theta).sum(), n_terms=1))


@pytest.mark.parametrize("bias_correction, expected_theta, expected_unclipped", [
    # h = 0.1·ĥ = [0.4, 0.1] → ĥ_r = h/(1−0.9) = [4, 1]; m = 0.5·g = [0.5, −2] → m̂ = m/(1−0.5) = [1, −4]
    # ratio = m̂/(ρ·ĥ_r) = [1/2, −4/0.5] = [0.5, −8] → clamp [0.5, −1] → θ = [1 − 0.05, −2 + 0.1]
    (True, [0.95, -1.9], 0.5),
    # official rule: ratio = m/(ρ·h) = [0.5/0.2, −2/0.05] = [2.5, −40] → both clipped → sign step
    (False, [0.9, -1.9], 0.0),
])
def test_sophia_bias_correction_by_hand(bias_correction, expected_theta, expected_unclipped):
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = Sophia([theta], lr=0.1, betas=(0.5, 0.9), rho=0.5, bias_correction=bias_correction)
    _deterministic_refresh(opt, theta, torch.tensor([2.0, 1.0], dtype=torch.float64))  # ĥ = [4, 1]
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([0.4, 0.1])  # the stored EMA is raw
    theta.grad = torch.tensor([1.0, -4.0], dtype=torch.float64)
    opt.step()
    assert theta.detach().tolist() == pytest.approx(expected_theta, abs=1e-12)
    assert opt.step_stats()["unclipped_fraction"] == expected_unclipped


def test_sophia_bias_corrected_curvature_is_the_average_of_the_estimates():
    # Two refreshes ĥ = 4 then ĥ = 16 with β2 = 0.9: raw EMA h = 0.9·(0.1·4) + 0.1·16 = 1.96;
    # corrected: 1.96 / (1 − 0.81) = 10.315…, the β2-weighted mean of 4 and 16 (0.9·4 + 16)/1.9.
    theta = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    opt = Sophia([theta], lr=1.0, betas=(0.0, 0.9), rho=1.0)
    _deterministic_refresh(opt, theta, torch.tensor([2.0], dtype=torch.float64))
    _deterministic_refresh(opt, theta, torch.tensor([4.0], dtype=torch.float64))
    theta.grad = torch.tensor([1.0], dtype=torch.float64)  # β1 = 0: m̂ = g = 1 → step = 1/10.315…
    opt.step()
    assert float(theta.detach()) == pytest.approx(-1.9 / (0.9 * 4 + 16), rel=1e-12)


def test_sophia_sign_descent_before_first_refresh_and_per_group_lr():
    a = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    b = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = Sophia([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], betas=(0.9, 0.99))
    a.grad = torch.tensor([3.0, -1e-6])
    b.grad = torch.tensor([-2.0, 5.0])
    opt.step()
    # h = 0 -> ratio saturates -> theta -= lr*sign(m), whatever |g| is
    assert a.detach().tolist() == pytest.approx([0.9, 1.1], abs=1e-7)
    assert b.detach().tolist() == pytest.approx([1.01, 0.99], abs=1e-7)


def test_sophia_skips_params_without_grad():
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([2.0]))
    opt = Sophia([a, b], lr=0.1, weight_decay=0.5)
    a.grad = torch.tensor([1.0])
    opt.step()
    assert b.item() == 2.0  # no grad: no decay, no state
    assert b not in opt.state


def test_wants_hessian_schedule():
    opt = Sophia([torch.nn.Parameter(torch.zeros(1))], hessian_interval=3)
    assert [s for s in range(10) if opt.wants_hessian(s)] == [0, 3, 6, 9]
    assert isinstance(opt, HessianRefreshing)
    with pytest.raises(ValueError, match="hessian_interval"):
        Sophia([torch.nn.Parameter(torch.zeros(1))], hessian_interval=0)
    with pytest.raises(ValueError, match="estimator"):
        Sophia([torch.nn.Parameter(torch.zeros(1))], estimator="bfgs")


# -- Sophia: Hessian EMA ------------------------------------------------------------------------


def test_sophia_hessian_ema_from_zeros():
    theta = torch.nn.Parameter(torch.tensor([0.7, -0.2]))
    frozen = torch.nn.Parameter(torch.tensor([1.0]), requires_grad=False)
    unused = torch.nn.Parameter(torch.tensor([5.0]))
    opt = Sophia([theta, frozen, unused], betas=(0.9, 0.99))
    a = torch.tensor([1.0, -3.0])
    # deterministic "sampled" loss: grad = a, so h_hat = B*a*a = 2*[1, 9] = [2, 18]
    probe = HessianProbe(_no_probe_loss, lambda: (a * theta).sum(), n_terms=2)
    theta.grad = torch.tensor([9.0, 9.0])  # stale gradient must not leak into the estimate
    with torch.no_grad():  # the engine may call it under no_grad
        opt.update_hessian(probe)
    # h = 0.99*0 + 0.01*[2, 18]
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([0.02, 0.18], rel=1e-6)
    assert opt.state[unused]["hessian"].tolist() == [0.0]  # not reached by the loss: h_hat = 0
    assert frozen not in opt.state
    assert theta.grad is None and unused.grad is None
    opt.update_hessian(probe)
    # h = 0.99*[0.02, 0.18] + 0.01*[2, 18] = [0.0198+0.02, 0.1782+0.18]
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([0.0398, 0.3582], rel=1e-6)
    assert theta.grad is None


def _softmax_probe(W, X, gen):
    """Linear-logit softmax model z_b = W x_b; labels sampled from the model; mean CE."""

    def sampled_nll():
        logits = X @ W.T
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
        return F.cross_entropy(logits, y)

    return HessianProbe(_no_probe_loss, sampled_nll, n_terms=X.shape[0])


def _average_estimates(opt, p, probe, n):
    # betas[1] = 0 makes h exactly the latest estimate h_hat
    total = torch.zeros_like(p)
    for _ in range(n):
        opt.update_hessian(probe)
        total += opt.state[p]["hessian"]
    return total / n


@pytest.mark.parametrize(
    "X",
    [
        [[1.0, -2.0]],  # one sequence, one position
        [[1.0, -2.0], [0.5, 1.5], [-1.0, 0.3]],  # B = 3: checks the batch_size factor
    ],
)
def test_gnb_matches_gauss_newton_diagonal(X):
    X = torch.tensor(X, dtype=torch.float64)
    W = torch.nn.Parameter(torch.tensor([[0.5, -0.3], [0.1, 0.8], [-0.6, 0.2]], dtype=torch.float64))
    opt = Sophia([W], betas=(0.9, 0.0), estimator="gnb")
    gen = torch.Generator().manual_seed(1234)
    est = _average_estimates(opt, W, _softmax_probe(W, X, gen), n=4000)
    # closed form: Gauss-Newton diagonal of the mean CE over the B rows,
    # GN[i, j] = (1/B) * sum_b x_bj^2 * p_bi * (1 - p_bi)
    with torch.no_grad():
        P = torch.softmax(X @ W.T, dim=-1)  # (B, classes)
        gn = (P * (1 - P)).T @ (X**2) / X.shape[0]
    rel = ((est - gn).abs() / gn).max().item()
    assert rel < 0.1, (est, gn)


def test_gnb_closed_form_single_example_by_hand():
    # x = [1, -2], W = 0 -> p = 1/3 each; GN[i, j] = x_j^2 * (1/3)(2/3) = x_j^2 * 2/9
    # -> column 0: 2/9 = 0.2222, column 1: 4*2/9 = 0.8889
    X = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    W = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    opt = Sophia([W], betas=(0.9, 0.0))
    gen = torch.Generator().manual_seed(7)
    est = _average_estimates(opt, W, _softmax_probe(W, X, gen), n=4000)
    expected = torch.tensor([[2 / 9, 8 / 9]] * 3, dtype=torch.float64)
    assert ((est - expected).abs() / expected).max().item() < 0.1


# -- Hutchinson ---------------------------------------------------------------------------------

_A = torch.tensor([[4.0, 1.0, -2.0], [1.0, 3.0, 0.5], [-2.0, 0.5, 2.0]], dtype=torch.float64)


def _quadratic_setup():
    theta = torch.nn.Parameter(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    lin = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))  # enters linearly: H = 0
    unused = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    probe = HessianProbe(lambda: 0.5 * theta @ _A @ theta + 3.0 * lin.sum(), _no_probe_loss, n_terms=1)
    opt = Sophia([theta, lin, unused], betas=(0.9, 0.0), estimator="hutchinson")
    return theta, lin, unused, probe, opt


def test_hutchinson_converges_to_diag_of_quadratic():
    torch.manual_seed(0)
    theta, lin, unused, probe, opt = _quadratic_setup()
    diag = torch.diagonal(_A)  # [4, 3, 2]
    # RMS error of 10-sample averages over 50 independent trials vs one 2000-sample average
    err10 = torch.stack(
        [(_average_estimates(opt, theta, probe, 10) - diag).norm() for _ in range(50)]
    ).square().mean().sqrt().item()
    err2000 = (_average_estimates(opt, theta, probe, 2000) - diag).norm().item()
    # Rademacher: var of u_i (A u)_i = sum_{j != i} A_ij^2 -> expected RMS ~ sqrt(11.5 / n)
    assert err10 > 0.5
    assert err2000 < 0.2
    assert err2000 < err10 / 5
    assert opt.state[lin]["hessian"].tolist() == [0.0]
    assert opt.state[unused]["hessian"].tolist() == [0.0]
    assert theta.grad is None and lin.grad is None


def test_hutchinson_single_estimate_is_u_times_Au():
    # For a diagonal A, u ⊙ (A u) = diag(A) exactly, whatever the Rademacher draw.
    theta = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    D = torch.tensor([5.0, 0.25], dtype=torch.float64)
    probe = HessianProbe(lambda: 0.5 * (D * theta * theta).sum(), _no_probe_loss, n_terms=1)
    opt = Sophia([theta], betas=(0.9, 0.5), estimator="hutchinson")
    opt.update_hessian(probe)
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([2.5, 0.125])  # 0.5 * D


# -- Sophia end to end --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sophia-h", "sophia"])
def test_sophia_decreases_ill_conditioned_quadratic(name):
    torch.manual_seed(0)
    A = torch.tensor([[100.0, 0.5], [0.5, 1.0]])  # condition number ~ 100
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0]))

    def loss_fn():
        return 0.5 * theta @ A @ theta

    # GNB needs a sampled loss; stand in a random one whose gradient is sqrt(diag A) * (±1),
    # so that B * g * g = diag(A) (B = 1), like a Gauss-Newton sample.
    sq = torch.sqrt(torch.diagonal(A))

    def sampled_nll():
        s = torch.randint(0, 2, (2,)).float() * 2 - 1
        return (s * sq * theta).sum()

    probe = HessianProbe(loss_fn, sampled_nll, n_terms=1)
    opt = build_optimizer(name, [theta], lr=0.05, rho=1.0, betas=(0.9, 0.9), hessian_interval=2)
    start = loss_fn().item()
    for step in range(150):
        if opt.wants_hessian(step):
            opt.update_hessian(probe)
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    end = loss_fn().item()
    assert end < 1e-2 * start, (start, end)


# -- SoulSophia ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faithful, expected_theta, expected_m",
    [
        # m = b1^2*m0 + (1-b1^2)*g = 0.25*[1, 0, 0.2] + 0.75*[0.5, -1, 0] = [0.625, -0.75, 0.05]
        # |m|/(rho*B*h + 1e-15) = [0.625/1.625, 0.75/1.25, 0.05/1e-15] = [5/13, 0.6, 5e13 -> 1]
        # theta = [0.99 - 0.1*5/13, -0.99 + 0.1*0.6, 0.495 - 0.1*1]
        (True, [0.99 - 0.5 / 13, -0.93, 0.395], [0.625, -0.75, 0.05]),
        # m = b1*m0 + (1-b1)*g = 0.5*[1, 0, 0.2] + 0.5*[0.5, -1, 0] = [0.75, -0.5, 0.1]
        # |m|/(...) = [0.75/1.625, 0.5/1.25, 1e14 -> 1] = [6/13, 0.4, 1]
        # theta = [0.99 - 0.1*6/13, -0.99 + 0.04, 0.495 - 0.1]
        (False, [0.99 - 0.6 / 13, -0.95, 0.395], [0.75, -0.5, 0.1]),
    ],
)
def test_soul_sophia_one_step_by_hand(faithful, expected_theta, expected_m):
    theta = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64))
    opt = SoulSophia([theta], lr=0.1, betas=(0.5, 0.75), rho=0.5, weight_decay=0.1,
                     batch_constant=4, faithful_double_momentum=faithful)
    _set_state(opt, theta, exp_avg=[1.0, 0.0, 0.2], hessian=[1.0, 0.5, 0.0])
    theta.grad = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    # h = 0.75*h0 + 0.25*g^2 = [0.75+0.0625, 0.375+0.25, 0] = [0.8125, 0.625, 0]
    # (rho*B = 2 -> rho*B*h = [1.625, 1.25, 0]); decay: theta*(1 - 0.1*0.1) = [0.99, -0.99, 0.495]
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([0.8125, 0.625, 0.0], abs=1e-12)
    assert opt.state[theta]["exp_avg"].tolist() == pytest.approx(expected_m, abs=1e-12)
    assert theta.detach().tolist() == pytest.approx(expected_theta, abs=1e-12)
    # second step: h refreshed again from the new gradient, no probe involved
    theta.grad = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    opt.step()
    # h = 0.75*[0.8125, 0.625, 0] + 0.25*[1, 0, 0] = [0.609375+0.25, 0.46875, 0]
    assert opt.state[theta]["hessian"].tolist() == pytest.approx([0.859375, 0.46875, 0.0], abs=1e-12)
    assert float(opt.state[theta]["step"]) == 2.0


def test_soul_sophia_first_step_from_zeros_is_sign_like():
    # fresh state, g = [0.02, -3]: h = 0.05*g^2 = [2e-5, 0.45]; m = 0.19*g = [0.0038, -0.57]
    # rho*B*h = 0.04*5120*h = [0.004096, 92.16]; |m|/that = [0.927734375, 0.0061848958]
    # theta = [0, 0] - 1e-2*[0.927734375, -0.0061848958] (wd 0.1 acts on theta = 0: no effect)
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = SoulSophia([theta], lr=1e-2)  # defaults: betas (0.9, 0.95), rho 0.04, B 5120
    theta.grad = torch.tensor([0.02, -3.0], dtype=torch.float64)
    opt.step()
    assert theta.detach().tolist() == pytest.approx([-0.00927734375, 0.000061848958], rel=1e-8)


def test_soul_sophia_has_no_hessian_hook():
    opt = SoulSophia([torch.nn.Parameter(torch.zeros(1))])
    assert not hasattr(opt, "wants_hessian")
    assert not isinstance(opt, HessianRefreshing)


# -- registry -----------------------------------------------------------------------------------


def test_registry_names_and_types():
    assert set(OPTIMIZERS) == {"adamw", "sgd", "sophia", "sophia-h", "soul", "iu"}
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer("adamw", p), torch.optim.AdamW)
    sgd = build_optimizer("sgd", p)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    s = build_optimizer("sophia", p)
    assert isinstance(s, Sophia) and s.estimator == "gnb" and s.hessian_interval == 10
    assert build_optimizer("sophia-h", p).estimator == "hutchinson"
    soul = build_optimizer("soul", p, betas=[0.8, 0.9])
    assert isinstance(soul, SoulSophia) and soul.param_groups[0]["betas"] == (0.8, 0.9)
    for name, (_, description) in OPTIMIZERS.items():
        assert isinstance(description, str) and description and "\n" not in description


def test_optimizer_defaults():
    assert optimizer_defaults("soul") == {
        "lr": 1e-5, "betas": (0.9, 0.95), "rho": 0.04, "weight_decay": 0.1,
        "batch_constant": 5120, "faithful_double_momentum": True,
    }
    assert optimizer_defaults("sophia") == {
        "lr": 1e-5, "betas": (0.965, 0.99), "rho": 0.04, "weight_decay": 0.0,
        "eps": 1e-12, "hessian_interval": 10, "bias_correction": True,
    }
    assert optimizer_defaults("sophia-h") == optimizer_defaults("sophia")
    assert optimizer_defaults("sgd")["momentum"] == 0.9
    assert "lr" in optimizer_defaults("adamw")


def test_build_optimizer_errors():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"unknown optimizer 'nope'; valid: adamw, iu, sgd, sophia, sophia-h, soul"):
        build_optimizer("nope", p)
    with pytest.raises(ValueError, match=r"unknown optimizer"):
        optimizer_defaults("nope")
    with pytest.raises(ValueError, match=r"'gamma'.*'sophia'.*valid: .*rho.*hessian_interval"):
        build_optimizer("sophia", p, gamma=2e4)
    with pytest.raises(ValueError, match=r"'estimator'"):  # fixed by the name
        build_optimizer("sophia-h", p, estimator="gnb")
    with pytest.raises(ValueError, match="beta"):
        build_optimizer("soul", p, betas=(1.0, 0.9))


# -- state_dict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sophia", "sophia-h", "soul"])
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    y = torch.randint(0, 2, (5,))

    def loss_fn(m):
        return F.cross_entropy(m(x), y)

    def groups(m):
        return [{"params": [m[0].weight, m[2].weight]}, {"params": [m[0].bias, m[2].bias], "lr": 0.003}]

    def run(m, opt, steps, start):
        for step in range(start, start + steps):
            if hasattr(opt, "wants_hessian") and opt.wants_hessian(step):
                probe = HessianProbe(lambda: loss_fn(m), lambda: loss_fn(m), n_terms=5)
                torch.manual_seed(step)
                opt.update_hessian(probe)
            opt.zero_grad()
            loss_fn(m).backward()
            opt.step()

    kw = dict(lr=0.01) if name == "soul" else dict(lr=0.01, hessian_interval=2)
    opt = build_optimizer(name, groups(model), **kw)
    run(model, opt, 3, 0)

    clone = copy.deepcopy(model)
    opt2 = build_optimizer(name, groups(clone), **kw)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.param_groups[1]["lr"] == 0.003
    run(model, opt, 4, 3)
    run(clone, opt2, 4, 3)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), clone.parameters()):
        for key in ("exp_avg", "hessian"):
            assert torch.equal(opt.state[a][key], opt2.state[b][key])


# -- weight decay groups ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adamw", "sophia", "soul"])
def test_weight_decay_spares_biases_and_norm_weights_by_default(name):
    from soul_bench.engine.optimizers import weight_decay_groups

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(name, weight_decay_groups(model), lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient signal: only the decay can move a weight
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["0.weight"].detach(), before["0.weight"] * (1 - 0.1 * 0.5))  # decoupled decay
    for one_d in ("0.bias", "1.weight", "1.bias"):
        torch.testing.assert_close(after[one_d].detach(), before[one_d])
    # the option puts everything in one decayed group
    groups = weight_decay_groups(model, decay_biases_and_norms=True)
    assert len(groups) == 1 and len(groups[0]["params"]) == 4 and "weight_decay" not in groups[0]
