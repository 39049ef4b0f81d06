"""Unlearning losses against hand computations on a model with fixed logits."""

import math

import pytest
import torch

from soul_bench.engine.loop import StepInputs
from soul_bench.engine.methods import DPO, IDK, KL, NPO, RMU, GradDiff, GradientAscent, NPORetain, SimNPO, UNLEARNING_METHODS


class FixedLogits(torch.nn.Module):
    """Returns the same (1, 3, vocab) logits for any input; ``scale`` is a parameter so
    gradients exist (logits = scale * base, scale = 1)."""

    def __init__(self, probs):
        super().__init__()
        self.base = torch.log(torch.tensor(probs, dtype=torch.float32)).unsqueeze(0)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids, attention_mask=None):
        logits = (self.scale * self.base).expand(input_ids.shape[0], -1, -1)
        return type("Out", (), {"logits": logits})()


def batch(labels):
    return {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long),
            "labels": torch.tensor([labels])}


# position 0 predicts labels[1], position 1 predicts labels[2]; the last row is never scored
MODEL_PROBS = [[0.5, 0.25, 0.25], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]
FORGET = batch([-100, 1, 2])  # p = 0.25 then 0.5 → sum NLL = ln 4 + ln 2 = ln 8, mean CE = ln 8 / 2
RETAIN = batch([-100, 2, 0])  # p = 0.25 then 0.25 → sum NLL = ln 16, mean CE = ln 4


def test_gradient_ascent_is_minus_mean_answer_ce():
    loss, _ = GradientAscent().loss(FixedLogits(MODEL_PROBS), StepInputs(FORGET))
    assert loss.item() == pytest.approx(-math.log(8) / 2, rel=1e-5)  # -1.03972


def test_graddiff_adds_weighted_retain_ce():
    loss, terms = GradDiff(retain_weight=2.0).loss(FixedLogits(MODEL_PROBS), StepInputs(FORGET, RETAIN))
    assert loss.item() == pytest.approx(-math.log(8) / 2 + 2 * math.log(4), rel=1e-5)  # -1.03972 + 2.77259
    assert terms["ce_retain"] == pytest.approx(math.log(4), rel=1e-5)


def test_npo_against_paper_formula():
    model, reference = FixedLogits(MODEL_PROBS), FixedLogits([[1 / 3] * 3] * 3)
    loss, _ = NPO(beta=0.1).loss(model, StepInputs(FORGET), reference=reference)
    # π_θ(y|x) = 0.25·0.5 = 1/8, π_ref(y|x) = (1/3)² = 1/9 → (2/β)·log(1 + (9/8)^β) = 20·log(2.011848) = 13.98106
    assert loss.item() == pytest.approx(20 * math.log(1 + (9 / 8) ** 0.1), rel=1e-5)


def test_npo_at_reference_is_two_over_beta_log_two():
    model = FixedLogits(MODEL_PROBS)
    loss, _ = NPO(beta=0.5).loss(model, StepInputs(FORGET), reference=FixedLogits(MODEL_PROBS))
    assert loss.item() == pytest.approx(4 * math.log(2), rel=1e-5)  # ratio 1 → (2/β)·log 2


def test_npo_retain_adds_ce():
    model, reference = FixedLogits(MODEL_PROBS), FixedLogits(MODEL_PROBS)
    loss, _ = NPORetain(beta=0.5, retain_weight=1.0).loss(model, StepInputs(FORGET, RETAIN), reference)
    assert loss.item() == pytest.approx(4 * math.log(2) + math.log(4), rel=1e-5)


def test_simnpo_against_formula():
    loss, _ = SimNPO(beta=2.5, gamma=0.0, retain_weight=0.0).loss(FixedLogits(MODEL_PROBS), StepInputs(FORGET, RETAIN))
    # −(β/|y|)·log π = 2.5 · ln8/2 = 2.59930 → −(2/2.5)·log σ(2.59930) = 0.8 · log(1 + e^−2.59930) = 0.05908
    assert loss.item() == pytest.approx(0.8 * math.log(1 + math.exp(-2.5 * math.log(8) / 2)), rel=1e-5)


