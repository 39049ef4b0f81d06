"""Build the whole report of one task from one or more run folders.

:func:`build_report` loads ``<run>/records/*.json`` from every run folder, merges them, and
writes into ``out_dir`` (each file atomically: temp file + ``os.replace``):

* ``leaderboard.md`` / ``.csv`` — one row per (method, optimizer) + baselines; mean ± 95 %
  Student-t CI half-width over seeds (the CSV also has the std and ``<metric>_ci95``).
* ``leaderboard.tex`` — the same as a booktabs table (:func:`latex.leaderboard_latex`), a
  ``table*`` scaled to the text width when there are more than five metrics;
  ``leaderboard_headline.tex`` — headline metrics only (one column wide for three metrics).
* ``fo_vs_so.md`` / ``.csv`` / ``.tex`` — every optimizer vs ``baseline_optimizer`` (AdamW) per
  method and headline metric, paired by seed: mean difference, paired t-interval, paired t-test
  p, Wilcoxon p ("n/a" with fewer than 3 paired seeds).
* ``tradeoff.png/.pdf`` (scatter, CI error bars, Pareto front), ``bars.png/.pdf`` (grouped bars
  per headline metric), ``curves_<q>.png/.pdf`` per train-log quantity (loss, ce_forget, …),
  ``mia_roc_<attack>.png/.pdf`` per MIA attack (only when records have ``per_item["mia"]``).
* ``conflicts.md`` — only when the merge found conflicting records (a stale one is removed).
* ``tuning.md`` / ``.csv`` — only when some (method, optimizer) ran with several settings (a
  tuning grid): every setting, the one the selection rule chose marked
  (:mod:`soul_bench.report.tuning`); every other output shows the chosen setting.

Merging: two records are *the same cell* when they share a ``cell_id`` or the same
(task, forget split, kind, method, optimizer, seed, setting). Copies with the same status and metrics
are duplicates and kept once. Copies that differ are a *conflict*: the first one (run folders
in the order given, files in name order) is used, and every conflict is listed in
``conflicts.md`` and in the returned mapping's ``conflicts`` (or raised, with
``on_conflict="error"``) — never silently overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soul_bench.report import figures, latex
from soul_bench.report import leaderboard as lb
from soul_bench.report.columns import (DEFAULT_TRADEOFF, MISSING, LeaderboardError, as_number, display_name,
                                       format_value, harness_metric_descriptions, md_escape, metric_columns,
                                       probe_metric_descriptions, record_kind, target_weights, tradeoff_axes)
from soul_bench.report.files import write_text
from soul_bench.report.ranking import rank_rule
from soul_bench.report.stats import (DEFAULT_LEVEL, MIN_PAIRED, NA, format_p, optimizer_comparison_rows,
                                     pooled_target_count)
from soul_bench.report.tuning import held_out_note, is_tuned, selected_records, setting_id, tuning_csv, tuning_markdown

CONFLICT_POLICIES = ("first", "error")


@dataclass
class Conflict:
    """Records that claim the same cell with different results. ``kept`` is the one the report uses."""
    reason: str  # "same cell_id" or "same (task, split, kind, method, optimizer, seed, setting)"
    cell: str  # a readable name of the cell
    kept: tuple[str, Mapping]  # (run dir, record)
    dropped: list[tuple[str, Mapping]] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.cell}: {len(self.dropped) + 1} different records ({self.reason}); using "
                f"{self.kept[1].get('cell_id')} from {self.kept[0]}")


class ReportPaths(dict):
    """``build_report``'s result: file name → path, plus ``conflicts`` (list of :class:`Conflict`),
    ``duplicates`` (identical copies dropped) and ``records`` (the merged records)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conflicts: list[Conflict] = []
        self.duplicates: int = 0
        self.records: list[dict] = []


# --------------------------------------------------------------------------- merging


def _split(record: Mapping) -> Any:
    spec = record.get("spec")
    return spec.get("forget_split") if isinstance(spec, Mapping) else None


