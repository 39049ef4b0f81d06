"""Membership-inference probes (soul_bench.evaluate.mia) and the token statistics of
answer_nll, each against a hand computation (SPEC.md "MIA probes")."""

import math
import zlib

import numpy as np
import pytest
import torch

from soul_bench.data import PromptFormat, encode_qa
from soul_bench.evaluate import mia
from soul_bench.evaluate.likelihood import STAT_KEYS, _token_stats, answer_nll

LN2 = math.log(2.0)


# ------------------------------------------------------------------ per-sequence scores
def test_loss_score_is_mean_log_prob():
    # log-probs −1, −2, −3: avg NLL = (1 + 2 + 3) / 3 = 2 → score −2
    assert mia.loss_score([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)


def test_zlib_score_divides_avg_nll_by_compressed_length():
    text = "abc"
    entropy = len(zlib.compress(text.encode("utf-8")))
    assert entropy == 11  # 2-byte header + 5 deflate bytes for "abc" + 4-byte Adler-32
    # avg NLL = (1 + 2 + 3) / 3 = 2 → score = −2 / 11 (Carlini et al. / mimir / open-unlearning;
    # the old sum-NLL variant gave −6 / 11)
    assert mia.zlib_score([-1.0, -2.0, -3.0], text) == pytest.approx(-2.0 / 11.0)
    # token count no longer scales the score: the same avg NLL over 6 tokens scores the same
    assert mia.zlib_score([-2.0] * 6, text) == pytest.approx(-2.0 / 11.0)
    # LOSS and ZLib keep every position they are given (answer + EOS): no is_eos parameter
    assert mia.loss_score([-1.0, -2.0, -6.0]) == pytest.approx(-3.0)


# ------------------------------------------------------------------ EOS in token-level scores
def test_scored_positions_drop_eos_and_fall_back_when_only_eos():
    assert mia.scored_positions([False, False, True], 3).tolist() == [True, True, False]
    assert mia.scored_positions(None, 2).tolist() == [True, True]  # include_eos
    assert mia.scored_positions([False, False], 2).tolist() == [True, True]  # truncated: no EOS
    assert mia.scored_positions([True], 1).tolist() == [True]  # EOS only (empty answer): kept
    with pytest.raises(ValueError):
        mia.scored_positions([False, True], 3)


def test_min_k_with_eos_dropped_and_kept():
    lp = [-3.0, -1.0, -2.0, -6.0]  # the last position is the EOS
    eos = [False, False, False, True]
    # kept: n = 4, ⌊0.4·4⌋ = 1 lowest → −6; dropped: n = 3, ⌊1.2⌋ = 1 lowest of (−3, −1, −2) → −3
    assert mia.min_k_score(lp, 0.4) == pytest.approx(-6.0)
    assert mia.min_k_score(lp, 0.4, is_eos=eos) == pytest.approx(-3.0)
    # k = 1: the mean, −12/4 = −3 kept vs −6/3 = −2 dropped
    assert mia.min_k_score(lp, 1.0) == pytest.approx(-3.0)
    assert mia.min_k_score(lp, 1.0, is_eos=eos) == pytest.approx(-2.0)
    # k = 0.5: kept ⌊2⌋ = 2 lowest (−6, −3) → −4.5; dropped ⌊1.5⌋ = 1 → −3
    assert mia.min_k_score(lp, 0.5) == pytest.approx(-4.5)
    assert mia.min_k_score(lp, 0.5, is_eos=eos) == pytest.approx(-3.0)
    # an answer cut short (no EOS flagged) keeps every token; an EOS-only answer keeps its EOS
    assert mia.min_k_score(lp, 1.0, is_eos=[False] * 4) == pytest.approx(-3.0)
    assert mia.min_k_score([-6.0], 0.4, is_eos=[True]) == pytest.approx(-6.0)


def test_min_k_score_averages_the_lowest_fraction():
    lp = [-1.0, -5.0, -2.0, -4.0, -3.0]
    # k = 0.4 of 5 tokens = 2 lowest: (−5 − 4) / 2 = −4.5
    assert mia.min_k_score(lp, k=0.4) == pytest.approx(-4.5)
    # k = 0.1: ⌊0.5⌋ = 0 → at least 1 token: −5
    assert mia.min_k_score(lp, k=0.1) == pytest.approx(-5.0)
    # k = 1: the plain mean −3
    assert mia.min_k_score(lp, k=1.0) == pytest.approx(-3.0)
    with pytest.raises(ValueError):
        mia.min_k_score([], k=0.4)


def three_token_example():
    """A 3-token vocabulary, three answer positions, by hand.

    Positions 1 and 2: p = (½, ¼, ¼) → log p ∈ {−ln2 (prob ½), −2ln2 (prob ½)}
        μ = ½(−ln2) + ½(−2ln2) = −1.5 ln2
        E[(log p)²] = ½ ln²2 + ½ 4ln²2 = 2.5 ln²2, σ² = 2.5 ln²2 − 2.25 ln²2 = 0.25 ln²2 → σ = 0.5 ln2
    Position 3: p = (¼, ½, ¼): the same μ, σ.
    True tokens 0, 1, 2: log p = −ln2, −2ln2, −2ln2
        z = (−ln2 + 1.5ln2)/(0.5ln2) = +1,  (−2ln2 + 1.5ln2)/(0.5ln2) = −1,  −1
    Argmax: 0, 0, 1 → matches True, False, False.
    """
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]], dtype=torch.float64)
    logits = probs.log() + 3.0  # any shift: softmax is invariant
    labels = torch.tensor([0, 1, 2])
    lp = np.array([-LN2, -2 * LN2, -2 * LN2])
    mu = np.full(3, -1.5 * LN2)
    sigma = np.full(3, 0.5 * LN2)
    return logits, labels, lp, mu, sigma