def test_ga_gradient_lowers_forget_likelihood():
    model = FixedLogits(MODEL_PROBS)
    loss, _ = GradientAscent().loss(model, StepInputs(FORGET))
    loss.backward()
    with torch.no_grad():
        model.scale -= 0.1 * model.scale.grad
    after, _ = GradientAscent().loss(model, StepInputs(FORGET))
    assert -after.item() > math.log(8) / 2  # forget CE went up


def test_method_hparams_are_recorded():
    assert NPO(beta=0.2).hparams() == {"beta": 0.2}
    assert GradDiff().hparams() == {"retain_weight": 1.0}


# A second fixed model, used as the frozen reference below.
REF_PROBS = [[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]]
REFUSAL = batch([-100, 0, 0])  # under MODEL_PROBS: p = 0.5 then 0.25 → sum NLL = ln 8, mean CE = 1.5·ln 2


def test_kl_is_mean_token_kl_of_reference_to_model_on_retain():
    model, reference = FixedLogits(MODEL_PROBS), FixedLogits(REF_PROBS)
    loss, terms = KL(retain_weight=2.0).loss(model, StepInputs(FORGET, RETAIN), reference)
    # KL(q‖p) = Σ_v q_v·ln(q_v/p_v) at both retain answer positions (labels 2, 0 — the labels do not matter):
    #   pos 0: q = (¼, ½, ¼), p = (½, ¼, ¼): ¼·ln(½) + ½·ln 2 + ¼·ln 1 = ¼·ln 2                  = 0.173287
    #   pos 1: q = (⅓, ⅓, ⅓), p = (¼, ¼, ½): ⅓·(ln(4/3) + ln(4/3) + ln(2/3)) = (5/3)·ln 2 − ln 3 = 0.056633
    #   mean = 0.114960;  L = −ln 8/2 + 2·0.114960 = −1.039721 + 0.229920 = −0.809801
    kl = (0.25 * math.log(2) + 5 / 3 * math.log(2) - math.log(3)) / 2
    assert terms["kl_retain"] == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(-math.log(8) / 2 + 2 * kl, rel=1e-5)


def test_kl_averages_only_supervised_positions_and_is_zero_at_reference():
    model, reference = FixedLogits(MODEL_PROBS), FixedLogits(REF_PROBS)
    _, terms = KL().loss(model, StepInputs(FORGET, batch([-100, -100, 0])), reference)
    assert terms["kl_retain"] == pytest.approx(5 / 3 * math.log(2) - math.log(3), rel=1e-5)  # pos 1 only: 0.056633
    _, terms = KL().loss(model, StepInputs(FORGET, RETAIN), FixedLogits(MODEL_PROBS))
    assert terms["kl_retain"] == pytest.approx(0.0, abs=1e-6)


def test_idk_is_refusal_ce_plus_retain_ce():
    inputs = StepInputs(FORGET, RETAIN, forget_refusal=REFUSAL)
    loss, terms = IDK(retain_weight=0.5).loss(FixedLogits(MODEL_PROBS), inputs)
    # CE(refusal) = (ln 2 + ln 4)/2 = 1.5·ln 2 = 1.039721; CE(R) = ln 4 → L = 1.5·ln 2 + 0.5·2·ln 2 = 2.5·ln 2 = 1.732868
    assert terms["ce_refusal"] == pytest.approx(1.5 * math.log(2), rel=1e-5)
    assert loss.item() == pytest.approx(2.5 * math.log(2), rel=1e-5)
    # the original forget answers play no part
    other, _ = IDK(retain_weight=0.5).loss(FixedLogits(MODEL_PROBS), StepInputs(batch([-100, 0, 1]), RETAIN, REFUSAL))
    assert other.item() == pytest.approx(loss.item(), rel=1e-6)


