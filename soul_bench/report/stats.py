"""Statistics over seeds for the report: confidence intervals and paired optimiser comparisons.

What the tables use (and say so in their note lines):

* **Spread of a cell** — the mean over seeds ± the half-width of a two-sided Student-t
  interval, ``t_{(1+level)/2, n-1} · s / √n`` with ``s`` the sample std (n − 1). With one seed
  there is no interval (shown as a bare mean).
* **Optimiser vs baseline** (FO vs SO table) — seeds are paired (same seed = same data order
  and initial state), the difference is ``optimizer − baseline`` per seed; the table shows its
  mean, the t-interval of the mean difference (the paired t-interval), the **paired t-test**
  p-value (``scipy.stats.ttest_rel``, two-sided) as *the* p-value, and the **Wilcoxon
  signed-rank** p-value (``scipy.stats.wilcoxon``, two-sided, zero differences dropped) as an
  extra, distribution-free column. With fewer than :data:`MIN_PAIRED` paired seeds, the
  interval and both p-values are ``None`` (printed "n/a"). No multiple-comparison correction
  is applied.

scipy is imported lazily, so importing this module costs nothing at CLI start-up.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from soul_bench.report.columns import (as_number, headline_columns, metric_columns, record_kind, target_weights,
                                      targets_in_order)

MIN_PAIRED = 3  # fewer paired seeds than this: no interval, no p-values
NA = "n/a"
DEFAULT_LEVEL = 0.95


def _clean(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")


def t_half_width(values: Sequence[float], level: float = DEFAULT_LEVEL) -> float | None:
    """Half-width of the Student-t interval of the mean of ``values`` (None with < 2 values)."""
    _check_level(level)
    values = _clean(values)
    n = len(values)
    if n < 2:
        return None
    from scipy import stats

    sd = statistics.stdev(values)
    if math.isnan(sd) or math.isinf(sd):
        return None
    return float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * sd / math.sqrt(n)


def mean_ci(values: Iterable[Any], level: float = DEFAULT_LEVEL) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of the two-sided Student-t confidence interval of the mean.

    Missing / NaN values are dropped. No values → (None, None, None); one value → (v, None, None).
    """
    values = _clean(values)
    if not values:
        _check_level(level)
        return None, None, None
    mean = statistics.fmean(values)
    half = t_half_width(values, level)
    if half is None:
        return mean, None, None
    return mean, mean - half, mean + half


