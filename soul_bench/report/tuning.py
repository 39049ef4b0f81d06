"""Which setting represents a (method, optimiser) when a sweep tried several (a grid of lr, β, …).

Comparing optimisers at one shared learning rate compares step sizes, not optimisers: SOUL
(Jia et al. 2024, arXiv 2404.18239, Sec. 5) tunes every optimiser's lr on its own. A sweep may
therefore try several values per (method, optimiser) (``--lr 1e-5,3e-5,1e-4``, ``--hparam
npo.beta=0.05,0.1`` or a config's ``grid:``); the records keep every one, and the report picks,
per (method, optimiser), the setting a declared *selection rule* prefers — then the leaderboard,
the FO-vs-SO table and the figures show that setting, and ``tuning.md`` / ``tuning.csv`` list
every setting tried, the chosen one marked.

A setting is everything a cell's hyper-parameters hold except its seed (``spec.hparams`` of the
record: the loop, the method's and the optimiser's values), so records of one setting are its
seeds and records of another are another row — also when they come from separate runs merged
by ``soul-bench report``. The selection rule has the rank rule's form
(:mod:`soul_bench.report.ranking`): lexicographic on metrics, with requirements, e.g. "best
forget quality with model utility ≥ 0.9× the target's" — applied to each setting's mean over its
seeds. By default the same seeds choose and report the setting: an optimistic estimate (the
winner's curse: the best of several noisy means is biased upwards), but equally so for every
optimiser tried over the same budget of values (``tuning.md`` states the budget and says when it
differs). ``select_on_seeds`` removes the bias: the rule sees only those seeds, and the
leaderboard, the FO-vs-SO table and the figures report the chosen setting on the other seeds,
which the choice never saw (the usual validation / test split of hyper-parameter tuning, with
seeds as the split).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from soul_bench.report.columns import MISSING, MetricColumn, format_cell, headline_columns, md_escape
from soul_bench.report.ranking import RankRule
from soul_bench.report.rows import seeds_text, spread_note, spread_of

LOOP, METHOD, OPTIMIZER = "loop", "method", "optimizer"


def setting_of(record: Mapping) -> dict[str, Any]:
    """A record's hyper-parameters without its seed, flat: ``{"optimizer.lr": 3e-4, "method.beta":
    0.1, "loop.steps": 30, …}`` (empty for baselines and records without ``spec.hparams``)."""
    spec = record.get("spec")
    hparams = spec.get("hparams") if isinstance(spec, Mapping) else None
    if not isinstance(hparams, Mapping):
        return {}
    flat: dict[str, Any] = {}
    for section in (LOOP, METHOD, OPTIMIZER):
        for key, value in (hparams.get(section) or {}).items():
            if not (section == LOOP and key == "seed"):
                flat[f"{section}.{key}"] = value
    if hparams.get("lora") is not None:
        flat["lora"] = hparams["lora"]
    return flat


def setting_id(record: Mapping) -> str:
    """A record's setting as canonical text: equal for the seeds of one setting."""
    return json.dumps(setting_of(record), sort_keys=True, default=str)


def varying_keys(settings: Sequence[Mapping]) -> list[str]:
    """The keys whose values differ between ``settings`` (what was tuned), in a stable order."""
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1]


def _short(key: str, keys: Sequence[str]) -> str:
    short = key.rsplit(".", 1)[-1]
    return short if sum(k.rsplit(".", 1)[-1] == short for k in keys) == 1 else key


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)


def setting_label(setting: Mapping, keys: Sequence[str]) -> str:
    """'lr=0.0003, beta=0.1': the tuned values of one setting (keys by their short name when unique)."""
    return ", ".join(f"{_short(k, keys)}={_value_text(setting.get(k))}" for k in keys)


def _order_key(setting: Mapping, keys: Sequence[str]) -> tuple:
    def one(value: Any) -> tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return (0, float(value), "")
        return (1, 0.0, json.dumps(value, sort_keys=True, default=str))
    return tuple(one(setting.get(k)) for k in keys)