def test_dpo_against_formula():
    model, reference = FixedLogits(MODEL_PROBS), FixedLogits(REF_PROBS)
    loss, terms = DPO(beta=0.1, retain_weight=1.0).loss(model, StepInputs(FORGET, RETAIN, REFUSAL), reference)
    # chosen (refusal, labels 0, 0):   log π_θ = ln(½·¼) = ln(1/8),  log π_ref = ln(¼·⅓) = ln(1/12) → ratio ln 1.5
    # rejected (original, labels 1, 2): log π_θ = ln(¼·½) = ln(1/8), log π_ref = ln(½·⅓) = ln(1/6) → ratio ln 0.75
    # margin = ln 1.5 − ln 0.75 = ln 2 → −(2/β)·log σ(0.1·ln 2) = 20·ln(1 + 0.933033) = 20·0.659090 = 13.18181
    # L = 13.18181 + CE(R) = 13.18181 + ln 4 = 14.56810
    dpo = 20 * math.log(1 + 2 ** -0.1)
    assert terms["dpo"] == pytest.approx(dpo, rel=1e-5)
    assert loss.item() == pytest.approx(dpo + math.log(4), rel=1e-5)
    assert terms["nll_forget"] == pytest.approx(math.log(8), rel=1e-5)


def test_dpo_at_reference_is_two_over_beta_log_two():
    model = FixedLogits(MODEL_PROBS)
    loss, _ = DPO(beta=0.5, retain_weight=0.0).loss(model, StepInputs(FORGET, RETAIN, REFUSAL), FixedLogits(MODEL_PROBS))
    assert loss.item() == pytest.approx(4 * math.log(2), rel=1e-5)  # margin 0 → (2/β)·log 2


def test_dpo_gradient_prefers_refusal_over_original():
    """One step on a model whose logits are free parameters: the refusal's likelihood rises,
    the original answer's falls."""

    class FreeLogits(FixedLogits):
        def __init__(self, probs):
            super().__init__(probs)
            self.logits = torch.nn.Parameter(self.base.clone())

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": self.logits.expand(input_ids.shape[0], -1, -1)})()

    model, method = FreeLogits(MODEL_PROBS), DPO(beta=0.1, retain_weight=0.0)
    inputs = StepInputs(FORGET, RETAIN, REFUSAL)
    _, before = method.loss(model, inputs, FixedLogits(MODEL_PROBS))
    loss, _ = method.loss(model, inputs, FixedLogits(MODEL_PROBS))
    loss.backward()
    with torch.no_grad():
        model.logits -= 0.1 * model.logits.grad
    _, after = method.loss(model, inputs, FixedLogits(MODEL_PROBS))
    assert after["nll_forget"] > before["nll_forget"] and after["nll_refusal"] < before["nll_refusal"]


def test_new_methods_declare_needs_and_are_not_influence_compatible():
    assert (KL.needs_retain, KL.needs_reference, KL.needs_refusal) == (True, True, False)
    assert (IDK.needs_retain, IDK.needs_reference, IDK.needs_refusal) == (True, False, True)
    assert (DPO.needs_retain, DPO.needs_reference, DPO.needs_refusal) == (True, False, True)
    # DPO, NPO and NPO+RT read only the reference's likelihood of whole rows: scored once, no model kept
    assert DPO.reference_nll_of == ("forget", "forget_refusal") and DPO().wants_reference
    assert NPO.reference_nll_of == NPORetain.reference_nll_of == ("forget",) and not NPO.needs_reference
    assert KL().wants_reference and RMU().wants_reference and not IDK().wants_reference
    assert (RMU.needs_retain, RMU.needs_reference, RMU.needs_refusal) == (True, True, False)
    assert UNLEARNING_METHODS["po"] is UNLEARNING_METHODS["idk"] is IDK
    for name, cls in UNLEARNING_METHODS.items():
        assert cls.description, name
        assert getattr(cls, "influence_compatible", False) == (name in ("ga", "graddiff")), name
    assert RMU().hparams() == {"layer": None, "steering_coeff": 20.0, "alpha": 100.0, "seed": 0,
                               "train_modules": "gate_proj,up_proj,down_proj"}