def test_min_k_plus_plus_on_a_three_token_vocabulary():
    _, _, lp, mu, sigma = three_token_example()
    # z = (+1, −1, −1); k = 0.4 of 3 = ⌊1.2⌋ = 1 lowest → −1
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=0.4) == pytest.approx(-1.0)
    # k = 1: (1 − 1 − 1) / 3 = −1/3
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=1.0) == pytest.approx(-1.0 / 3.0)
    # a flat distribution has σ = 0: floored at 1e-3, so z = (log p − μ)/1e-3 = 0 when log p = μ
    flat = math.log(1 / 3)
    assert mia.min_k_plus_plus_score([flat], [flat], [0.0], k=1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        mia.min_k_plus_plus_score(lp, mu[:2], sigma, k=0.4)


def eos_example():
    """The three positions of three_token_example plus an EOS position (EOS = token id 0 here):
    p = (½, ¼, ¼), true token 0 → log p = −ln2, z = +1, argmax match True.
    Labels 0, 1, 2, 0: token 0 also occurs as the first answer token; only the last is the EOS."""
    logits, labels, lp, mu, sigma = three_token_example()
    logits = torch.cat([logits, torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log()])
    return (logits, torch.cat([labels, torch.tensor([0])]), np.append(lp, -LN2), np.append(mu, -1.5 * LN2),
            np.append(sigma, 0.5 * LN2))


def test_min_k_plus_plus_with_eos_dropped_and_kept():
    _, _, lp, mu, sigma = eos_example()
    eos = [False, False, False, True]
    # z = (+1, −1, −1, +1 EOS). k = 1: kept (1 − 1 − 1 + 1)/4 = 0; dropped (1 − 1 − 1)/3 = −1/3
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=1.0) == pytest.approx(0.0, abs=1e-12)
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=1.0, is_eos=eos) == pytest.approx(-1.0 / 3.0)
    # k = 0.75: kept ⌊3⌋ = 3 lowest (−1, −1, +1) → −1/3; dropped ⌊2.25⌋ = 2 lowest → −1
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=0.75) == pytest.approx(-1.0 / 3.0)
    assert mia.min_k_plus_plus_score(lp, mu, sigma, k=0.75, is_eos=eos) == pytest.approx(-1.0)