def cell_key(record: Mapping) -> tuple:
    """(task, forget split, kind, method, optimizer, seed, setting) — what makes two records the
    same cell; the setting (hyper-parameters without the seed, :func:`tuning.setting_id`) tells
    the values of a tuning grid apart."""
    return (record.get("task"), _split(record), record_kind(record), record.get("method"), record.get("optimizer"),
            record.get("seed"), setting_id(record), target_weights(record))


def _cell_name(record: Mapping) -> str:
    task, split, kind, method, optimizer, seed, _, _ = cell_key(record)
    parts = [str(p) for p in (task, split) if p is not None]
    parts += [kind] if kind != "unlearned" else [f"{method} × {optimizer}"]
    if seed is not None:
        parts.append(f"seed {seed}")
    return " / ".join(parts)


def _signature(record: Mapping) -> str:
    # NaN != NaN, so compare the JSON text (sorted keys) rather than the values.
    return json.dumps({"status": record.get("status"), "metrics": record.get("metrics") or {}},
                      sort_keys=True, default=str)


def merge_records(sources: Iterable[tuple[str, Sequence[Mapping]]],
                  across_targets: bool = False) -> tuple[list[dict], list[Conflict], int]:
    """Merge ``(label, records)`` pairs in order → (records, conflicts, number of duplicates dropped).

    A report compares cells that started from one target model: the first fingerprinted
    record's target weights are the report's, and a record made from other target weights (the
    same path prepared on another machine, another checkpoint) is a conflict, left out — never
    averaged in as another seed. ``across_targets``: the report pools several targets on
    purpose (embedded targets prepared with different seeds, to sample how much the target
    itself moves the results); every (target, seed) is then a seed of its cell."""
    merged: list[tuple[str, dict]] = []
    by_id: dict[Any, int] = {}
    by_key: dict[tuple, int] = {}
    conflicts: dict[int, Conflict] = {}
    other_weights: list[Conflict] = []
    reference: tuple[str, Mapping] | None = None
    duplicates = 0
    for label, records in sources:
        for record in records:
            weights = target_weights(record)
            if weights is not None and not across_targets:
                if reference is None:
                    reference = (label, record)
                elif weights != target_weights(reference[1]):
                    other_weights.append(Conflict(f"made from other target weights ({weights} vs "
                                                  f"{target_weights(reference[1])})", _cell_name(record), reference,
                                                  [(label, dict(record))]))
                    continue
            cid, key = record.get("cell_id"), cell_key(record)
            hits = []
            if cid is not None and cid in by_id:
                hits.append((by_id[cid], "same cell_id"))
            if key in by_key and all(by_key[key] != i for i, _ in hits):
                hits.append((by_key[key], "same (task, split, kind, method, optimizer, seed, setting)"))
            if not hits:
                by_key[key] = len(merged)
                if cid is not None:
                    by_id[cid] = len(merged)
                merged.append((label, dict(record)))
                continue
            index, reason = hits[0]
            if _signature(merged[index][1]) == _signature(record):
                duplicates += 1
                continue
            conflict = conflicts.setdefault(index, Conflict(reason, _cell_name(merged[index][1]), merged[index]))
            conflict.dropped.append((label, dict(record)))
    return [r for _, r in merged], list(conflicts.values()) + other_weights, duplicates


def _metric_diff(kept: Mapping, other: Mapping, limit: int = 6) -> str:
    a, b = kept.get("metrics") or {}, other.get("metrics") or {}
    def text(d: Mapping, n: str) -> str:
        return json.dumps(d.get(n), default=str)

    names = [n for n in dict.fromkeys([*a, *b]) if text(a, n) != text(b, n)]
    parts = [f"{n}: {format_value(a.get(n))} vs {format_value(b.get(n))}" for n in names[:limit]]
    if len(names) > limit:
        parts.append(f"… {len(names) - limit} more")
    if kept.get("status") != other.get("status"):
        parts.insert(0, f"status: {kept.get('status')} vs {other.get('status')}")
    return "; ".join(parts) or "(metrics equal; different cell)"


