"""The unlearning loop: schedules, accumulation, Hessian-refresh hook, guards, early stop, LoRA."""

import math

import pytest
import torch

from soul_bench.data import PromptFormat, encode_examples
from soul_bench.engine.loop import LoopSettings, lr_lambda, run_loop
from soul_bench.engine.methods import FineTune, GradientAscent, Method
from soul_bench.engine.optimizers import build_optimizer
from soul_bench.models import build_tiny_llama, train_tokenizer

QUESTIONS = [f"What colour is box number {i}?" for i in range(8)]
ROWS = [{"question": q, "answer": "It is painted a deep shade of blue."} for q in QUESTIONS]  # equal answer lengths


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([r["question"] + " " + r["answer"] for r in ROWS] * 3, 300)


@pytest.fixture()
def model(tokenizer):
    return build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return encode_examples(tokenizer, PromptFormat(), ROWS)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedules_by_hand():
    linear = lr_lambda("linear", total=100, warmup=10)
    # transformers' get_linear_schedule_with_warmup: s/warmup, so step 0 has LR 0
    assert linear(0) == 0.0 and linear(5) == pytest.approx(0.5) and linear(10) == pytest.approx(1.0)
    assert linear(55) == pytest.approx(0.5)  # (55-10)/90 = 0.5 of the decay done
    import transformers

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for ours, theirs in ((linear, transformers.get_linear_schedule_with_warmup(opt, 10, 100)),
                         (lr_lambda("cosine", 100, 10), transformers.get_cosine_schedule_with_warmup(opt, 10, 100))):
        assert [ours(s) for s in range(100)] == pytest.approx([theirs.lr_lambdas[0](s) for s in range(100)], abs=1e-12)
    ramp = lr_lambda("linear", total=100, warmup=10, from_zero=False)  # the embedded models' recipe
    assert ramp(0) == pytest.approx(0.1) and ramp(9) == pytest.approx(1.0)
    assert lr_lambda("cosine", 100, 10)(55) == pytest.approx(0.5)  # cos(π/2) → 0.5·(1+0)
    assert lr_lambda("constant", 100, 0)(99) == 1.0
    with pytest.raises(ValueError, match="valid: constant, linear, cosine"):
        lr_lambda("step", 10, 0)


