"""The three curvature estimates Sophia-style optimisers can use, side by side.

On a linear-softmax model z = W·x with cross-entropy, the Hessian with respect to W does not
depend on the label and equals the Gauss-Newton matrix / Fisher information:
    diag H[i, j] = x_j² · p_i (1 − p_i).
So, in expectation, GNB (squared gradient of the loss at labels sampled from the model,
``sophia``) and Hutchinson (u ⊙ H·u, ``sophia-h``) coincide with it. SOUL's estimate (the
squared gradient of the loss at the TRUE label, ``soul``) is the empirical Fisher
    (p_i − 1[i = y])² · x_j²,
which differs whenever the model is not sure of the true label.
"""

import pytest
import torch
import torch.nn.functional as F

from soul_bench.engine.hessian import HessianProbe
from soul_bench.engine.optimizers import build_optimizer

X = torch.tensor([1.0, -2.0, 0.5])
TRUE_LABEL = 2
DRAWS = 4000  # one-parameter-tensor model: cheap


@pytest.fixture()
def weight():
    torch.manual_seed(0)
    return torch.nn.Parameter(torch.randn(4, 3) * 0.5)


def closed_form(weight):
    p = torch.softmax(weight.detach() @ X, dim=0)
    return torch.outer(p * (1 - p), X * X)


def probe_for(weight):
    def loss():
        return F.cross_entropy((weight @ X).unsqueeze(0), torch.tensor([TRUE_LABEL]))

    def sampled_nll():
        logits = (weight @ X).unsqueeze(0)
        label = torch.multinomial(torch.softmax(logits.detach(), dim=-1), 1).squeeze(-1)
        return F.cross_entropy(logits, label)

    return HessianProbe(loss, sampled_nll, n_terms=1)


def mean_estimate(name, weight):
    """Average of many single refreshes (β2 = 0, so h is exactly the last estimate)."""
    optimizer = build_optimizer(name, [weight], lr=1e-3, betas=(0.9, 0.0))
    probe, total = probe_for(weight), torch.zeros_like(weight)
    torch.manual_seed(1)
    for _ in range(DRAWS):
        optimizer.update_hessian(probe)
        total += optimizer.state[weight]["hessian"]
    return total / DRAWS


def soul_estimate(weight):
    optimizer = build_optimizer("soul", [weight], lr=0.0, betas=(0.9, 0.0))
    weight.grad = torch.autograd.grad(probe_for(weight).loss(), weight)[0]
    optimizer.step()
    return optimizer.state[weight]["hessian"].clone()


def test_gnb_and_hutchinson_coincide_with_the_exact_hessian(weight, one_thread):
    exact = closed_form(weight)
    gnb, hutchinson = mean_estimate("sophia", weight), mean_estimate("sophia-h", weight)
    torch.testing.assert_close(gnb, exact, rtol=0.12, atol=0.01)
    # Hutchinson is unbiased for diag(H) whatever the label; H here is the exact Hessian
    torch.testing.assert_close(hutchinson, exact, rtol=0.12, atol=0.01)


def test_soul_squared_gradient_is_the_empirical_fisher_and_differs(weight):
    p = torch.softmax(weight.detach() @ X, dim=0)
    onehot = F.one_hot(torch.tensor(TRUE_LABEL), 4).float()
    empirical = torch.outer((p - onehot) ** 2, X * X)  # (p_i − 1[i=y])² x_j²
    soul = soul_estimate(weight)
    torch.testing.assert_close(soul, empirical, rtol=1e-5, atol=1e-7)
    assert (soul - closed_form(weight)).abs().max() > 0.1  # not the Hessian: the model is unsure of y


def test_soul_and_gnb_agree_when_the_model_is_certain(weight, one_thread):
    with torch.no_grad():  # make the model put ~all mass on the true label: p → one-hot, both → 0
        weight.zero_()
        weight[TRUE_LABEL] = torch.tensor([20.0, -20.0, 0.0])  # logit 60 for the true class
    torch.testing.assert_close(soul_estimate(weight), closed_form(weight), atol=1e-6, rtol=0)
    torch.testing.assert_close(mean_estimate("sophia", weight), closed_form(weight), atol=1e-6, rtol=0)


# -- the engine's probe on a small sequence model, several answer tokens per sequence ------------
# The sampled-label loss is a mean over the N supervised *tokens* of the batch, so N·(∇L̂)² is
# unbiased for the Gauss-Newton diagonal of the token-mean loss; scaling by the number of
# sequences instead (the old code) shrinks it by the answer length. The model is a two-layer
# causal LM small enough for exact diagonals by brute force (a Llama would do the same, slowly).

VOCAB, WIDTH = 12, 6