def conflicts_markdown(conflicts: Sequence[Conflict]) -> str:
    lines = ["# Conflicting records", "",
             f"{len(conflicts)} cell(s) have records with different results. The report uses the first one "
             "(run folders in the order given); the others are left out. Re-run or remove the stale records, "
             "or build the report from one run folder.", "",
             "| Cell | Why the same | Used (run, cell id) | Left out (run, cell id) | Differences (used vs left out) |",
             "|:---|:---|:---|:---|:---|"]
    for c in conflicts:
        for label, other in c.dropped:
            cells = [c.cell, c.reason, f"{c.kept[0]}: {c.kept[1].get('cell_id')}", f"{label}: {other.get('cell_id')}",
                     _metric_diff(c.kept[1], other)]
            lines.append("| " + " | ".join(md_escape(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- FO vs SO


FO_FIELDS = ["method", "optimizer", "baseline", "metric", "direction", "n", "seeds", "mean_optimizer",
             "mean_baseline", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "favours",
             "mean_diff_by_target"]  # pooled targets: "T0 T1 …" order, space-separated; else empty


def _signed(value: Any) -> str:
    text = format_value(value)
    return "+" + text if as_number(value) is not None and value > 0 else text


def fo_vs_so_markdown(rows: Sequence[Mapping], title: str, baseline: str, level: float = DEFAULT_LEVEL,
                      tuned: bool = False, held_out: str = "") -> str:
    """The FO-vs-SO table; ``tuned``: the cells are each optimizer's chosen setting (say so);
    ``held_out``: how the settings were chosen on other seeds (:func:`tuning.held_out_note`)."""
    b = display_name(baseline)
    pct = f"{level * 100:g} %"
    n_targets = pooled_target_count(rows)
    by_target = [f"Δ per target ({' / '.join(f'T{t}' for t in range(n_targets))})"] if n_targets else []
    header = ["Method", "Optimizer", "Metric", "n", "Optimizer mean", f"{b} mean", f"Δ (opt − {b})",
              *by_target, f"{pct} CI of Δ", "p (paired t)", "p (Wilcoxon)", "Favours"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] * 3 + ["---:"] * (4 + len(by_target)) + [":---:", "---:", "---:", ":---"]) + "|"]
    for r in rows:
        ci = f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]" if r["ci_low"] is not None else NA
        per_target = [" / ".join(_signed(d) if d is not None else NA for d in r.get("by_target") or ())] if n_targets else []
        cells = [str(r["method"]), str(r["optimizer"]), f"{r['label']} {_arrow(r)}", str(r["n"]),
                 format_value(r["mean_a"]), format_value(r["mean_b"]), _signed(r["mean_diff"]), *per_target, ci,
                 format_p(r["p_value"]), format_p(r["p_wilcoxon"]), str(r["favours"] or MISSING)]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    if not rows:
        lines.append(f"| {MISSING} | | | | | | | | | | no method has both {baseline} and another optimizer |")
    per_target_note = (" Pooled over target models: pairs are (target, seed) — T0s1 = seed 1 of the first run folder's "
                       "target (a reference's prepare seed 0) — and "
                       "Δ per target is the paired mean within each target. Pairs of one target share its "
                       "idiosyncrasies, so the pooled CI and p-values count them as more independent than they are; "
                       "a direction that holds within every target is the one to trust.") if n_targets else ""
    ideal = "; →v closer to v is better" if any(r.get("ideal") is not None for r in rows) else ""
    lines += ["", (f"Each optimizer vs {baseline} for the same method, paired by seed (successful seeds both have). "
                   f"Δ = mean over paired seeds of (optimizer − {baseline}); CI = {pct} Student-t interval of the "
                   f"paired differences; p (paired t) = two-sided paired t-test (scipy.stats.ttest_rel), the p-value "
                   f"we report; p (Wilcoxon) = two-sided Wilcoxon signed-rank test, as a distribution-free check; "
                   f"{NA} with fewer than {MIN_PAIRED} paired seeds. Favours = the optimizer with the better mean in "
                   f"the metric's direction (↑ higher / ↓ lower is better{ideal}). "
                   f"No multiple-comparison correction." + per_target_note
                   + (" Each optimizer at its own tuned setting (the leaderboard's Setting column; every setting "
                      "in tuning.md)." if tuned else "") + held_out), ""]
    return "\n".join(lines)


