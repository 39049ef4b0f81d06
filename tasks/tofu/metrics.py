"""TOFU's metric formulas, as pure functions over per-item numbers.

The formulas of Maini et al. 2024, TOFU (arXiv 2401.06121; its code ``locuslab/tofu``,
``aggregate_eval_stat.py``).  The generic metrics they sit beside (``probability``,
``rouge_l_recall``) are in :mod:`soul_bench.evaluate.metrics`.

Everything here works on plain numbers (lists or numpy arrays) that an evaluation run
has already produced, e.g. the per-item *average* negative log-likelihood (avg NLL, i.e.
NLL summed over the answer tokens divided by the number of answer tokens) of a ground-truth,
paraphrased or perturbed answer.  There is no model code and no torch import, so TOFU's
own eval logs (``avg_gt_loss``, ``avg_paraphrased_loss``, ``average_perturb_loss``,
``rougeL_recall``) can be fed straight in and compared.

* Prob. (forget / retain):           mean_i exp(-avg_nll_i)                  -> ``soul_bench.evaluate.metrics.probability``
* Prob. (real authors / world facts): mean_i p_i / (p_i + sum_j q_ij),
  p = exp(-avg NLL true), q = exp(-avg NLL perturbed)                       -> :func:`normalised_probability`
* Truth ratio stat:                   exp(mean_j L_pert_ij - L_correct_i)     -> :func:`truth_ratio_stat`
* Truth ratio reported:               forget mean(min(s, 1/s)); others mean(max(0, 1 - 1/s))
                                                                            -> :func:`truth_ratio_score`
* Forget quality:                     KS two-sample p-value                  -> :func:`forget_quality`
* Model utility:                      harmonic mean of 9 numbers             -> :func:`model_utility`
* ROUGE:                              ROUGE-L recall (stemmer on)            -> ``soul_bench.evaluate.metrics.rouge_l_recall``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _stats
from scipy.special import logsumexp

from soul_bench.evaluate.metrics import as_1d_array, probability

__all__ = [
    "normalised_probability",
    "truth_ratio_stat",
    "truth_ratio_score",
    "forget_quality",
    "model_utility",
    "harmonic_utility_keys",
    "eval_set_metrics",
    "PARAPHRASED_SETS",
]

_UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
_UTILITY_METRICS = ("prob", "rouge", "truth_ratio")
# Eval sets whose "correct" answer is a paraphrase and whose Prob. is the plain exp(-avg NLL); the
# others (real_authors, world_facts) score the original answer against its options.
PARAPHRASED_SETS = ("forget", "retain")


# --------------------------------------------------------------------------- validation


def _as_2d(values: Any, name: str) -> np.ndarray:
    """Float 2-D array of shape (n, k) with n, k >= 1; ValueError if ragged, empty or NaN."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected an (n, k) array of numbers, got a string")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name}: expected an (n, k) array of numbers; rows must all have the same "
            f"number of perturbed answers ({exc})"
        ) from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected shape (n_items, n_perturbed), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty input (no items)")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: no perturbed answers per item (shape {arr.shape})")
    if np.isnan(arr).any():
        i, j = (int(x) for x in np.argwhere(np.isnan(arr))[0])
        raise ValueError(f"{name}: contains NaN at [{i}, {j}]")
    return arr


def _paired(true_vals: Any, true_name: str, pert_vals: Any, pert_name: str):
    t = as_1d_array(true_vals, true_name)
    p = _as_2d(pert_vals, pert_name)
    if p.shape[0] != t.shape[0]:
        raise ValueError(
            f"length mismatch: {true_name} has {t.shape[0]} items but {pert_name} has "
            f"{p.shape[0]} rows (shape {p.shape})"
        )
    return t, p


# --------------------------------------------------------------------------- probabilities


def normalised_probability(true_avg_nll, perturbed_avg_nll) -> np.ndarray:
    """Per-item probability normalised against the perturbed answers.

    With ``p = exp(-true_avg_nll_i)`` and ``q_j = exp(-perturbed_avg_nll_ij)``::

        r_i = p / (p + sum_j q_j)

    TOFU's "Prob." on real authors / world facts is ``mean_i r_i``.  Computed in log
    space (``r_i = exp(-L_i - logsumexp([-L_i, -L_i1, ..., -L_ik]))``), which equals the
    direct formula but does not underflow for large NLLs.

    Args:
        true_avg_nll: shape (n,), average NLL of the true answer.
        perturbed_avg_nll: shape (n, k), average NLL of each of the k perturbed answers.

    Returns:
        float array of shape (n,), values in [0, 1].
    """
    t, p = _paired(true_avg_nll, "true_avg_nll", perturbed_avg_nll, "perturbed_avg_nll")
    logits = np.concatenate([-t[:, None], -p], axis=1)  # log p, log q_1..q_k
    return np.exp(-t - logsumexp(logits, axis=1))