class TinyCausalLM(torch.nn.Module):
    """logits_t = W_out · tanh(W_in · (E[x_t] + ½·E[x_{t−1}]) + b): enough context and
    non-linearity for a Hessian with off-diagonal and negative entries."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH).double()
        self.hidden = torch.nn.Linear(WIDTH, WIDTH).double()
        self.out = torch.nn.Linear(WIDTH, VOCAB, bias=False).double()
        with torch.no_grad():
            self.out.weight.mul_(3.0)  # a sharper output distribution than at initialisation

    def forward(self, input_ids, attention_mask=None):
        e = self.embed(input_ids)
        context = e + 0.5 * torch.nn.functional.pad(e, (0, 0, 1, 0))[:, :-1]
        return type("Output", (), {"logits": self.out(torch.tanh(self.hidden(context)))})()


def _labelled_batch():
    from soul_bench.data import IGNORE_INDEX, collate

    # two "prompt + answer" sequences of different lengths: prompt masked, padding on the right
    rows = [([1, 4, 5, 6, 7, 8, 9, 2], [IGNORE_INDEX] * 3 + [6, 7, 8, 9, 2]),
            ([1, 3, 10, 11, 2], [IGNORE_INDEX] * 2 + [10, 11, 2])]
    return collate(rows, pad_id=0)


def _exact_gauss_newton_diagonal(model, batch, params):
    """diag GN of the token-mean CE: (1/N)·Σ_t [Σ_v p_tv·J_tv² − (Σ_v p_tv·J_tv)²], J_tv = ∂z_tv/∂θ."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    z = logits[batch["labels"][:, 1:] != -100]  # (N, V) logits at the supervised positions
    p = torch.softmax(z.detach(), dim=-1)
    diag = [torch.zeros_like(q) for q in params]
    for t in range(z.shape[0]):
        first = [torch.zeros_like(q) for q in params]
        for v in range(VOCAB):
            for d, f, j in zip(diag, first, torch.autograd.grad(z[t, v], params, retain_graph=True)):
                d.add_(p[t, v] * j * j)
                f.add_(p[t, v] * j)
        for d, f in zip(diag, first):
            d.sub_(f * f)
    return [d / z.shape[0] for d in diag]


def _exact_hessian_diagonal(loss_fn, params):
    """diag ∇²L coordinate by coordinate (one second derivative per coordinate)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    diag = []
    for k, g in enumerate(grads):
        flat, d = g.reshape(-1), torch.zeros(g.numel(), dtype=g.dtype)
        for i in range(g.numel()):
            d[i] = torch.autograd.grad(flat[i], params[k], retain_graph=True)[0].reshape(-1)[i]
        diag.append(d.reshape(g.shape))
    return diag


@pytest.fixture()
def one_thread():
    """Thousands of tiny backward passes: thread hand-offs would cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mean_refresh(optimizer, probe, params, draws):
    total = [torch.zeros_like(q) for q in params]
    for _ in range(draws):
        optimizer.update_hessian(probe)
        for acc, q in zip(total, params):
            acc.add_(optimizer.state[q]["hessian"])
    return [acc / draws for acc in total]


def _relative_error(estimate, exact):
    num = sum(float(((e - x) ** 2).sum()) for e, x in zip(estimate, exact))
    return (num / sum(float((x ** 2).sum()) for x in exact)) ** 0.5


def test_gnb_mean_matches_the_exact_gauss_newton_diagonal_over_tokens(one_thread):
    from soul_bench.lm import mean_token_nll

    model, batch = TinyCausalLM(), _labelled_batch()
    params = list(model.parameters())
    exact = _exact_gauss_newton_diagonal(model, batch, params)
    probe = HessianProbe.for_batch(model, batch, lambda: -mean_token_nll(model, batch))
    assert probe.n_terms == 8  # supervised tokens (5 + 3), not the 2 sequences
    optimizer = build_optimizer("sophia", params, betas=(0.9, 0.0), bias_correction=False)  # h = the last ĥ
    torch.manual_seed(1)
    mean = _mean_refresh(optimizer, probe, params, draws=800)
    total_ratio = sum(float(m.sum()) for m in mean) / sum(float(x.sum()) for x in exact)
    assert total_ratio == pytest.approx(1.0, abs=0.03)   # the old per-sequence scale gives 2/8 = 0.25
    assert _relative_error(mean, exact) < 0.08           # 0.035–0.041 over seeds 1–3 (Monte-Carlo noise)


def test_hutchinson_mean_matches_the_exact_hessian_diagonal(one_thread):
    from soul_bench.lm import mean_token_nll

    model, batch = TinyCausalLM(), _labelled_batch()
    params = [model.hidden.weight, model.hidden.bias]
    for q in model.parameters():
        q.requires_grad_(any(q is r for r in params))
    shifted = {**batch, "labels": torch.where(batch["labels"] == -100, -100, (batch["labels"] + 1) % VOCAB)}

    def loss():  # GradDiff-shaped: ascend on one labelling, descend on another
        return -mean_token_nll(model, batch) + 2.0 * mean_token_nll(model, shifted)

    exact = _exact_hessian_diagonal(loss, params)
    assert any(bool((x < 0).any()) for x in exact) and any(bool((x > 0).any()) for x in exact)
    optimizer = build_optimizer("sophia-h", params, betas=(0.9, 0.0), bias_correction=False)
    torch.manual_seed(2)
    mean = _mean_refresh(optimizer, HessianProbe.for_batch(model, batch, loss), params, draws=800)
    assert _relative_error(mean, exact) < 0.08           # 0.035–0.045 over seeds 1–3