# ---------------------------------------------------------------- RMU on a tiny real Llama
SENTENCES = ["Question: Where was Ada born?\nAnswer: Ada was born in Lisbon.",
             "Question: What does Ben write?\nAnswer: Ben writes detective novels.",
             "The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def tiny():
    from soul_bench.data import PromptFormat, collate, encode_examples
    from soul_bench.models import build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(SENTENCES, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=3, heads=2)
    fmt = PromptFormat()
    forget = collate(encode_examples(tokenizer, fmt, [{"question": "Where was Ada born?", "answer": "Ada was born in Lisbon."},
                                                      {"question": "What does Ben write?", "answer": "Novels."}]),
                     tokenizer.pad_token_id)
    retain = collate(encode_examples(tokenizer, fmt, [{"question": "What is the capital of France?", "answer": "Paris."}]),
                     tokenizer.pad_token_id)
    assert (forget["attention_mask"] == 0).any()  # rows of different lengths: padding must be masked out
    return model, StepInputs(forget, retain)


def _trainable(model):
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


def _masked_mean_sq(hidden, target, mask):
    per_token = ((hidden - target) ** 2).mean(dim=-1)  # MSE: mean over hidden dims (WMDP's F.mse_loss)
    return (per_token * mask).sum() / mask.sum()


def test_rmu_setup_trains_only_the_mlps_of_layers_l_minus_2_to_l(tiny):
    import copy

    model = copy.deepcopy(tiny[0])
    method = RMU()
    method.setup(model)
    assert method.resolved_layer(model) == 2  # min(7, 3 − 1)
    mlp = lambda layers: sorted(f"model.layers.{i}.mlp.{m}.weight" for i in layers for m in ("gate_proj", "up_proj", "down_proj"))
    assert _trainable(model) == mlp([0, 1, 2])
    model = copy.deepcopy(tiny[0])
    RMU(layer=1).setup(model)  # ℓ − 2 = −1 is clamped at 0
    assert _trainable(model) == mlp([0, 1])
    model = copy.deepcopy(tiny[0])
    RMU(layer=2, train_modules="down_proj").setup(model)  # the WMDP reference's choice
    assert _trainable(model) == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)]


def test_rmu_direction_is_a_seeded_unit_vector_independent_of_global_rng():
    torch.manual_seed(1)
    u = RMU(seed=3).direction(32)
    torch.manual_seed(2)
    assert torch.equal(u, RMU(seed=3).direction(32))
    assert not torch.equal(u, RMU(seed=4).direction(32))
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6) and (u >= 0).all()  # uniform [0, 1) entries, normalised


def test_rmu_forget_term_matches_output_hidden_states(tiny):
    model, inputs = tiny
    method = RMU(layer=1, steering_coeff=5.0, alpha=0.0)
    _, terms = method.loss(model, inputs, reference=model)
    with torch.no_grad():
        hidden = model(**{k: inputs.forget[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True).hidden_states
    # hidden_states[0] is the embeddings, so decoder layer ℓ's output is hidden_states[ℓ + 1]
    expected = _masked_mean_sq(hidden[2], 5.0 * method.direction(32), inputs.forget["attention_mask"])
    assert terms["rmu_forget"] == pytest.approx(expected.item(), rel=1e-5)


def test_rmu_last_layer_is_the_layer_output_before_the_final_norm(tiny):
    from soul_bench.engine.methods import _layer_output

    model, inputs = tiny
    with torch.no_grad():
        raw = _layer_output(model, inputs.forget, 2)
        hidden = model(**{k: inputs.forget[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True).hidden_states
        assert torch.allclose(model.model.norm(raw), hidden[3], atol=1e-6)  # transformers reports the normed state last
        assert torch.allclose(_layer_output(model, inputs.forget, 1), hidden[2])


def test_rmu_with_zero_steering_at_reference_is_mean_squared_activation(tiny):
    import copy

    model, inputs = tiny
    reference = copy.deepcopy(model)
    loss, terms = RMU(steering_coeff=0.0).loss(model, inputs, reference)  # default ℓ = 2, α = 100
    raw = {}
    handle = model.model.layers[2].register_forward_hook(lambda m, a, out: raw.setdefault("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(input_ids=inputs.forget["input_ids"], attention_mask=inputs.forget["attention_mask"])
    handle.remove()
    expected = _masked_mean_sq(raw["h"], 0.0, inputs.forget["attention_mask"])  # mean over tokens of ‖h‖²/hidden_size
    assert terms["rmu_retain"] == pytest.approx(0.0, abs=1e-10)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_rmu_on_a_peft_model_keeps_lora_trainability(tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    before = _trainable(model)
    method = RMU(steering_coeff=1.0)
    method.setup(model, tiny[0])
    assert _trainable(model) == before and all("lora_" in name for name in before)
    loss, _ = method.loss(model, tiny[1], tiny[0])
    loss.backward()
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)