# --------------------------------------------------------------------------- truth ratio


def truth_ratio_stat(correct_avg_nll, perturbed_avg_nll, mean: str = "geometric") -> np.ndarray:
    """Per-item truth-ratio statistic (bigger = the model prefers the correct answer).

    Let ``c_i`` be the average NLL of the correct answer (TOFU: the paraphrased answer on
    forget/retain, the original answer on real authors/world facts) and ``L_ij`` that of
    perturbed answer j (k of them).

    * ``mean="geometric"`` (TOFU, default)::

          stat_i = exp( mean_j(L_ij) - c_i )

      i.e. P_norm(correct) / geometric-mean_j P_norm(perturbed_j), with
      ``P_norm = exp(-avg NLL)``.  This is exactly TOFU's
      ``np.exp(avg_perturbed_loss - avg_paraphrased_loss)``.

    * ``mean="arithmetic"`` (SOUL's choice)::

          stat_i = 1 / mean_j( exp(c_i - L_ij) )

      i.e. the inverse of the arithmetic mean of P_norm(perturbed_j) / P_norm(correct).
      Computed as ``exp(log k - logsumexp_j(c_i - L_ij))`` for numerical stability.
      By the AM-GM inequality it is never larger than the geometric statistic.

    Args:
        correct_avg_nll: shape (n,).
        perturbed_avg_nll: shape (n, k).
        mean: "geometric" or "arithmetic"; anything else raises ValueError.

    Returns:
        float array of shape (n,), values > 0.
    """
    if mean not in ("geometric", "arithmetic"):
        raise ValueError(f"mean must be 'geometric' or 'arithmetic', got {mean!r}")
    c, p = _paired(correct_avg_nll, "correct_avg_nll", perturbed_avg_nll, "perturbed_avg_nll")
    if mean == "geometric":
        return np.exp(p.mean(axis=1) - c)
    k = p.shape[1]
    return np.exp(math.log(k) - logsumexp(c[:, None] - p, axis=1))


def _is_forget_split(split: str) -> bool:
    return split.startswith("forget")


def truth_ratio_score(stat, split: str) -> float:
    """Aggregate per-item truth-ratio statistics the way TOFU reports them.

    * ``split`` "forget" (also any name starting with "forget", e.g. "forget10",
      "forget01_perturbed")::

          score = mean_i min(stat_i, 1 / stat_i)

      (1 = the model cannot tell correct from perturbed, as a never-trained model).
    * any other split ("retain", "real_authors", "world_facts", ...)::

          score = mean_i max(0, 1 - 1 / stat_i)

      (clamped at 0 when the model prefers the perturbed answers, stat < 1).

    Args:
        stat: shape (n,), values >= 0 (output of :func:`truth_ratio_stat`).
        split: the eval split's name.

    Returns:
        float.
    """
    if not isinstance(split, str):
        raise ValueError(f"split must be a string, got {type(split).__name__}")
    s = as_1d_array(stat, "stat")
    if (s < 0).any():
        raise ValueError(f"stat: must be >= 0, got {float(s[s < 0][0])!r}")
    with np.errstate(divide="ignore"):
        inv = 1.0 / s
    if _is_forget_split(split):
        per_item = np.minimum(s, inv)
    else:
        per_item = np.maximum(0.0, 1.0 - inv)
    return float(per_item.mean())


# --------------------------------------------------------------------------- forget quality


def forget_quality(stat_unlearned, stat_retain_model) -> float:
    """TOFU forget quality: the KS two-sample test p-value.

    ``forget_quality = scipy.stats.ks_2samp(stat_unlearned, stat_retain_model).pvalue``
    (default two-sided alternative and method), where both arguments are per-item
    truth-ratio statistics (:func:`truth_ratio_stat`) on the *forget* set, one from the
    unlearned model and one from the retain model (trained without the forget set).
    High (close to 1) = indistinguishable from the retain model.  The two samples may
    have different lengths.

    Returns:
        float in [0, 1].
    """
    a = as_1d_array(stat_unlearned, "stat_unlearned")
    b = as_1d_array(stat_retain_model, "stat_retain_model")
    return float(_stats.ks_2samp(a, b).pvalue)


# --------------------------------------------------------------------------- model utility


