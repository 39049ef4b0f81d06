"""Generic text / likelihood metrics as pure functions over per-item numbers.

These are the metrics any task may use; a task's own formulas live in its task folder
(TOFU's truth ratio, normalised probability, forget quality and model utility are in
``tasks/tofu/metrics.py``).

Everything here works on plain numbers (lists or numpy arrays) or strings that an
evaluation run has already produced, e.g. the per-item *average* negative log-likelihood
(avg NLL, i.e. NLL summed over the answer tokens divided by the number of answer tokens)
of an answer.  There is no model code and no torch import.

* Probability:  mean_i exp(-avg_nll_i)        -> :func:`probability`
* ROUGE:        ROUGE-L recall (stemmer on)    -> :func:`rouge_l_recall`
* ROUGE-L F1:   (stemmer off, as MUSE)         -> :func:`rouge_l_f1`
* BLEU:         sacreBLEU per item (0–100)      -> :func:`sentence_bleu`
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "as_1d_array",
    "probability",
    "corpus_perplexity",
    "rouge_l_recall",
    "rouge_l_f1",
    "sentence_bleu",
]


# --------------------------------------------------------------------------- validation


def as_1d_array(values: Any, name: str) -> np.ndarray:
    """Float 1-D array from a list/array; ValueError if empty, not 1-D or containing NaN.

    The shared input check of per-item metrics, here and in task folders (``name`` is
    the argument's name in the error message)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected a sequence of numbers, got a string")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty input")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}")
    return arr



# --------------------------------------------------------------------------- probabilities


def probability(avg_nll) -> np.ndarray:
    """Per-item probability ``p_i = exp(-avg_nll_i)``.

    ``avg_nll_i`` is the answer's NLL averaged over its tokens, so ``p_i`` is the
    geometric mean of the per-token probabilities (the length-normalised probability).
    TOFU's "Prob." on the forget and retain sets is ``mean_i p_i``.

    Args:
        avg_nll: shape (n,), per-item average NLL of the ground-truth answer.

    Returns:
        float array of shape (n,).
    """
    nll = as_1d_array(avg_nll, "avg_nll")
    return np.exp(-nll)


def corpus_perplexity(sum_nll, n_tokens) -> float:
    """Perplexity of a corpus scored in pieces (e.g. windows of documents):
    ``exp(Σ_i sum_nll_i / Σ_i n_tokens_i)`` — every token weighs the same, as if the corpus were
    one sequence; not the mean of the pieces' perplexities, which short pieces would dominate.

    Args:
        sum_nll: shape (n,), NLL summed over each piece's scored tokens.
        n_tokens: shape (n,), each piece's number of scored tokens (> 0 in total).
    """
    total = as_1d_array(sum_nll, "sum_nll").sum()
    tokens = as_1d_array(n_tokens, "n_tokens").sum()
    if tokens <= 0:
        raise ValueError("n_tokens: no scored token")
    return float(np.exp(total / tokens))


# --------------------------------------------------------------------------- ROUGE


@functools.lru_cache(maxsize=None)
def _rouge_l_scorer(use_stemmer: bool):
    """One RougeScorer per stemmer setting, built once per process."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def _as_str_list(values: Any, name: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected a sequence of strings, got a single string")
    try:
        out = list(values)
    except TypeError:
        raise ValueError(
            f"{name}: expected a sequence of strings, got {type(values).__name__}"
        ) from None
    if not out:
        raise ValueError(f"{name}: empty input")
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise ValueError(f"{name}[{i}]: expected a string, got {type(v).__name__}")
    return out


def rouge_l_recall(
    predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True
) -> np.ndarray:
    """Per-item ROUGE-L recall of each prediction against its reference.

    ``recall_i = LCS(pred_i, ref_i) / len(ref_i)`` over rouge-score tokens (lower-cased,
    non-alphanumerics dropped, Porter stemming of tokens longer than 3 characters when
    ``use_stemmer``), computed by ``rouge_score.rouge_scorer.RougeScorer(["rougeL"],
    use_stemmer=...)``; as in TOFU, ``scorer.score(reference, prediction)["rougeL"].recall``.
    TOFU's "ROUGE" is the mean of these (stemmer on).  An empty reference scores 0.

    Args:
        predictions: the model's generations (answer only), length n.
        references: the ground-truth answers, length n.
        use_stemmer: Porter stemming (TOFU: True; MUSE: False).

    Returns:
        float array of shape (n,), values in [0, 1].
    """
    preds = _as_str_list(predictions, "predictions")
    refs = _as_str_list(references, "references")
    return _rouge_l(preds, refs, use_stemmer, "recall")


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = False) -> np.ndarray:
    """Per-item ROUGE-L F1 of each prediction against its reference: the harmonic mean of
    ``LCS / len(pred)`` and ``LCS / len(ref)`` over rouge-score tokens, by
    ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])`` — ``score(reference, prediction)
    ["rougeL"].fmeasure``. MUSE's VerbMem and KnowMem are 100 × the mean of these, stemmer off
    (``muse_bench``, ``metrics/logger.py``). Empty prediction or reference: 0.
    """
    preds = _as_str_list(predictions, "predictions")
    refs = _as_str_list(references, "references")
    return _rouge_l(preds, refs, use_stemmer, "fmeasure")


def _rouge_l(preds: list[str], refs: list[str], use_stemmer: bool, field: str) -> np.ndarray:
    if len(preds) != len(refs):
        raise ValueError(f"length mismatch: {len(preds)} predictions but {len(refs)} references")
    scorer = _rouge_l_scorer(bool(use_stemmer))
    return np.array([getattr(scorer.score(ref, pred)["rougeL"], field) for pred, ref in zip(preds, refs)], dtype=float)


# --------------------------------------------------------------------------- BLEU


def sentence_bleu(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item BLEU (0–100) of each prediction against its one reference, by sacreBLEU.

    As SOUL scores copyright leakage (``src/metrics/copyright.py``: ``sacrebleu.corpus_bleu(
    [prediction], [[reference]]).score`` for each item, then the mean): each item is scored as
    a one-segment corpus — sacreBLEU's 13a tokenisation, 4-gram precisions with the ``exp``
    smoothing, brevity penalty. That is not ``sacrebleu.sentence_bleu``, which also uses
    the effective n-gram order (a prediction under 4 words is then not scored 0 by its
    missing 4-grams); soul-bench keeps SOUL's definition so that numbers compare.
    An empty prediction scores 0.

    Args:
        predictions: the model's generations, length n.
        references: the true continuations, length n.

    Returns:
        float array of shape (n,), values in [0, 100].
    """
    from sacrebleu.metrics import BLEU

    preds = _as_str_list(predictions, "predictions")
    refs = _as_str_list(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"length mismatch: {len(preds)} predictions but {len(refs)} references")
    bleu = BLEU()
    return np.array([bleu.corpus_score([pred], [[ref]]).score for pred, ref in zip(preds, refs)], dtype=float)
