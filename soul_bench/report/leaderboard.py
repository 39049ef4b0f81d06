"""Leaderboard tables, built from result records only.

Everything here is a pure function of the records (plus the task's metric descriptions and
rank rule), so ``soul-bench report`` can rebuild the outputs at any time without re-running a cell.

* :func:`load_records` reads ``<run_dir>/records/**/*.json``.
* :func:`leaderboard_rows` groups records into one row per (kind, method, optimizer):
  the baselines first (``target``, then the others by kind), then the unlearned cells ranked
  by the rank rule (:mod:`soul_bench.report.ranking`: lexicographic on the ``rank_by`` metrics,
  each in its own sense of better, on the mean over seeds; cells that miss a requirement after
  those that meet them all), then the cells where no seed succeeded, with their reason.
* :func:`write_leaderboard` writes ``leaderboard.md``, ``leaderboard.csv`` and
  ``tradeoff.png``, each one atomically.
* :func:`summary_table` renders the headline columns for the console with rich.
* :func:`render_markdown` / :func:`render_csv` give the table texts without writing them;
  ``spread="ci"`` shows the 95 % Student-t CI half-width over seeds instead of the sample std
  (the report builder, :mod:`soul_bench.report.build`, uses it; ``write_leaderboard`` keeps the
  std by default).

What a metric description may say (a direction or an ideal value) is in
:mod:`soul_bench.report.columns`; the trade-off scatter is :mod:`soul_bench.report.figures`.
The names this module always exported (``format_value``, ``pareto_front``, ``atomic_write``, ...)
are still importable from here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soul_bench.report.columns import (DEFAULT_TRADEOFF, MISSING, LeaderboardError, MetricColumn, as_number,
                                       format_cell, format_value, headline_columns, md_escape, metric_columns,
                                       record_kind, target_weights, targets_in_order, tradeoff_axes)
from soul_bench.report.figures import FIG_DPI, draw_interval, pareto_front, pareto_staircase, tradeoff_scatter
from soul_bench.report.files import atomic_write
from soul_bench.report.ranking import RankRule, best_cells, rank_rule, target_row
from soul_bench.report.rows import (BASELINE_NOTES, CI_LEVEL, SPREADS, baseline_label, baseline_order,
                                    check_spread, group_key, seeds_text, spread_note, spread_of, status_text)
from soul_bench.report.stats import t_half_width
from soul_bench.report.tuning import held_out_note, is_tuned, select_settings, setting_id, setting_of, setting_text

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = [
    "SCHEMA_VERSION", "DEFAULT_TRADEOFF", "MISSING", "SPREADS", "CI_LEVEL", "BASELINE_NOTES", "LeaderboardError",
    "load_records", "leaderboard_rows", "render_markdown", "render_csv", "write_leaderboard", "summary_table",
    "format_value", "format_cell", "spread_note", "atomic_write", "pareto_front", "pareto_staircase",
    "draw_interval",
]

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- records


def load_records(run_dir: str | os.PathLike) -> list[dict]:
    """Every ``*.json`` under ``run_dir/records`` (sorted by path; hidden/temp files skipped).

    Raises :class:`LeaderboardError` (a ``ValueError``) naming the file when one is not a
    valid JSON object of a known schema, or when ``run_dir/records`` does not exist.
    """
    rec_dir = Path(run_dir) / "records"
    if not rec_dir.is_dir():
        raise LeaderboardError(f"no records folder at {rec_dir} (is '{run_dir}' a soul-bench run folder?)")
    paths = sorted(p for p in rec_dir.rglob("*.json")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(rec_dir).parts))
    records = []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LeaderboardError(f"{path}: not a valid JSON record ({e})") from None
        if not isinstance(record, dict):
            raise LeaderboardError(f"{path}: a record must be a JSON object, got {type(record).__name__}")
        schema = record.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise LeaderboardError(f"{path}: record schema {schema!r} is not supported (this soul-bench reads schema {SCHEMA_VERSION})")
        records.append(record)
    return records


def _one_line(text: Any) -> str:
    if text is None:
        return ""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _seed_key(record: Mapping) -> tuple:
    seed = record.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return (0, seed, "")
    return (1, 0, str(seed))


# --------------------------------------------------------------------------- rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    mean = None if math.isnan(mean) else mean
    if len(values) < 2:
        return mean, None
    try:
        std = statistics.stdev(values)  # sample std (n - 1) over seeds
    except (ValueError, OverflowError):
        return mean, None
    return mean, (None if math.isnan(std) else std)


def _ci_half_width(values: list[float], level: float) -> float | None:
    if len(values) < 2:
        return None
    half = t_half_width(values, level)
    return None if half is None or math.isnan(half) else half


def _baseline_label(records: list[dict]) -> str | None:
    # The first record (successful ones first) that names itself wins; a task labels its own references.
    for r in sorted(records, key=lambda r: r.get("status") != "ok"):
        label = r.get("baseline_label")
        if isinstance(label, str) and label.strip():
            return label.strip()
    return None


def _build_row(kind: str, method: Any, optimizer: Any, records: list[dict], columns: list[MetricColumn],
               level: float = CI_LEVEL, empty_status: str = "skipped: no record") -> dict:
    records = sorted(records, key=_seed_key)
    ok = [r for r in records if r.get("status") == "ok"]
    bad = [r for r in records if r.get("status") != "ok"]
    if ok:
        status = "ok"
    elif not bad:
        status = empty_status
    else:
        first = bad[0]
        state = str(first.get("status") or "unknown")
        reason = _one_line(first.get("error"))
        status = f"{state}: {reason}" if reason else state
    row: dict[str, Any] = {
        "rank": None,
        "kind": kind,
        "method": method,
        "optimizer": optimizer,
        "baseline_label": _baseline_label(records) if kind != "unlearned" else None,
        "n_seeds": len(ok),
        "n_failed": len(bad),
        "seeds": [r.get("seed") for r in ok],
        "status": status,
        "unmet": [],
        "mean": {},
        "std": {},
        "ci": {},
        "values": {},
    }
    for m in columns:
        per_seed = [as_number((r.get("metrics") or {}).get(m.name)) for r in ok]
        values = [v for v in per_seed if v is not None]
        row["mean"][m.name], row["std"][m.name] = _mean_std(values)
        row["ci"][m.name] = _ci_half_width(values, level)
        row["values"][m.name] = per_seed
    return row


def _name_key(row: Mapping) -> tuple[str, str]:
    return (str(row["method"] or ""), str(row["optimizer"] or ""))


def setting_rows(records: Iterable[Mapping], metrics: Iterable[Any], rank_by: Any, level: float = CI_LEVEL,
                 select_by: Any = None, select_on_seeds: Collection[Any] | None = None) -> list[dict]:
    """Every row: the baselines, then one row per (method, optimizer, setting) — a setting being
    a cell's hyper-parameters without its seed (:mod:`soul_bench.report.tuning`) — each marked
    ``selected`` when ``select_by`` (the rank rule's form; default ``rank_by``) prefers it among
    its (method, optimizer)'s settings. Unranked; :func:`leaderboard_rows` ranks the chosen ones.

    ``select_on_seeds``: choose on these seeds only and report on the others (held out). The
    setting rows then stand on the selection seeds (``selection_only``: what the rule saw, for
    ``tuning.md``), and each chosen setting gets one more row, ``held_out``, from its records of
    every other seed — the row the leaderboard shows (status "skipped: …" when the chosen
    setting has no record outside the selection seeds)."""
    records = list(records)
    columns = metric_columns(metrics)
    tasks = sorted({str(r.get("task")) for r in records if r.get("task") is not None})
    if len(tasks) > 1:
        raise LeaderboardError(f"records from several tasks ({', '.join(tasks)}); build one leaderboard per task")
    choose_on = None if select_on_seeds is None else set(select_on_seeds)
    groups: dict[tuple, list[dict]] = {}
    held_out: dict[tuple, list[dict]] = {}
    for record in records:
        key = group_key(record)
        if key[0] != "unlearned":
            groups.setdefault(key + ("",), []).append(dict(record))
            continue
        where = groups if choose_on is None or record.get("seed") in choose_on else held_out
        where.setdefault(key + (setting_id(record),), []).append(dict(record))
    rows = []
    for (kind, method, opt, setting), recs in groups.items():
        row = _build_row(kind, method, opt, recs, columns, level)
        if kind == "unlearned":
            row.update(setting_id=setting, setting_values=setting_of(recs[0]))
        rows.append(row)
    baselines = sorted((r for r in rows if r["kind"] != "unlearned"), key=lambda r: (baseline_order(r["kind"]), _name_key(r)))
    select_rule = rank_rule(rank_by if select_by is None else select_by, columns)
    cells = [r for r in rows if r["kind"] == "unlearned"]
    reference = None
    if select_rule.require:
        reference = target_row(baselines)
        if choose_on is not None:
            reference = _selection_target_row(records, groups, columns, level) or reference
    select_settings(cells, select_rule, reference)
    if choose_on is None:
        return baselines + cells
    seeds = ", ".join(str(s) for s in sorted(choose_on, key=str))
    chosen_on_targets = _selection_targets(records, groups)
    copied = ("setting_id", "setting_values", "setting", "setting_keys", "n_settings", "setting_order", "selected",
              "chosen_on") + (("chosen_on_targets",) if chosen_on_targets else ())
    reported = []
    for cell in cells:
        cell["selection_only"] = True
        cell["chosen_on"] = sorted(choose_on, key=str)
        if chosen_on_targets:
            cell["chosen_on_targets"] = chosen_on_targets
        if cell["selected"]:
            recs = held_out.get(("unlearned", cell["method"], cell["optimizer"], cell["setting_id"]), [])
            row = _build_row("unlearned", cell["method"], cell["optimizer"], recs, columns, level,
                             empty_status=f"skipped: the chosen setting has no seed other than the selection seeds ({seeds})")
            row.update({key: cell[key] for key in copied})
            row["held_out"] = True
            reported.append(row)
    return baselines + cells + reported


def _selection_targets(records: list[Mapping], selection: Mapping[tuple, list[dict]]) -> list[str] | None:
    """Pooled over several targets, when the selection seeds' records come from only some of them:
    those targets' labels ("T0", numbered as the FO-vs-SO table does); else None."""
    unlearned = [r for r in records if record_kind(r) == "unlearned"]
    order = targets_in_order(unlearned)
    used = {str(target_weights(r)) for key, recs in selection.items() if key[0] == "unlearned" for r in recs}
    if len(order) < 2 or len(used) == len(order):
        return None
    return [f"T{index}" for index, target in enumerate(order) if target in used]


def _selection_target_row(records: list[Mapping], selection: Mapping[tuple, list[dict]], columns: list,
                          level: float) -> dict | None:
    """The target row of the target models the selection records came from (by their weights'
    fingerprints): a held-out protocol over several embedded targets chooses on the first one, so
    a requirement relative to the target must read that target, not the pool of all of them.
    None when the records carry no fingerprints (then the pooled target row stands)."""
    used = {target_weights(r) for key, recs in selection.items() if key[0] == "unlearned" for r in recs} - {None}
    targets = [dict(r) for r in records if r.get("kind") == "target" and target_weights(r) in used]
    return _build_row("target", None, None, targets, columns, level) if targets else None


def chosen_settings(records: Iterable[Mapping], metrics: Iterable[Any], rank_by: Any,
                    select_by: Any = None) -> dict[tuple[Any, Any], dict[str, Any]]:
    """(method, optimizer) → the setting ``select_by`` chooses among the records' settings (its
    flat hyper-parameters, :func:`soul_bench.report.tuning.setting_of`): what a held-out tuning
    protocol runs again on more seeds."""
    rows = setting_rows(records, metrics, rank_by, select_by=select_by)
    return {(r["method"], r["optimizer"]): r["setting_values"] for r in rows if r["kind"] == "unlearned" and r["selected"]}


def leaderboard_rows(records: Iterable[Mapping], metrics: Iterable[Any], rank_by: Any,
                     level: float = CI_LEVEL, select_by: Any = None,
                     select_on_seeds: Collection[Any] | None = None) -> list[dict]:
    """One row per (kind, method, optimizer), in leaderboard order.

    ``rank_by``: metric names, or ``{"by": names, "require": [...]}`` (or an object with ``by`` /
    ``require``), see :mod:`soul_bench.report.ranking`. When a (method, optimizer) was run with
    several settings (a tuning grid), its row is the setting ``select_by`` (same form; default
    ``rank_by``) chooses — see :func:`setting_rows` and :mod:`soul_bench.report.tuning`; with
    ``select_on_seeds`` it chooses on those seeds and the row reports the chosen setting's other
    (held-out) seeds.

    Order: baselines (``target`` first, then any other non-``unlearned`` kind by name), then the
    unlearned cells with at least one successful seed — those meeting every requirement first,
    then those missing one, each group sorted lexicographically by the mean of each rank metric
    in its own sense of better (missing values last, ties by name) — then the unlearned cells
    where no seed succeeded (by name).

    Each row: ``rank`` (1.. for ranked cells, else None), ``kind``, ``method``, ``optimizer``,
    ``baseline_label`` (a baseline's own label from its records, else None), ``n_seeds``
    (successful seeds), ``n_failed`` (failed/skipped seeds), ``seeds``, ``status`` (``"ok"`` if
    any seed succeeded, else ``"failed: <reason>"`` / ``"skipped: <reason>"``), ``unmet`` (the
    requirements a ranked cell misses, as short texts; empty otherwise), ``mean`` and ``std``
    (dicts metric name -> float or None; std is the sample std over seeds, None with fewer than
    two values), ``ci`` (metric -> half-width of the ``level`` Student-t interval of the mean over
    seeds, None with fewer than two values) and ``values`` (metric -> the per-seed values in
    ``seeds`` order, None where missing). Failed seeds never enter the means. Unlearned rows
    also carry their setting (``setting``, ``n_settings``, ``setting_values``, …).

    A requirement relative to the target with no target row (or no target value) among the
    records is a :class:`LeaderboardError`.
    """
    return chosen_rows(setting_rows(records, metrics, rank_by, level, select_by, select_on_seeds), metrics, rank_by)


def chosen_rows(rows: list[dict], metrics: Iterable[Any], rank_by: Any) -> list[dict]:
    """The leaderboard of :func:`setting_rows`' rows: the baselines, then each (method, optimizer)'s
    chosen setting, ranked (see :func:`leaderboard_rows`)."""
    rule = rank_rule(rank_by, metric_columns(metrics))
    baselines = [r for r in rows if r["kind"] != "unlearned"]
    chosen = [r for r in rows if r["kind"] == "unlearned" and r["selected"] and not r.get("selection_only")]
    cells = [r for r in chosen if r["status"] == "ok"]
    if rule.require:
        target = target_row(baselines)
        for row in cells:
            row["unmet"] = rule.unmet(row, target)
    ranked = sorted(cells, key=lambda r: (bool(r["unmet"]), rule.key(r), _name_key(r)))
    broken = sorted((r for r in chosen if r["status"] != "ok"), key=_name_key)
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i
    return baselines + ranked + broken


# --------------------------------------------------------------------------- markdown / csv


def _rank_note(rule: RankRule, columns: list[MetricColumn], spread: str = "std", level: float = CI_LEVEL) -> str:
    ideal = ("; →v = best at v (ranked and bold by the distance |mean − v|)"
             if any(m.ideal is not None for m in columns) else "")
    return (f"{rule.describe()}; {spread_note(spread, level)}; **bold** = best unlearned value per column{ideal}; "
            f"baselines on top, cells with no successful seed at the bottom.")


def _markdown(rows: list[dict], columns: list[MetricColumn], rule: RankRule, title: str,
              spread: str = "std", level: float = CI_LEVEL) -> str:
    best = best_cells(rows, columns)
    tuned = is_tuned(rows)
    header = ["#", "Method", "Optimizer", *(["Setting"] if tuned else []), "Seeds", *(m.header for m in columns), "Status"]
    align = ["---:", ":---", ":---", *([":---"] if tuned else []), "---:", *("---:" for _ in columns), ":---"]
    lines = [f"# {title}", "", "| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    for i, row in enumerate(rows):
        if row["kind"] == "unlearned":
            method, optimizer = str(row["method"] or MISSING), str(row["optimizer"] or MISSING)
        else:
            method, optimizer = f"*{baseline_label(row)}*", MISSING
        cells = [str(row["rank"]) if row["rank"] is not None else MISSING, method, optimizer,
                 *([setting_text(row)] if tuned else []), seeds_text(row)]
        for m in columns:
            text = format_cell(row["mean"][m.name], spread_of(row, m.name, spread))
            cells.append(f"**{text}**" if i in best.get(m.name, ()) else text)
        cells.append(status_text(row))
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    if not rows:
        lines.append("| " + " | ".join([MISSING] * (len(header) - 1) + ["no records"]) + " |")
    lines += ["", _rank_note(rule, columns, spread, level)
              + (" Setting: the tuned values chosen per (method, optimizer) among those tried (of N); every "
                 "setting is in tuning.md." if tuned else "") + held_out_note(rows), ""]
    return "\n".join(lines)


def _ci_suffix(level: float) -> str:
    return f"_ci{level * 100:g}".replace(".", "_")


def _csv(rows: list[dict], columns: list[MetricColumn], spread: str = "std", level: float = CI_LEVEL,
         with_unmet: bool = False) -> str:
    """CSV with mean and sample std per metric; ``spread="ci"`` adds ``<metric>_ci95`` (CI half-width);
    ``with_unmet`` adds ``unmet`` (the missed requirements, "; "-separated) after ``status``."""
    fields = ["rank", "kind", "method", "optimizer", "n_seeds", "n_failed", "status"]
    row_fields = list(fields)
    tuned = is_tuned(rows)
    if tuned:  # only then: the tables of untuned sweeps keep their columns
        fields[4:4] = ["setting", "n_settings"]
    if with_unmet:
        fields.append("unmet")
    for m in columns:
        fields += [m.name, f"{m.name}_std"] + ([m.name + _ci_suffix(level)] if spread == "ci" else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {k: ("" if row[k] is None else row[k]) for k in row_fields}
        if tuned:
            out["setting"] = row.get("setting") or "" if row["kind"] == "unlearned" else ""
            out["n_settings"] = row.get("n_settings", "") if row["kind"] == "unlearned" else ""
        if with_unmet:
            out["unmet"] = "; ".join(row.get("unmet") or [])
        for m in columns:
            mean, std = row["mean"][m.name], row["std"][m.name]
            out[m.name] = "" if mean is None else repr(mean)
            out[f"{m.name}_std"] = "" if std is None else repr(std)
            if spread == "ci":
                ci = row.get("ci", {}).get(m.name)
                out[m.name + _ci_suffix(level)] = "" if ci is None else repr(ci)
        writer.writerow(out)
    return buf.getvalue()


def render_markdown(rows: list[dict], metrics: Iterable[Any], rank_by: Any, title: str,
                    spread: str = "std", level: float = CI_LEVEL) -> str:
    """The ``leaderboard.md`` text for rows from :func:`leaderboard_rows` (same ``rank_by`` and ``level``)."""
    check_spread(spread)
    columns = metric_columns(metrics)
    return _markdown(list(rows), columns, rank_rule(rank_by, columns), title, spread, level)


def render_csv(rows: list[dict], metrics: Iterable[Any], spread: str = "std", level: float = CI_LEVEL,
               rank_by: Any = None) -> str:
    """The ``leaderboard.csv`` text for rows from :func:`leaderboard_rows` (same ``level``).

    The ``unmet`` column is there when ``rank_by`` has requirements, or (``rank_by`` not given)
    when some row misses one; a ranking without requirements keeps the columns it always had.
    """
    check_spread(spread)
    columns = metric_columns(metrics)
    rows = list(rows)
    if rank_by is not None:
        with_unmet = bool(rank_rule(rank_by, columns).require)
    else:
        with_unmet = any(row.get("unmet") for row in rows)
    return _csv(rows, columns, spread, level, with_unmet)


# --------------------------------------------------------------------------- writing


def write_leaderboard(records: Iterable[Mapping], metrics: Iterable[Any], rank_by: Any,
                      out_dir: str | os.PathLike, title: str,
                      tradeoff: Sequence[str] = DEFAULT_TRADEOFF, *, spread: str = "std") -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``tradeoff.png`` into ``out_dir``.

    ``rank_by``: as for :func:`leaderboard_rows`. ``tradeoff`` = (x metric, y metric) of the
    scatter plot; an axis is log-scaled when its metric has ``log: True``. If the default pair is
    not among the task's metrics, the first two metrics (headline first) are used. ``spread`` =
    "std" (sample std over seeds, the default) or "ci" (95 % t-interval half-width) for the ± and
    the error bars. Returns ``{"md": path, "csv": path, "png": path}``. The full report (LaTeX,
    FO-vs-SO table, PDF figures, several run folders) is :func:`soul_bench.report.build.build_report`.
    """
    check_spread(spread)
    metrics = list(metrics)
    columns = metric_columns(metrics)
    rule = rank_rule(rank_by, columns)
    axes = tradeoff_axes(tradeoff, columns)
    rows = leaderboard_rows(records, metrics, rank_by)
    out = Path(out_dir)

    md = _markdown(rows, columns, rule, title, spread).encode("utf-8")
    table = _csv(rows, columns, spread, with_unmet=bool(rule.require)).encode("utf-8")
    fig = tradeoff_scatter(rows, axes, title, spread=spread)
    paths = {
        "md": atomic_write(out / "leaderboard.md", lambda fh: fh.write(md)),
        "csv": atomic_write(out / "leaderboard.csv", lambda fh: fh.write(table)),
        "png": atomic_write(out / "tradeoff.png",
                             lambda fh: fig.savefig(fh, format="png", dpi=FIG_DPI, metadata={"Software": None})),
    }
    return paths


def summary_table(rows: Sequence[Mapping], metrics: Iterable[Any], title: str, *, spread: str = "std") -> "Table":
    """A rich table of the rows for the console: headline metrics only, plus status (± per ``spread``)."""
    from rich.table import Table
    from rich.text import Text

    columns = headline_columns(metric_columns(metrics))
    rows = list(rows)
    best = best_cells(rows, columns)
    check_spread(spread)
    caption = "bold = best unlearned value" + ("" if spread == "std" else "; ± = 95 % CI half-width over seeds")
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("Method")
    table.add_column("Optimizer")
    tuned = is_tuned(rows)
    if tuned:
        table.add_column("Setting")
    table.add_column("Seeds", justify="right")
    for m in columns:
        table.add_column(m.header, justify="right")
    table.add_column("Status")
    for i, row in enumerate(rows):
        if row["kind"] == "unlearned":
            method = Text(str(row["method"] or MISSING))
            optimizer = Text(str(row["optimizer"] or MISSING))
        else:
            method, optimizer = Text(baseline_label(row), style="italic"), Text(MISSING)
        values = [Text(format_cell(row["mean"].get(m.name), spread_of(row, m.name, spread)),
                       style="bold" if i in best.get(m.name, ()) else "") for m in columns]
        status = str(row["status"])
        if status == "ok":
            style = "yellow" if row.get("unmet") else "green"  # ranked, but below the cells that meet the rule
        else:
            style = "yellow" if status.startswith("skipped") else "red"
        table.add_row(Text(str(row["rank"]) if row["rank"] is not None else MISSING), method, optimizer,
                      *([Text(setting_text(row))] if tuned else []), Text(seeds_text(row)), *values,
                      Text(status_text(row), style=style))
    return table