def model_utility(values: Mapping[str, float] | Sequence[float]) -> float:
    """TOFU model utility: harmonic mean of the component scores.

    ``model_utility = n / sum_i(1 / v_i)`` (``scipy.stats.hmean``).  TOFU uses the 9
    numbers named by :func:`harmonic_utility_keys`, but any non-empty collection works.

    * If any value is exactly 0 the result is 0.0 (the limit of the harmonic mean; this
      is returned directly, without scipy's divide-by-zero warning).
    * A negative, NaN or infinite value raises ValueError naming the offending key
      (for a sequence, its index as ``[i]``).

    Args:
        values: mapping name -> score, or a sequence of scores.

    Returns:
        float.
    """
    if isinstance(values, Mapping):
        items = [(str(k), v) for k, v in values.items()]
    elif isinstance(values, (str, bytes)):
        raise ValueError("values: expected a mapping or a sequence of numbers, got a string")
    else:
        try:
            items = [(f"[{i}]", v) for i, v in enumerate(values)]
        except TypeError:
            raise ValueError(
                f"values: expected a mapping or a sequence of numbers, got {type(values).__name__}"
            ) from None
    if not items:
        raise ValueError("values: empty input")
    nums = []
    for name, v in items:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"model_utility: value {name} is not a number: {v!r}") from None
        if math.isnan(x):
            raise ValueError(f"model_utility: value {name} is NaN")
        if math.isinf(x):
            raise ValueError(f"model_utility: value {name} is infinite")
        if x < 0:
            raise ValueError(f"model_utility: value {name} is negative ({x!r})")
        nums.append(x)
    if any(x == 0.0 for x in nums):
        return 0.0
    return float(_stats.hmean(nums))


def harmonic_utility_keys() -> tuple[str, ...]:
    """The 9 TOFU model-utility components, ``"<split>/<metric>"``.

    Splits: retain, real_authors, world_facts; metrics: prob, rouge, truth_ratio::

        ("retain/prob", "retain/rouge", "retain/truth_ratio",
         "real_authors/prob", ..., "world_facts/truth_ratio")
    """
    return tuple(f"{s}/{m}" for s in _UTILITY_SPLITS for m in _UTILITY_METRICS)


# --------------------------------------------------------------------------- one eval set


def eval_set_metrics(split: str, gt_avg_nll, correct_avg_nll, perturbed_avg_nll, rouge_recall,
                     mean: str = "geometric") -> tuple[dict[str, float], np.ndarray]:
    """The four numbers TOFU reports for one eval set, from its per-item values.

    Shared by the task's own evaluation and by the importer of TOFU / open-unlearning eval
    logs (``logs.py`` in this folder), so both give the same numbers from the same inputs.
    As ``locuslab/tofu`` ``aggregate_eval_stat.py`` (``get_model_utility``):

    * ``<split>/prob``: mean exp(-gt) on the sets in :data:`PARAPHRASED_SETS` (forget, retain),
      else the mean of :func:`normalised_probability` (real authors, world facts);
    * ``<split>/rouge``: mean ROUGE-L recall;
    * ``<split>/truth_ratio``: :func:`truth_ratio_score` of :func:`truth_ratio_stat` (correct vs
      perturbed; ``mean`` as there);
    * ``<split>/avg_gt_loss``: mean avg NLL of the original answer (not a TOFU figure; kept for
      diagnosis).

    Args:
        split: "forget", "retain", "real_authors" or "world_facts".
        gt_avg_nll: shape (n,), avg NLL of the original answer.
        correct_avg_nll: shape (n,), avg NLL of the answer the truth ratio calls correct (the
            paraphrase on forget/retain, the original answer elsewhere).
        perturbed_avg_nll: shape (n, k).
        rouge_recall: shape (n,), per-item ROUGE-L recall of the greedy answer.

    Returns:
        (metrics, per-item truth-ratio statistic of shape (n,)).
    """
    stat = truth_ratio_stat(correct_avg_nll, perturbed_avg_nll, mean=mean)
    prob = probability(gt_avg_nll) if split in PARAPHRASED_SETS else normalised_probability(gt_avg_nll, perturbed_avg_nll)
    metrics = {f"{split}/prob": float(np.mean(prob)),
               f"{split}/rouge": float(np.mean(as_1d_array(rouge_recall, "rouge_recall"))),
               f"{split}/truth_ratio": truth_ratio_score(stat, split),
               f"{split}/avg_gt_loss": float(np.mean(as_1d_array(gt_avg_nll, "gt_avg_nll")))}
    return metrics, stat