def paired_comparison(a_by_seed: Mapping[Any, Any], b_by_seed: Mapping[Any, Any],
                      level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Compare ``a`` with ``b`` on the seeds both have (a number each, not None/NaN).

    Returns ``{n, seeds, mean_a, mean_b, mean_diff, ci_low, ci_high, p_value, p_wilcoxon, test}``:
    ``mean_diff`` = mean of ``a[s] − b[s]``; ``ci_low``/``ci_high`` its Student-t interval;
    ``p_value`` the two-sided paired t-test (``scipy.stats.ttest_rel``); ``p_wilcoxon`` the
    two-sided Wilcoxon signed-rank test; ``test`` names the test behind ``p_value``
    (``"paired t-test"``, or ``"n/a"`` when there are fewer than :data:`MIN_PAIRED` pairs —
    then the interval and the p-values are None). Identical pairs (every difference 0) give
    p = 1 for both tests.
    """
    _check_level(level)
    a_clean = {s: v[0] for s, v in ((s, _clean([x])) for s, x in a_by_seed.items()) if v}
    b_clean = {s: v[0] for s, v in ((s, _clean([x])) for s, x in b_by_seed.items()) if v}
    seeds = sorted((s for s in a_clean if s in b_clean), key=lambda s: (str(type(s)), s))
    a = [a_clean[s] for s in seeds]
    b = [b_clean[s] for s in seeds]
    diffs = [x - y for x, y in zip(a, b)]
    n = len(seeds)
    out: dict[str, Any] = {
        "n": n, "seeds": seeds,
        "mean_a": statistics.fmean(a) if a else None,
        "mean_b": statistics.fmean(b) if b else None,
        "mean_diff": statistics.fmean(diffs) if diffs else None,
        "ci_low": None, "ci_high": None, "p_value": None, "p_wilcoxon": None, "test": NA,
    }
    if n < MIN_PAIRED:
        return out
    from scipy import stats

    _, out["ci_low"], out["ci_high"] = mean_ci(diffs, level)
    if all(d == 0 for d in diffs):  # scipy returns NaN here; the samples are identical
        out["p_value"] = out["p_wilcoxon"] = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["p_value"] = _finite(stats.ttest_rel(a, b).pvalue)
            try:
                out["p_wilcoxon"] = _finite(stats.wilcoxon(a, b).pvalue)
            except ValueError:
                out["p_wilcoxon"] = None
    out["test"] = "paired t-test"
    return out


def _finite(p: Any) -> float | None:
    p = float(p)
    return None if math.isnan(p) else p


def format_p(p: float | None) -> str:
    """Two significant digits: '0.032', '0.41', '1'; '<0.001'; None → 'n/a'."""
    if p is None:
        return NA
    if p < 0.001:
        return "<0.001"
    return f"{p:.2g}"


def optimizer_comparison_rows(records: Iterable[Mapping], metrics: Iterable[Mapping | Any],
                              baseline_optimizer: str = "adamw", level: float = DEFAULT_LEVEL) -> list[dict]:
    """Every (method, optimizer ≠ baseline, headline metric), paired with ``baseline_optimizer``.

    Only successful (``status == "ok"``) unlearned records count. Rows are ordered by method,
    optimizer (name order), then metric (card order, headline first). Each row holds the
    :func:`paired_comparison` result of ``optimizer`` (a) vs the baseline (b) plus ``method``,
    ``optimizer``, ``baseline``, ``metric`` (name), ``label``, ``higher`` (True / False for a
    metric with a direction, None for one with an ideal value), ``ideal``, ``arrow`` ("↑", "↓",
    "→0.5"), ``better`` ("higher", "lower", "closest to 0.5") and ``favours``: the optimiser whose
    mean is better in the metric's sense — for an ideal-valued metric the one whose paired mean is
    closer to the ideal (``None`` on a tie or with no pairs). The difference and its test stay on
    the raw values either way: "closer to 0.5" is a statement about means, not about Δ's sign.
    ``by_target``: with records of several target models (paired by (target, seed)), the mean
    difference within each target (:func:`_mean_diff_by_target`); else []. Methods without a
    baseline cell give no rows.
    """
    specs = headline_columns(metric_columns(metrics))
    by_cell: dict[tuple[str, str], dict[Any, Mapping]] = {}
    records = [r for r in records if record_kind(r) == "unlearned" and r.get("status") == "ok"]
    # records pooled over several target models pair by (target, seed): "T1s0" = seed 0 of the second
    # target (columns.targets_in_order: by prepare seed, else the order the records come)
    targets = targets_in_order(records)
    for r in records:
        pair = r.get("seed") if len(targets) < 2 else f"T{targets.index(str(target_weights(r)))}s{r.get('seed')}"
        by_cell.setdefault((str(r.get("method")), str(r.get("optimizer"))), {})[pair] = r
    rows = []
    methods = sorted({m for m, _ in by_cell})
    for method in methods:
        base = by_cell.get((method, baseline_optimizer))
        if base is None:
            continue
        for optimizer in sorted(o for m, o in by_cell if m == method and o != baseline_optimizer):
            cell = by_cell[(method, optimizer)]
            for m in specs:
                a = {s: as_number((r.get("metrics") or {}).get(m.name)) for s, r in cell.items()}
                b = {s: as_number((r.get("metrics") or {}).get(m.name)) for s, r in base.items()}
                cmp = paired_comparison(a, b, level)
                cmp["by_target"] = _mean_diff_by_target(cmp["seeds"], a, b, len(targets))
                rows.append({"method": method, "optimizer": optimizer, "baseline": baseline_optimizer,
                             "metric": m.name, "label": m.label, "higher": m.higher, "ideal": m.ideal,
                             "arrow": m.arrow, "better": m.better,
                             "favours": _favoured(cmp, m.higher, m.score, optimizer, baseline_optimizer), **cmp})
    return rows


def _mean_diff_by_target(pairs: Sequence[Any], a: Mapping[Any, float], b: Mapping[Any, float],
                         n_targets: int) -> list[float | None]:
    """Pooled over several targets: the mean paired difference within each target ("T0s1", "T0s2"
    → target 0), in target order (None for a target without pairs); one target: []. Pairs of one
    target share its idiosyncrasies, so the pooled test counts them as more independent than they
    are; a direction that holds within every target is the one to trust."""
    if n_targets < 2:
        return []
    return [statistics.fmean(diffs) if (diffs := [a[p] - b[p] for p in pairs if str(p).startswith(f"T{t}s")]) else None
            for t in range(n_targets)]


def pooled_target_count(rows: Iterable[Mapping]) -> int:
    """How many target models the comparison rows' ``by_target`` differences cover (0: one target,
    no per-target column)."""
    return max((len(r.get("by_target") or ()) for r in rows), default=0)


def _favoured(cmp: Mapping[str, Any], higher: bool | None, score: Any, optimizer: str, baseline: str) -> str | None:
    """Which of the two the paired means favour (None on a tie or without pairs)."""
    d = cmp["mean_diff"]
    if d is None:
        return None
    if higher is not None:  # a direction: the sign of the mean difference decides
        return None if d == 0 else (optimizer if (d > 0) == higher else baseline)
    a, b = score(cmp["mean_a"]), score(cmp["mean_b"])  # an ideal value: the smaller distance to it wins
    return None if a == b else (optimizer if a > b else baseline)