def test_token_stats_flag_only_the_final_eos():
    logits, labels, lp, mu, sigma = eos_example()
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    stats = {key: [None] for key in STAT_KEYS}
    _token_stats(logits.float(), labels, logprobs, stats, 0, eos_token_id=0)
    # label 0 at position 0 is an answer token; the last label 0 is the EOS
    assert stats["token_is_eos"][0].tolist() == [False, False, False, True]
    assert stats["token_is_eos"][0].dtype == bool
    np.testing.assert_allclose(stats["token_logprobs"][0], lp, rtol=1e-6)
    assert stats["argmax_match"][0].tolist() == [True, False, False, True]
    # an answer cut by max_length ends in an answer token: no EOS
    _token_stats(logits[:3].float(), labels[:3], logprobs[:3], stats, 0, eos_token_id=0)
    assert stats["token_is_eos"][0].tolist() == [False, False, False]
    _token_stats(logits.float(), labels, logprobs, stats, 0, eos_token_id=2)
    assert stats["token_is_eos"][0].tolist() == [False, False, False, False]


def test_mask_eos_label():
    eos = 9
    assert mia.mask_eos_label([-100, -100, 5, 6, eos], eos) == [-100, -100, 5, 6, -100]
    assert mia.mask_eos_label([-100, eos, 6, eos], eos) == [-100, eos, 6, -100]  # only the last one
    assert mia.mask_eos_label([-100, -100, 5, 6], eos) == [-100, -100, 5, 6]  # truncated: no EOS
    assert mia.mask_eos_label([-100, eos], eos) == [-100, eos]  # EOS only: kept


def test_token_stats_of_the_three_token_example():
    logits, labels, lp, mu, sigma = three_token_example()
    stats = {key: [None] for key in STAT_KEYS}
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    _token_stats(logits.float(), labels, logprobs, stats, 0)
    np.testing.assert_allclose(stats["token_logprobs"][0], lp, rtol=1e-6)
    np.testing.assert_allclose(stats["token_mu"][0], mu, rtol=1e-6)
    np.testing.assert_allclose(stats["token_sigma"][0], sigma, rtol=1e-5)
    assert stats["argmax_match"][0].tolist() == [True, False, False]


def test_reference_score_is_the_calibrated_loss():
    # avg NLL 2 under the model, 3 under the reference: −(2 − 3) = +1 (looks like a member)
    assert mia.reference_score(2.0, 3.0) == pytest.approx(1.0)
    np.testing.assert_allclose(mia.reference_score([1.0, 4.0], [2.0, 2.0]), [1.0, -2.0])


# ------------------------------------------------------------------ AUC and PrivLeak
def test_attack_auc_by_hand_and_extremes():
    # members (0.9, 0.4) vs non-members (0.5, 0.1): 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1 → 3/4
    auc, roc = mia.attack_auc([0.9, 0.4], [0.5, 0.1])
    assert auc == pytest.approx(0.75)
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert mia.attack_auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])[0] == 1.0  # a perfect separator
    assert mia.attack_auc([0.0, 1.0, 2.0], [3.0, 4.0, 5.0])[0] == 0.0  # perfectly inverted
    assert mia.attack_auc([1.0, 2.0], [1.0, 2.0])[0] == pytest.approx(0.5)  # ties count ½
    with pytest.raises(ValueError):
        mia.attack_auc([], [1.0])


def test_attack_auc_of_identical_distributions_is_about_a_half_and_roc_is_thinned():
    rng = np.random.default_rng(0)
    auc, roc = mia.attack_auc(rng.normal(size=2000), rng.normal(size=2000))
    assert abs(auc - 0.5) < 0.03
    assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 101
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)