def select_settings(rows: list[dict], rule: RankRule, target: Mapping | None) -> None:
    """Mark, per (method, optimiser), the setting ``rule`` prefers: set ``selected``, ``setting``
    (the tuned values, as text), ``n_settings``, ``selection_unmet`` and ``setting_order`` on every
    unlearned row (rows from :func:`soul_bench.report.leaderboard.setting_rows`). Among settings
    with a successful seed, those meeting every requirement come first, then by the rule's
    metrics (mean over seeds), ties by setting order; when none meets them, the setting that misses
    them by the least (relative shortfall summed over requirements) is chosen and says what it
    misses. A pair with no successful setting keeps its first as the row that says why."""
    pairs: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "unlearned":
            pairs.setdefault((row["method"], row["optimizer"]), []).append(row)
    for group in pairs.values():
        keys = varying_keys([r["setting_values"] for r in group])
        group.sort(key=lambda r: _order_key(r["setting_values"], keys))
        for order, row in enumerate(group):
            row.update(setting=setting_label(row["setting_values"], keys), setting_keys=keys,
                       n_settings=len(group), setting_order=order, selected=False,
                       selection_unmet=rule.unmet(row, target) if row["status"] == "ok" and rule.require else [])
        ok = [r for r in group if r["status"] == "ok"]
        # no setting meets the requirements: the one missing them by least (e.g. the highest utility
        # when all fall below 0.9× the target's), not the best forgetter among collapsed models
        chosen = min(ok, key=lambda r: (rule.shortfall(r, target) if rule.require else 0.0, rule.key(r),
                                        r["setting_order"])) if ok else group[0]
        chosen["selected"] = True


def is_tuned(rows: Iterable[Mapping]) -> bool:
    """Whether some (method, optimiser) tried more than one setting."""
    return any(r.get("n_settings", 1) > 1 for r in rows)


def setting_text(row: Mapping) -> str:
    """The Setting cell of a leaderboard row: 'lr=0.0003 (1 of 3)', or '–' with nothing tuned."""
    if row.get("kind") != "unlearned" or not row.get("setting"):
        return MISSING
    return f"{row['setting']} (of {row['n_settings']})"


def selected_records(records: Iterable[Mapping], rows: Iterable[Mapping],
                     select_on_seeds: Collection[Any] | None = None) -> list[Mapping]:
    """The records of the chosen setting of each (method, optimiser), plus every baseline record;
    with ``select_on_seeds``, only the chosen settings' records of the other (held-out) seeds."""
    chosen = {(r["method"], r["optimizer"], r["setting_id"]) for r in rows
              if r["kind"] == "unlearned" and r.get("selected")}
    choose_on = set(select_on_seeds) if select_on_seeds is not None else set()
    out = []
    for record in records:
        kind = record.get("kind") or "unlearned"
        if kind != "unlearned":
            out.append(record)
        elif (record.get("method"), record.get("optimizer"), setting_id(record)) in chosen \
                and record.get("seed") not in choose_on:
            out.append(record)
    return out


def chosen_on_seeds(rows: Iterable[Mapping]) -> str | None:
    """'seed 0' / 'seeds 0, 1': the seeds a held-out selection (``select_on_seeds``) chose on, or
    None when the rows come from an ordinary selection; 'seed 0 of target T0' when the rows pool
    several targets and the choice saw only some of them (reproduce chooses on the first)."""
    rows = list(rows)
    chosen_on = next((r["chosen_on"] for r in rows if r.get("chosen_on")), None)
    if not chosen_on:
        return None
    seeds = f"seed{'s' if len(chosen_on) > 1 else ''} " + ", ".join(str(s) for s in chosen_on)
    targets = next((r["chosen_on_targets"] for r in rows if r.get("chosen_on_targets")), None)
    return f"{seeds} of target{'s' if len(targets) > 1 else ''} {', '.join(targets)}" if targets else seeds


def held_out_note(rows: Iterable[Mapping]) -> str:
    """The sentence the leaderboard and the FO-vs-SO table append after a held-out selection
    (``select_on_seeds``): which seeds chose, and that the rows report the others; else ''."""
    seeds = chosen_on_seeds(rows)
    if seeds is None:
        return ""
    return (f" Settings chosen on {seeds} only; every unlearned row reports "
            f"the chosen setting on the other seeds, which the choice never saw (no winner's curse).")