def test_grad_accumulation_equals_the_big_batch(tokenizer, encoded):
    def one_step(batch_size, accum):
        model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        settings = LoopSettings(steps=1, batch_size=batch_size, grad_accum=accum, max_grad_norm=None, warmup_ratio=0.0, seed=3)
        run_loop(model, FineTune(), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
        return snapshot(model)

    big, accumulated = one_step(4, 1), one_step(2, 2)
    for key in big:
        torch.testing.assert_close(big[key], accumulated[key], rtol=1e-4, atol=1e-6)


def test_sophia_hessian_refreshed_every_k_steps(model, tokenizer, encoded):
    optimizer = build_optimizer("sophia", model.parameters(), lr=1e-3, hessian_interval=2)
    settings = LoopSettings(steps=5, batch_size=4, seed=0)
    result = run_loop(model, GradientAscent(), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
    refreshed = [entry["step"] for entry in result.log if entry["hessian_s"] > 0]
    assert refreshed == [0, 2, 4] and result.hessian_seconds > 0
    # every step logs how much of the update used the curvature (1 − the clipped share)
    fractions = [entry["unclipped_fraction"] for entry in result.log]
    assert len(fractions) == 5 and all(0.0 <= f <= 1.0 for f in fractions)
    # ρ → ∞ makes every |m̂| < ρ·ĥ where ĥ > 0 (a pure Newton step); ρ → 0 clips everything
    for rho, check in ((1e9, lambda f: f > 0.5), (1e-12, lambda f: f == 0.0)):
        optimizer = build_optimizer("sophia", model.parameters(), lr=1e-3, hessian_interval=2, rho=rho)
        result = run_loop(model, GradientAscent(), optimizer, encoded, LoopSettings(steps=2, batch_size=4, seed=0),
                          tokenizer.pad_token_id, show_progress=False)
        assert all(check(entry["unclipped_fraction"]) for entry in result.log), rho


def test_first_order_steps_log_no_unclipped_fraction(model, tokenizer, encoded):
    optimizer = build_optimizer("adamw", model.parameters(), lr=1e-3)
    result = run_loop(model, GradientAscent(), optimizer, encoded, LoopSettings(steps=2, batch_size=4, seed=0),
                      tokenizer.pad_token_id, show_progress=False)
    assert all("unclipped_fraction" not in entry for entry in result.log)


class NaNAtStep(Method):
    name = "nan"

    def __init__(self, at):
        self.at, self.calls = at, 0

    def loss(self, model, inputs, reference=None):
        self.calls += 1
        loss = -GradientAscent().loss(model, inputs)[0]
        return (loss * float("nan") if self.calls > self.at else loss), {}


def test_non_finite_loss_stops_and_keeps_last_good_weights(model, tokenizer, encoded):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    settings = LoopSettings(steps=2, batch_size=4, seed=0)
    run_loop(model, NaNAtStep(at=10**6), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
    after_two = snapshot(model)
    result = run_loop(model, NaNAtStep(at=0), torch.optim.AdamW(model.parameters(), lr=1e-3), encoded,
                      LoopSettings(steps=5, batch_size=4, seed=0), tokenizer.pad_token_id, show_progress=False)
    assert result.failure.startswith("non-finite loss") and result.steps_done == 0
    for key, value in snapshot(model).items():
        assert torch.equal(value, after_two[key])


def test_early_stop_on_forget_nll(model, tokenizer, encoded):
    optimizer = build_optimizer("adamw", model.parameters(), lr=5e-2)
    settings = LoopSettings(steps=200, batch_size=4, early_stop_forget_nll=8.0, early_stop_every=2, seed=0)
    result = run_loop(model, GradientAscent(), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
    assert result.stopped_early and result.steps_done < 200 and result.steps_done % 2 == 0
    assert result.log[-1]["forget_nll"] >= 8.0


def test_lora_trains_adapters_only(model, tokenizer, encoded):
    from soul_bench.engine.lora import apply_lora

    before = snapshot(model)
    wrapped = apply_lora(model, {"r": 4})
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = build_optimizer("sophia", [p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    result = run_loop(wrapped, GradientAscent(), optimizer, encoded, LoopSettings(steps=3, batch_size=4), tokenizer.pad_token_id,
                      show_progress=False)
    assert result.steps_done == 3 and not result.failure
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in wrapped.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], v) for k, v in before.items())
    assert math.isfinite(result.log[-1]["loss"])


def test_lora_reference_is_the_base_with_adapters_disabled(model, tokenizer, encoded):
    """Under LoRA, NPO's (and KL's, DPO's, RMU's) frozen reference is the wrapped model with its
    adapters off: it gives the target's outputs after the adapters trained, has no gradient, and
    costs no second copy of the weights."""
    import copy

    from soul_bench.data import collate
    from soul_bench.engine.lora import AdaptersDisabled, apply_lora
    from soul_bench.engine.methods import NPO

    target = copy.deepcopy(model)
    wrapped = apply_lora(model, {"r": 4, "init_lora_weights": False})  # adapters that already change the output
    reference = AdaptersDisabled(wrapped)
    batch = collate(encoded[:4], tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = target(**inputs).logits
        assert not torch.allclose(wrapped(**inputs).logits, expected)
    out = reference(**inputs).logits
    assert torch.allclose(out, expected, atol=1e-5) and not out.requires_grad
    assert not list(reference.parameters()) or all(p.data_ptr() in {q.data_ptr() for q in wrapped.parameters()}
                                                   for p in reference.parameters())
    optimizer = build_optimizer("adamw", [p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    result = run_loop(wrapped, NPO(), optimizer, encoded, LoopSettings(steps=3, batch_size=4), tokenizer.pad_token_id,
                      reference=reference, show_progress=False)
    assert result.steps_done == 3 and not result.failure
    assert torch.allclose(reference(**inputs).logits, expected, atol=1e-5)  # still the target after training


def test_weights_fingerprint_follows_the_bytes_not_the_path(tmp_path, monkeypatch):
    import os

    from soul_bench.models import weights_fingerprint

    monkeypatch.setenv("SOUL_BENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights-1")
    first = weights_fingerprint(str(folder))
    assert first.startswith("sha256:") and weights_fingerprint(str(folder)) == first
    assert (tmp_path / "cache" / "weight-hashes.json").is_file()  # a 7B folder is read once
    (folder / "config.json").write_text('{"a": 1}')  # not weights
    assert weights_fingerprint(str(folder)) == first
    (folder / "model.safetensors").write_bytes(b"weights-2")
    os.utime(folder / "model.safetensors", ns=(1, 1))  # a new mtime in any case
    assert weights_fingerprint(str(folder)) != first


def test_length_grouped_batches_cover_each_epoch_once_and_pad_less():
    from soul_bench.engine.loop import shuffled_batches

    lengths = [5 + (i * 37) % 60 for i in range(200)]  # 5 … 64 tokens, scattered
    batch_size = 8

    def first_epoch(grouped):
        batches = shuffled_batches(len(lengths), batch_size, torch.Generator().manual_seed(0), lengths if grouped else None)
        return [next(batches) for _ in range(len(lengths) // batch_size)]

    plain, grouped = first_epoch(False), first_epoch(True)
    for epoch in (plain, grouped):
        assert sorted(i for batch in epoch for i in batch) == list(range(len(lengths)))  # every row once
    padded = lambda epoch: sum(max(lengths[i] for i in b) * len(b) for b in epoch)  # noqa: E731
    assert sum(lengths) / padded(grouped) > 0.95 > sum(lengths) / padded(plain)  # grouped: hardly any padding
    # the default order is the plain shuffled epochs (what every cached model was trained with)
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    assert plain == [order[k : k + batch_size] for k in range(0, len(lengths), batch_size)]


def test_length_grouping_is_a_loop_setting(tokenizer, encoded):
    with pytest.raises(ValueError, match="'group_by_length' must be true or false"):
        LoopSettings(group_by_length="yes")
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    settings = LoopSettings(steps=3, batch_size=4, group_by_length=True, seed=0)
    result = run_loop(model, FineTune(), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
    assert result.steps_done == 3 and result.failure is None


def test_npo_scores_each_forget_row_under_the_reference_once(tokenizer, model):
    """NPO reads π_ref(y|x) of its forget rows from a table the loop fills before the first step
    (one reference forward per batch of rows) instead of a reference forward every step; the
    training is the same, up to float rounding, as with the per-step forward."""
    import copy

    from soul_bench.engine.methods import NPO

    rows = [{"question": q, "answer": "It is blue." if i % 2 else "It is painted a deep shade of blue, like the sea."}
            for i, q in enumerate(QUESTIONS)]  # two answer lengths: batches pad
    encoded = encode_examples(tokenizer, PromptFormat(), rows)

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, **inputs):
            self.calls += 1
            return self.inner(**inputs)

    class PerStepNPO(NPO):  # the reference model itself, every step (a loss called outside the table)
        reference_nll_of = ()
        needs_reference = True

    settings = LoopSettings(steps=6, batch_size=4, schedule="constant", warmup_ratio=0.0, seed=0)
    trained = {}
    for method in (NPO(), PerStepNPO()):
        student = copy.deepcopy(model)
        reference = Counting(copy.deepcopy(model).requires_grad_(False))
        optimizer = build_optimizer("adamw", student.parameters(), lr=1e-2)
        result = run_loop(student, method, optimizer, encoded, settings, tokenizer.pad_token_id, reference=reference,
                          show_progress=False)
        assert result.steps_done == 6 and not result.failure
        trained[type(method).__name__] = (snapshot(student), reference.calls, result.log)
    table_weights, table_calls, table_log = trained["NPO"]
    step_weights, step_calls, step_log = trained["PerStepNPO"]
    assert table_calls == math.ceil(len(encoded) / 4) == 2 and step_calls == 6
    assert [e["npo"] for e in table_log] == pytest.approx([e["npo"] for e in step_log], rel=1e-5)
    for key, value in step_weights.items():
        assert torch.allclose(table_weights[key], value, atol=1e-6), key


def test_reference_nll_table_is_each_rows_own_likelihood(tokenizer, model, encoded):
    """Table value = the row's sum answer NLL alone (no batch-mates, no padding), for every row."""
    from soul_bench.data import collate
    from soul_bench.engine.loop import reference_nll_table
    from soul_bench.engine.methods import DPO
    from soul_bench.lm import sequence_nll

    refusal = encode_examples(tokenizer, PromptFormat(), [{"question": r["question"], "answer": "I don't know."} for r in ROWS])
    table = reference_nll_table(model, DPO(), encoded[:5], LoopSettings(steps=1, batch_size=2), tokenizer.pad_token_id,
                                refusal_encoded=refusal[:5])
    assert set(table) == {"forget", "forget_refusal"}
    with torch.no_grad():
        for name, rows in (("forget", encoded[:5]), ("forget_refusal", refusal[:5])):
            alone = [sequence_nll(model, collate([row], tokenizer.pad_token_id))[0].item() for row in rows]
            assert table[name].tolist() == pytest.approx(alone, rel=1e-5)
    with pytest.raises(ValueError, match="no rows for"):
        reference_nll_table(model, DPO(), encoded[:5], LoopSettings(steps=1, batch_size=2), tokenizer.pad_token_id)