def test_privleak_by_hand():
    # AUC_u 0.8, AUC_r 0.6: A'_u = 0.2, A'_r = 0.4 → (0.2 − 0.4)/0.4 × 100 = −50
    assert mia.privleak(0.8, 0.6) == pytest.approx(-50.0)
    # no retain model: A'_r = 0.5; AUC_u 1 → (0 − 0.5)/0.5 × 100 = −100 (the target's value)
    assert mia.privleak(1.0) == pytest.approx(-100.0)
    # AUC_u 0.3 → A'_u 0.7: (0.7 − 0.5)/0.5 × 100 = +40 (over-unlearning)
    assert mia.privleak(0.3, None) == pytest.approx(40.0)
    assert mia.privleak(0.5) == pytest.approx(0.0)
    assert mia.privleak(0.7, 0.7) == pytest.approx(0.0)  # the retain model against itself
    assert math.isfinite(mia.privleak(0.9, 1.0))  # A'_r = 0: huge but finite (+1e-10, as open-unlearning)


# ------------------------------------------------------------------ memorisation
@pytest.mark.parametrize("matches, em, es", [
    ([True, False, True, True], 3 / 4, 1 - 2 / 4),  # last miss at index 1 → k* = 2
    ([False, True, True, True], 3 / 4, 1 - 1 / 4),  # k* = 1
    ([True, True, True], 1.0, 1.0),                  # all match: k* = 0
    ([True, True, False], 2 / 3, 0.0),               # last token wrong: k* = |y| → 0
    ([False, False, False], 0.0, 0.0),               # nothing matches: 0 (open-unlearning: 1/3)
    ([True], 1.0, 1.0),
])
def test_exact_memorisation_and_extraction_strength(matches, em, es):
    assert mia.exact_memorisation(matches) == pytest.approx(em)
    assert mia.extraction_strength(matches) == pytest.approx(es)


@pytest.mark.parametrize("matches, kept, dropped", [
    # EOS right: kept EM 3/4, ES 1 − 2/4 (last miss at 1); dropped EM 2/3, ES 1 − 2/3
    ([True, False, True, True], (3 / 4, 1 / 2), (2 / 3, 1 / 3)),
    # the answer perfect, the EOS missed: kept EM 3/4, ES 0 (k* = |y|); dropped EM 1, ES 1
    ([True, True, True, False], (3 / 4, 0.0), (1.0, 1.0)),
    # EOS only (empty answer): kept either way
    ([False], (0.0, 0.0), (0.0, 0.0)),
])
def test_memorisation_with_eos_dropped_and_kept(matches, kept, dropped):
    eos = [False] * (len(matches) - 1) + [True]
    assert (mia.exact_memorisation(matches), mia.extraction_strength(matches)) == pytest.approx(kept)
    assert (mia.exact_memorisation(matches, eos), mia.extraction_strength(matches, eos)) == pytest.approx(dropped)
    # no EOS flagged (a truncated answer): every token counts
    none = [False] * len(matches)
    assert (mia.exact_memorisation(matches, none), mia.extraction_strength(matches, none)) == pytest.approx(kept)


# ------------------------------------------------------------------ with a tiny Llama
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Ada wrote about engines and numbers.",
             "Paris is the capital of France.", "Water boils at one hundred degrees."] * 3
PAIRS = [("Who wrote about engines?", "Ada wrote about engines and numbers."),
         ("What is the capital of France?", "Paris."),
         ("When does water boil?", "Water boils at one hundred degrees, at sea level."),
         ("What does the fox do?", "It jumps over the lazy dog.")]


@pytest.fixture(scope="module")
def tiny():
    from soul_bench.models import build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(SENTENCES, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
    model.eval()
    return model, tokenizer, PromptFormat()


def direct_stats(model, tokenizer, fmt, question, answer):
    """One sequence alone (no padding), in float64: log p, μ, σ, argmax match over answer + EOS."""
    ids, labels = encode_qa(tokenizer, fmt, question, answer)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    target = torch.tensor(labels[1:])
    keep = target != -100
    logp = torch.log_softmax(logits[keep], dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp * logp).sum(-1) - mu**2).sqrt()
    lp = logp.gather(1, target[keep][:, None]).squeeze(1)
    return lp.numpy(), mu.numpy(), sigma.numpy(), (logp.argmax(-1) == target[keep]).numpy()