def _arrow(row: Mapping) -> str:
    return row.get("arrow") or ("↑" if row["higher"] else "↓")


def _direction(row: Mapping) -> str:
    """The CSV's direction column: "higher", "lower", or "ideal 0.5" for a metric best at 0.5."""
    if row.get("ideal") is not None:
        return f"ideal {format_value(row['ideal'])}"
    return "higher" if row["higher"] else "lower"


def fo_vs_so_csv(rows: Sequence[Mapping]) -> str:
    def num(v: Any) -> str:
        return NA if v is None else repr(float(v))

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FO_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({"method": r["method"], "optimizer": r["optimizer"], "baseline": r["baseline"],
                         "metric": r["metric"], "direction": _direction(r), "n": r["n"],
                         "seeds": " ".join(str(s) for s in r["seeds"]), "mean_optimizer": num(r["mean_a"]),
                         "mean_baseline": num(r["mean_b"]), "mean_diff": num(r["mean_diff"]),
                         "ci_low": num(r["ci_low"]), "ci_high": num(r["ci_high"]), "p_ttest": num(r["p_value"]),
                         "p_wilcoxon": num(r["p_wilcoxon"]), "favours": r["favours"] or "",
                         "mean_diff_by_target": " ".join(num(d) for d in r.get("by_target") or ())})
    return buf.getvalue()


# --------------------------------------------------------------------------- build