def budget_note(rows: Sequence[Mapping]) -> str | None:
    """A warning when the optimisers of one method were tuned over different numbers of settings
    (the one tuned more has an edge), else None."""
    by_method: dict[Any, dict[Any, int]] = {}
    for row in rows:
        if row["kind"] == "unlearned":
            by_method.setdefault(row["method"], {})[row["optimizer"]] = row.get("n_settings", 1)
    uneven = [f"{m}: " + ", ".join(f"{o} {n}" for o, n in sorted(counts.items()))
              for m, counts in sorted(by_method.items(), key=lambda kv: str(kv[0])) if len(set(counts.values())) > 1]
    if not uneven:
        return None
    return ("unequal tuning budgets (settings tried per optimiser) — " + "; ".join(uneven)
            + ": the optimiser tuned over more values has an edge")


def tuning_markdown(rows: Sequence[Mapping], columns: list[MetricColumn], rule: RankRule, title: str,
                    spread: str = "ci", level: float = 0.95) -> str:
    """``tuning.md``: every setting of every (method, optimiser), the chosen one marked ✓."""
    heads = headline_columns(columns)
    header = ["Method", "Optimizer", "Setting", "Chosen", "Seeds", *(m.header for m in heads), "Status"]
    lines = [f"# {title}: every setting tried", "",
             "| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join([":---", ":---", ":---", ":---:", "---:", *("---:" for _ in heads), ":---"]) + "|"]
    unlearned = sorted((r for r in rows if r["kind"] == "unlearned" and not r.get("held_out")),
                       key=lambda r: (str(r["method"]), str(r["optimizer"]), r["setting_order"]))
    for row in unlearned:
        unmet = row.get("selection_unmet") or []
        status = str(row["status"]) + (f"; unmet: {', '.join(unmet)}" if unmet else "")
        cells = [str(row["method"]), str(row["optimizer"]), row["setting"] or MISSING,
                 "✓" if row["selected"] else "", seeds_text(row),
                 *(format_cell(row["mean"].get(m.name), spread_of(row, m.name, spread)) for m in heads), status]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    seeds = chosen_on_seeds(unlearned)
    if seeds is not None:
        seeds_clause = (f"This table shows the seeds that chose (settings chosen on {seeds} only); the leaderboard, "
                        f"the FO-vs-SO table and the figures report the chosen setting on the other seeds, which "
                        f"the choice never saw")
    else:
        seeds_clause = "The leaderboard, the FO-vs-SO table and the figures show it; the same seeds choose and report it"
    lines += ["", f"✓ = the setting each (method, optimizer) is reported with: {selection_text(rule)}. "
              f"{seeds_clause}; {spread_note(spread, level)}.", ""]
    note = budget_note(unlearned)
    if note:
        lines += [f"**Note:** {note}.", ""]
    return "\n".join(lines)


def selection_text(rule: RankRule) -> str:
    """The selection rule in words: 'the best Forget quality ↑, then Model utility ↑ (mean over
    seeds) among the settings with Model utility ≥ 0.9× target (if none has, the one closest to it)'."""
    text = "the best " + ", then ".join(m.header for m in rule.by) + " (mean over seeds)" if rule.by else "the first"
    if rule.require:
        text += f" among the settings with {', '.join(r.text for r in rule.require)} (if none has, the one that misses it by least)"
    return text


def tuning_csv(rows: Sequence[Mapping], columns: list[MetricColumn]) -> str:
    """``tuning.csv``: one line per setting — its tuned values, whether chosen, seeds, status and
    the mean of every metric."""
    unlearned = sorted((r for r in rows if r["kind"] == "unlearned" and not r.get("held_out")),
                       key=lambda r: (str(r["method"]), str(r["optimizer"]), r["setting_order"]))
    keys = sorted({k for r in unlearned for k in r.get("setting_keys") or []})
    fields = ["method", "optimizer", *keys, "selected", "n_seeds", "n_failed", "status", "selection_unmet",
              *(m.name for m in columns)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in unlearned:
        out = {"method": row["method"], "optimizer": row["optimizer"], "selected": int(bool(row["selected"])),
               "n_seeds": row["n_seeds"], "n_failed": row["n_failed"], "status": row["status"],
               "selection_unmet": "; ".join(row.get("selection_unmet") or [])}
        out.update({k: _value_text(row["setting_values"].get(k)) if k in row["setting_values"] else "" for k in keys})
        out.update({m.name: "" if row["mean"].get(m.name) is None else repr(row["mean"][m.name]) for m in columns})
        writer.writerow(out)
    return buf.getvalue()
