"""Tests for the metric formulas, with hand-computed values: the generic ones in
soul_bench.evaluate.metrics (``M``) and TOFU's in tasks/tofu/metrics.py (``TM``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from soul_bench.evaluate import metrics as M
from soul_bench_tasks.tofu import metrics as TM

LN2 = math.log(2.0)
LN4 = math.log(4.0)


# --------------------------------------------------------------------------- probability


def test_probability_by_hand():
    # exp(-0) = 1 ; exp(-ln 2) = 1/2 ; exp(-1) = 0.3678794
    out = M.probability([0.0, LN2, 1.0])
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [1.0, 0.5, 0.36787944], rtol=1e-7)


def test_probability_mean_is_tofu_prob():
    # items p = 1, 1/2  ->  Prob. = (1 + 0.5) / 2 = 0.75
    assert M.probability(np.array([0.0, LN2])).mean() == pytest.approx(0.75)


def test_normalised_probability_by_hand():
    # item 0: p = e^-ln2 = 0.5, q = e^-ln4 = 0.25, 0.25 -> 0.5 / (0.5 + 0.5) = 0.5
    # item 1: p = e^0 = 1,     q = 1, 0.5              -> 1 / (1 + 1.5)     = 0.4
    out = TM.normalised_probability([LN2, 0.0], [[LN4, LN4], [0.0, LN2]])
    np.testing.assert_allclose(out, [0.5, 0.4], rtol=1e-12)


def test_normalised_probability_matches_direct_formula_and_large_nll():
    rng = np.random.default_rng(0)
    t = rng.uniform(0.1, 4.0, size=7)
    p = rng.uniform(0.1, 4.0, size=(7, 5))
    direct = np.exp(-t) / (np.exp(-t) + np.exp(-p).sum(axis=1))
    np.testing.assert_allclose(TM.normalised_probability(t, p), direct, rtol=1e-12)
    # huge NLLs: exp(-800) underflows to 0 in the direct formula (0/0);
    # in log space: p = q_1 = q_2 -> 1/3
    np.testing.assert_allclose(TM.normalised_probability([800.0], [[800.0, 800.0]]), [1 / 3])


# --------------------------------------------------------------------------- truth ratio


def test_truth_ratio_worked_example_geometric():
    # stat = exp(mean(2, 3) - 1) = exp(1.5) = 4.4816891
    stat = TM.truth_ratio_stat([1.0], [[2.0, 3.0]])
    np.testing.assert_allclose(stat, [4.4816891], rtol=1e-7)
    # forget: min(4.4817, 1/4.4817) = e^-1.5 = 0.2231302
    assert TM.truth_ratio_score(stat, "forget") == pytest.approx(0.2231302, abs=1e-7)
    # retain: 1 - 1/4.4817 = 1 - 0.2231302 = 0.7768698
    assert TM.truth_ratio_score(stat, "retain") == pytest.approx(0.7768698, abs=1e-7)
    assert TM.truth_ratio_score(stat, "real_authors") == pytest.approx(0.7768698, abs=1e-7)
    assert TM.truth_ratio_score(stat, "world_facts") == pytest.approx(0.7768698, abs=1e-7)


def test_truth_ratio_default_is_geometric():
    # correct 0, perturbed ln2, ln4: exp((ln2 + ln4)/2) = exp(1.5 ln 2) = 2^1.5 = 2.8284271
    c, p = [0.0], [[LN2, LN4]]
    np.testing.assert_allclose(TM.truth_ratio_stat(c, p), [2.0**1.5], rtol=1e-12)
    np.testing.assert_allclose(TM.truth_ratio_stat(c, p, mean="geometric"), [2.8284271], rtol=1e-7)


def test_truth_ratio_arithmetic_by_hand():
    # correct 0, perturbed ln2, ln4:
    #   exp(0 - ln2) = 0.5, exp(0 - ln4) = 0.25 -> mean 0.375 -> stat = 1/0.375 = 8/3
    # correct 1, perturbed 2, 3:
    #   exp(-1) = 0.3678794, exp(-2) = 0.1353353 -> mean 0.2516074 -> stat = 3.9744465
    stat = TM.truth_ratio_stat([0.0, 1.0], [[LN2, LN4], [2.0, 3.0]], mean="arithmetic")
    np.testing.assert_allclose(stat, [8 / 3, 3.9744465], rtol=1e-7)
    # AM >= GM, so the arithmetic stat is below the geometric one (8/3 < 2^1.5; 3.97 < 4.48)
    geo = TM.truth_ratio_stat([0.0, 1.0], [[LN2, LN4], [2.0, 3.0]])
    assert (stat < geo).all()


def test_truth_ratio_equal_perturbations_same_for_both_means():
    # all perturbed NLLs equal -> both means give exp(L - c) = exp(0.7)
    g = TM.truth_ratio_stat([0.3], [[1.0, 1.0, 1.0]])
    a = TM.truth_ratio_stat([0.3], [[1.0, 1.0, 1.0]], mean="arithmetic")
    np.testing.assert_allclose(g, [math.exp(0.7)], rtol=1e-12)
    np.testing.assert_allclose(a, [math.exp(0.7)], rtol=1e-12)


def test_truth_ratio_bad_mean():
    with pytest.raises(ValueError, match="harmonic"):
        TM.truth_ratio_stat([1.0], [[2.0]], mean="harmonic")


def test_truth_ratio_score_clamps_retain_and_forget_symmetry():
    # stat 0.5: retain max(0, 1 - 2) = 0 (clamped); stat 2: 1 - 0.5 = 0.5 -> mean 0.25
    assert TM.truth_ratio_score([0.5, 2.0], "retain") == pytest.approx(0.25)
    # a stat < 1 alone on retain -> 0, not 1 - 1/0.5 = -1
    assert TM.truth_ratio_score([0.5], "retain") == 0.0
    # forget: min(0.5, 2) = 0.5 and min(2, 0.5) = 0.5 -> 0.5
    assert TM.truth_ratio_score([0.5, 2.0], "forget") == pytest.approx(0.5)
    # forget-set names with a size suffix use the forget formula
    assert TM.truth_ratio_score([0.5, 2.0], "forget10") == pytest.approx(0.5)


def test_truth_ratio_score_rejects_negative():
    with pytest.raises(ValueError):
        TM.truth_ratio_score([-1.0], "retain")


# --------------------------------------------------------------------------- forget quality


def test_forget_quality_matches_scipy_and_hand_value():
    a = [0.2, 0.9, 1.3, 0.4, 2.2, 0.7]
    b = [1.1, 0.3, 1.8, 2.5, 0.95]
    assert TM.forget_quality(a, b) == pytest.approx(scipy.stats.ks_2samp(a, b).pvalue, rel=1e-12)
    # [1,2,3] vs [4,5,6]: D = 1, exact p = 2 / C(6,3) = 2/20 = 0.1
    assert TM.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_forget_quality_identical_and_separated():
    x = np.linspace(0.1, 3.0, 40)
    assert TM.forget_quality(x, x) == pytest.approx(1.0)
    # disjoint samples of 50 each: p = 2 / C(100, 50) ~ 2e-29
    assert TM.forget_quality(np.arange(50), np.arange(50) + 100.0) < 1e-20


# --------------------------------------------------------------------------- model utility


def test_model_utility_hand_and_scipy():
    # 2 / (1/0.5 + 1/1.0) = 2 / 3
    assert TM.model_utility([0.5, 1.0]) == pytest.approx(2 / 3)
    vals = {k: v for k, v in zip(TM.harmonic_utility_keys(), np.linspace(0.2, 0.9, 9))}
    assert TM.model_utility(vals) == pytest.approx(float(scipy.stats.hmean(list(vals.values()))))


def test_model_utility_zero_is_zero():
    assert TM.model_utility({"retain/prob": 0.0, "retain/rouge": 0.8}) == 0.0
    assert TM.model_utility([0.3, 0.0, 0.9]) == 0.0


def test_model_utility_rejects_negative_and_nan_with_name():
    with pytest.raises(ValueError, match="retain/rouge"):
        TM.model_utility({"retain/prob": 0.5, "retain/rouge": -0.1})
    with pytest.raises(ValueError, match="world_facts/prob"):
        TM.model_utility({"world_facts/prob": float("nan"), "retain/rouge": 0.5})
    with pytest.raises(ValueError, match=r"\[1\]"):
        TM.model_utility([0.5, -1.0])
    with pytest.raises(ValueError):
        TM.model_utility([])


def test_harmonic_utility_keys():
    keys = TM.harmonic_utility_keys()
    assert keys == (
        "retain/prob", "retain/rouge", "retain/truth_ratio",
        "real_authors/prob", "real_authors/rouge", "real_authors/truth_ratio",
        "world_facts/prob", "world_facts/rouge", "world_facts/truth_ratio",
    )


# --------------------------------------------------------------------------- BLEU


def test_sentence_bleu_by_hand():
    # reference "the cat sat on the mat" (6 tokens), prediction "the cat sat on a mat" (6):
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1 -> 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    by_hand = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    out = M.sentence_bleu(["the cat sat on a mat", "the cat sat on the mat", ""], ["the cat sat on the mat"] * 3)
    np.testing.assert_allclose(out, [by_hand, 100.0, 0.0], atol=1e-9)
    # a short prediction is cut by the brevity penalty: "the cat sat on" (4 of 6 tokens), all n-grams
    # match (4/4, 3/3, 2/2, 1/1) -> BP = exp(1 - 6/4)
    assert M.sentence_bleu(["the cat sat on"], ["the cat sat on the mat"])[0] == pytest.approx(100 * math.exp(1 - 6 / 4))


def test_sentence_bleu_is_sacrebleu_one_segment_corpus_as_soul_scores_it():
    import sacrebleu

    pairs = [("he went to the old mill by the river", "she went to the mill by the river at dawn"),
             ("a b", "a b c d e")]
    out = M.sentence_bleu([p for p, _ in pairs], [r for _, r in pairs])
    for value, (pred, ref) in zip(out, pairs):
        assert value == pytest.approx(sacrebleu.corpus_bleu([pred], [[ref]]).score)
    with pytest.raises(ValueError, match="length mismatch"):
        M.sentence_bleu(["a"], ["a", "b"])


# --------------------------------------------------------------------------- ROUGE-L recall


def test_rouge_l_recall_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3 tokens; reference has 6 -> 3/6 = 0.5
    # identical -> 1.0 ; no shared token -> 0.0
    out = M.rouge_l_recall(
        ["the cat sat", "a dog", "hello world"],
        ["the cat sat on the mat", "a dog", "goodbye moon"],
    )
    np.testing.assert_allclose(out, [0.5, 1.0, 0.0])


def test_rouge_l_recall_is_recall_not_precision():
    # prediction longer than the reference: recall = 2/2 = 1.0 (precision would be 2/6)
    out = M.rouge_l_recall(["the cat sat on the mat"], ["the cat"])
    np.testing.assert_allclose(out, [1.0])


def test_rouge_l_recall_stemming():
    # Porter: running -> run, dogs -> dog -> LCS 2 of 2 = 1.0; without stemming no match -> 0.0
    assert M.rouge_l_recall(["running dogs"], ["run dog"], use_stemmer=True)[0] == pytest.approx(1.0)
    assert M.rouge_l_recall(["running dogs"], ["run dog"], use_stemmer=False)[0] == pytest.approx(0.0)
    # default is stemmer on
    assert M.rouge_l_recall(["running dogs"], ["run dog"])[0] == pytest.approx(1.0)


def test_rouge_l_f1_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3: precision 3/3, recall 3/6 -> F1 = 2/3
    # "a dog barked" vs "the dog": LCS 1, P 1/3, R 1/2 -> F1 = 0.4; MUSE: no stemming by default
    out = M.rouge_l_f1(["the cat sat", "a dog barked", "", "running dogs"], ["the cat sat on the mat", "the dog", "x", "run dog"])
    np.testing.assert_allclose(out, [2 / 3, 0.4, 0.0, 0.0])
    assert M.rouge_l_f1(["running dogs"], ["run dog"], use_stemmer=True)[0] == pytest.approx(1.0)


def test_rouge_scorer_built_once(monkeypatch):
    from rouge_score import rouge_scorer

    built = []
    real = rouge_scorer.RougeScorer

    def counting(*args, **kwargs):
        built.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(rouge_scorer, "RougeScorer", counting)
    M._rouge_l_scorer.cache_clear()
    try:
        M.rouge_l_recall(["a b", "c d", "e f"], ["a b", "c d", "e f"])
        M.rouge_l_recall(["a b"], ["a b"])
        assert len(built) == 1
    finally:
        M._rouge_l_scorer.cache_clear()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: TM.normalised_probability([1.0, 2.0], [[1.0, 2.0]]),
        lambda: TM.truth_ratio_stat([1.0], [[1.0, 2.0], [3.0, 4.0]]),
        lambda: M.rouge_l_recall(["a", "b"], ["a"]),
    ],
)
def test_length_mismatch_raises(call):
    with pytest.raises(ValueError, match="mismatch"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.probability([]),
        lambda: TM.normalised_probability([], np.zeros((0, 3))),
        lambda: TM.truth_ratio_stat([], []),
        lambda: TM.truth_ratio_score([], "forget"),
        lambda: TM.forget_quality([], [1.0]),
        lambda: M.rouge_l_recall([], []),
    ],
)
def test_empty_raises(call):
    with pytest.raises(ValueError):
        call()


def test_shape_errors():
    with pytest.raises(ValueError, match="n_items, n_perturbed"):
        TM.truth_ratio_stat([1.0, 2.0], [2.0, 3.0])  # perturbed must be 2-D
    with pytest.raises(ValueError):
        TM.truth_ratio_stat([1.0, 2.0], [[2.0, 3.0], [4.0]])  # ragged
    with pytest.raises(ValueError, match="NaN"):
        M.probability([0.1, float("nan")])
    with pytest.raises(ValueError):
        M.rouge_l_recall("the cat", "the cat")  # bare strings, not sequences of strings


def test_core_metrics_hold_no_tofu_formulas():
    # The core keeps only the generic metrics; TOFU's formulas live in its task folder.
    for name in ("normalised_probability", "truth_ratio_stat", "truth_ratio_score",
                 "forget_quality", "model_utility", "harmonic_utility_keys"):
        assert not hasattr(M, name), name
        assert callable(getattr(TM, name))


def test_corpus_perplexity_weighs_every_token_the_same():
    from soul_bench.evaluate.metrics import corpus_perplexity

    # two windows: 2 nats over 1 token, 4 nats over 3 tokens → exp(6 / 4), by hand 4.481689
    assert corpus_perplexity([2.0, 4.0], [1, 3]) == pytest.approx(4.4816890703, rel=1e-9)
    # not the mean of the windows' perplexities, (e^2 + e^(4/3)) / 2 = 5.5889
    assert abs(corpus_perplexity([2.0, 4.0], [1, 3]) - (math.exp(2) + math.exp(4 / 3)) / 2) > 1.0
    with pytest.raises(ValueError, match="no scored token"):
        corpus_perplexity([0.0], [0])