def build_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, metrics: Sequence[Any],
                 rank_by: Any, title: str, tradeoff: Sequence[str] = DEFAULT_TRADEOFF,
                 baseline_optimizer: str = "adamw", *, level: float = DEFAULT_LEVEL,
                 on_conflict: str = "first", figures_too: bool = True, select_by: Any = None,
                 across_targets: bool = False, only_cells: Collection[str] | None = None,
                 card_harness_tasks: Collection[str] = (), select_on_seeds: Collection[int] | None = None,
                 loaded: Sequence[Sequence[dict]] | None = None) -> ReportPaths:
    """Merge the records of ``run_dirs`` and write the report files (see the module docstring).

    ``metrics`` / ``rank_by`` / ``tradeoff`` come from the task card (``rank_by``: metric names or
    ``{"by": names, "require": [...]}``, see :mod:`soul_bench.report.ranking`); ``baseline_optimizer`` is
    the first-order reference of the FO-vs-SO table. ``select_by`` (``rank_by``'s form; default
    ``rank_by``) chooses the setting of each (method, optimizer) that tried several
    (:mod:`soul_bench.report.tuning`): the leaderboard, the FO-vs-SO table and the figures show
    the chosen one; ``tuning.md`` / ``.csv`` list them all. ``across_targets``: pool records of
    several target models, each (target, seed) a seed (see :func:`merge_records`). ``on_conflict``: ``"first"`` (use the first
    record, list the conflict) or ``"error"`` (raise :class:`LeaderboardError`). Returns a
    :class:`ReportPaths`: file name → path (``"conflicts.md"`` only when there are conflicts),
    with ``.conflicts``, ``.duplicates`` and ``.records``. ``only_cells``: read only the records with
    these cell ids (a sweep's own), not whatever else an output folder holds from earlier settings.
    ``card_harness_tasks``: the lm-eval tasks the card runs and reports in its own metrics (no
    automatic columns for them; ``Card.harness_tasks``). ``select_on_seeds``: choose each setting
    on these seeds only and report it on the others (:mod:`soul_bench.report.tuning`). ``loaded``:
    each run folder's records as the caller has read them already (``load_records``), not read again.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise LeaderboardError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    if not run_dirs:
        raise LeaderboardError("no run folder given")
    metrics = list(metrics)
    columns = metric_columns(metrics)
    rank_rule(rank_by, columns)
    select_rule = rank_rule(rank_by if select_by is None else select_by, columns)
    tradeoff_axes(tradeoff, columns)  # fail on bad names before reading anything

    if loaded is None:
        loaded = [lb.load_records(d) for d in run_dirs]
    elif len(loaded) != len(run_dirs):
        raise LeaderboardError(f"loaded: {len(loaded)} record lists for {len(run_dirs)} run folders")
    sources = [(str(d), [r for r in records if only_cells is None or r.get("cell_id") in only_cells])
               for d, records in zip(run_dirs, loaded)]
    records, conflicts, duplicates = merge_records(sources, across_targets)
    # lm-eval tasks the user added (not described by the card) get columns of their own
    metrics += harness_metric_descriptions(records, [column.name for column in columns], card_harness_tasks)
    metrics += probe_metric_descriptions(records, columns)  # headline metrics after a relearning / quantisation attack
    if conflicts and on_conflict == "error":
        raise LeaderboardError(f"{len(conflicts)} conflicting cell(s), e.g. {conflicts[0].describe()}")
    splits = sorted({str(s) for r in records if (s := _split(r)) is not None})
    if len(splits) > 1:
        raise LeaderboardError(f"records from several forget splits ({', '.join(splits)}); "
                                  f"build one report per split")

    every_setting = lb.setting_rows(records, metrics, rank_by, level, select_by, select_on_seeds)
    tuned = is_tuned(every_setting)
    rows = lb.chosen_rows(every_setting, metrics, rank_by)
    # each (method, optimizer) at its chosen setting (on the held-out seeds, with select_on_seeds)
    chosen = selected_records(records, every_setting, select_on_seeds)
    comparison = optimizer_comparison_rows(chosen, metrics, baseline_optimizer, level)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fo_title = f"{title}: optimizers vs {display_name(baseline_optimizer)} (paired over seeds)"

    result = ReportPaths()
    result.conflicts, result.duplicates, result.records = conflicts, duplicates, records
    texts = {
        "leaderboard.md": lb.render_markdown(rows, metrics, rank_by, title, spread="ci", level=level),
        "leaderboard.csv": lb.render_csv(rows, metrics, spread="ci", level=level, rank_by=rank_by),
        "leaderboard.tex": latex.leaderboard_latex(rows, metrics, title, spread="ci", level=level),
        "leaderboard_headline.tex": latex.leaderboard_latex(rows, metrics, title, spread="ci", level=level,
                                                            headline_only=True, label="tab:leaderboard-headline"),
        "fo_vs_so.md": fo_vs_so_markdown(comparison, fo_title, baseline_optimizer, level, tuned, held_out_note(rows)),
        "fo_vs_so.csv": fo_vs_so_csv(comparison),
        "fo_vs_so.tex": latex.fo_vs_so_latex(comparison, fo_title, level=level),
    }
    if conflicts:
        texts["conflicts.md"] = conflicts_markdown(conflicts)
    if tuned:
        all_columns = metric_columns(metrics)  # the card's plus the harness / probe columns added above
        texts["tuning.md"] = tuning_markdown(every_setting, all_columns, select_rule, title, "ci", level)
        texts["tuning.csv"] = tuning_csv(every_setting, all_columns)
    for name, text in texts.items():
        result[name] = write_text(out / name, text)
    stale = ([] if conflicts else ["conflicts.md"]) + ([] if tuned else ["tuning.md", "tuning.csv"])
    for name in stale:  # from an earlier build
        (out / name).unlink(missing_ok=True)
    if figures_too:
        result.update(figures.write_figures(chosen, rows, metrics, out, tradeoff=tradeoff, spread="ci", level=level))
    return result