def test_answer_nll_token_stats_match_a_direct_computation(tiny):
    model, tokenizer, fmt = tiny
    plain = answer_nll(model, tokenizer, fmt, PAIRS, batch_size=3)
    out = answer_nll(model, tokenizer, fmt, PAIRS, batch_size=3, keep_token_stats=True)  # padded batches
    np.testing.assert_allclose(out["avg_nll"], plain["avg_nll"])  # same API and results as before
    np.testing.assert_array_equal(out["n_tokens"], plain["n_tokens"])
    for i, (question, answer) in enumerate(PAIRS):
        lp, mu, sigma, match = direct_stats(model, tokenizer, fmt, question, answer)
        assert len(out["token_logprobs"][i]) == out["n_tokens"][i] == len(lp)  # answer tokens + EOS
        np.testing.assert_allclose(out["token_logprobs"][i], lp, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["token_mu"][i], mu, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["token_sigma"][i], sigma, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out["argmax_match"][i], match)
        assert out["token_logprobs"][i].dtype == np.float32 and out["argmax_match"][i].dtype == bool
        assert -out["token_logprobs"][i].sum() == pytest.approx(out["sum_nll"][i], rel=1e-5)
        # the EOS encode_qa appends is the last scored position, and the only one flagged
        assert out["token_is_eos"][i].tolist() == [False] * (len(lp) - 1) + [True]


def test_answer_nll_token_stats_for_some_items_only(tiny):
    model, tokenizer, fmt = tiny
    out = answer_nll(model, tokenizer, fmt, PAIRS, keep_token_stats=[1, 3])
    for key in ("token_logprobs", "token_mu", "token_sigma", "argmax_match", "token_is_eos"):
        assert out[key][0] is None and out[key][2] is None
        assert out[key][1] is not None and out[key][3] is not None
    assert "token_mu" not in answer_nll(model, tokenizer, fmt, PAIRS)


def test_gradnorm_scores_are_negated_mean_norms_and_leave_no_trace(tiny):
    model, tokenizer, fmt = tiny
    model.train()  # the helper must evaluate in eval mode and leave the model there
    scores = mia.gradnorm_scores(model, tokenizer, fmt, PAIRS[:2])
    assert scores.shape == (2,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    # by hand for the first pair: mean over parameter tensors of ‖∇ mean NLL‖₂, the NLL over the
    # answer tokens only — the EOS label masked by hand (the default leaves EOS out)
    from soul_bench.data import IGNORE_INDEX, collate
    from soul_bench.lm import mean_token_nll

    def by_hand(mask_eos):
        ids, labels = encode_qa(tokenizer, fmt, *PAIRS[0])
        assert labels[-1] == tokenizer.eos_token_id
        if mask_eos:
            labels = labels[:-1] + [IGNORE_INDEX]
        model.zero_grad(set_to_none=True)
        mean_token_nll(model, collate([(ids, labels)], tokenizer.pad_token_id)).backward()
        norms = [p.grad.norm().item() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return -np.mean(norms)

    assert scores[0] == pytest.approx(by_hand(mask_eos=True), rel=1e-4)
    with_eos = mia.gradnorm_scores(model, tokenizer, fmt, PAIRS[:2], include_eos=True)
    assert with_eos[0] == pytest.approx(by_hand(mask_eos=False), rel=1e-4)
    assert with_eos[0] != pytest.approx(scores[0], rel=1e-4)
    # a frozen model (requires_grad off) still gets scores, and stays frozen
    model.requires_grad_(False)
    try:
        frozen = mia.gradnorm_scores(model, tokenizer, fmt, PAIRS[:2])
        np.testing.assert_allclose(frozen, scores, rtol=1e-5)
        assert not any(p.requires_grad for p in model.parameters())
    finally:
        model.requires_grad_(True)
