"""Metrics best at an ideal value, ranking with requirements, and baselines a task declares.

Hand-made records only (no model). The numbers are chosen so the expected order is obvious:
an MIA AUC is best at 0.5, so means 0.45, 0.62, 0.30 rank 0.45 (0.05 away), 0.62 (0.12), 0.30 (0.2)
— neither "higher is better" (0.62 first) nor "lower is better" (0.30 first) gives that order.
"""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import pytest

from soul_bench.report import figures, latex
from soul_bench.report import leaderboard as lb
from soul_bench.report.build import build_report, fo_vs_so_csv, fo_vs_so_markdown
from soul_bench.report.columns import LeaderboardError, metric_columns
from soul_bench.report.stats import optimizer_comparison_rows

METRICS = [
    {"name": "mia/auc", "label": "MIA AUC", "ideal": 0.5, "headline": True},
    {"name": "general/acc", "label": "general acc", "direction": "higher", "headline": True},
    {"name": "forget/acc", "label": "forget acc", "direction": "lower"},
]


def rec(kind="unlearned", method=None, optimizer=None, seed=0, status="ok", label=None, **metrics):
    r = {"schema": 1, "kind": kind, "task": "wmdp", "method": method, "optimizer": optimizer, "seed": seed,
         "status": status, "metrics": {k.replace("__", "/"): v for k, v in metrics.items()}}
    if label is not None:
        r["baseline_label"] = label
    return r


def cells():
    return [
        rec(method="ga", optimizer="adamw", mia__auc=0.62, general__acc=0.59, forget__acc=0.40),
        rec(method="npo", optimizer="adamw", mia__auc=0.45, general__acc=0.50, forget__acc=0.30),
        rec(method="rmu", optimizer="adamw", mia__auc=0.30, general__acc=0.58, forget__acc=0.26),
    ]


TARGET = rec("target", mia__auc=0.90, general__acc=0.60, forget__acc=0.70)


def order(rows):
    return [r["method"] for r in rows if r["kind"] == "unlearned"]


def md_body(md):
    return [line for line in md.splitlines() if line.startswith("| ")][1:]


# --------------------------------------------------------------------------- ideal values


def test_ideal_metric_ranks_by_distance_to_the_ideal():
    rows = lb.leaderboard_rows(cells(), METRICS, ["mia/auc"])
    assert order(rows) == ["npo", "ga", "rmu"]  # 0.45, 0.62, 0.30
    assert [r["mean"]["mia/auc"] for r in rows] == [0.45, 0.62, 0.30]
    assert [r["rank"] for r in rows] == [1, 2, 3]


def test_distance_is_taken_of_the_mean_over_seeds():
    # seeds 0.3 and 0.7 average to the ideal 0.5, although each seed is 0.2 away
    records = [rec(method="a", optimizer="x", seed=0, mia__auc=0.3), rec(method="a", optimizer="x", seed=1, mia__auc=0.7),
               rec(method="b", optimizer="x", mia__auc=0.55)]
    assert order(lb.leaderboard_rows(records, METRICS, ["mia/auc"])) == ["a", "b"]


def test_ideal_metric_header_bold_and_note_in_markdown():
    records = [TARGET, *cells()]
    rows = lb.leaderboard_rows(records, METRICS, ["mia/auc"])
    md = lb.render_markdown(rows, METRICS, ["mia/auc"], "WMDP")
    header = md.splitlines()[2]
    assert "MIA AUC →0.5" in header and "general acc ↑" in header and "forget acc ↓" in header
    body = md_body(md)
    assert body[1].startswith("| 1 | npo | adamw |") and "**0.45**" in body[1]
    assert "**" not in "".join(line.split("|")[5] for line in body if "| npo |" not in line)  # AUC column
    assert "0.9" in body[0] and "**0.9**" not in body[0]  # baselines never bold
    assert "Ranked by MIA AUC →0.5 (mean over seeds)" in md
    assert "→v = best at v" in md


def test_tie_on_both_sides_of_the_ideal_is_bold_twice():
    records = [rec(method="a", optimizer="x", mia__auc=0.25), rec(method="b", optimizer="x", mia__auc=0.75),
               rec(method="c", optimizer="x", mia__auc=0.9)]
    md = lb.render_markdown(lb.leaderboard_rows(records, METRICS, ["mia/auc"]), METRICS, ["mia/auc"], "t")
    assert md.count("**0.25**") == 1 and md.count("**0.75**") == 1 and "**0.9**" not in md


def test_metric_column_texts():
    auc, general, forget = metric_columns(METRICS)[0], metric_columns(METRICS)[1], metric_columns(METRICS)[2]
    assert (auc.arrow, auc.header, auc.axis_label) == ("→0.5", "MIA AUC →0.5", "MIA AUC (best at 0.5)")
    assert auc.higher is None and auc.better == "closest to 0.5"
    assert (general.arrow, general.higher, general.axis_label) == ("↑", True, "general acc (better →)")
    assert (forget.arrow, forget.higher, forget.axis_label) == ("↓", False, "forget acc (← better)")
    chance = metric_columns([{"name": "mc", "ideal": 0.25}, {"name": "leak", "ideal": 0}])
    assert [m.arrow for m in chance] == ["→0.25", "→0"]
    assert auc.score(0.45) > auc.score(0.62) > auc.score(0.30)


def test_objects_with_attributes_are_metric_descriptions_too():
    # e.g. the task card's pydantic model: direction None next to an ideal value
    described = [SimpleNamespace(name="mia/auc", label="MIA AUC", direction=None, ideal=0.5, headline=True, log=False),
                 SimpleNamespace(name="general/acc", label=None, direction="higher", ideal=None, headline=False,
                                 log=False)]
    auc, general = metric_columns(described)
    assert auc.header == "MIA AUC →0.5" and general.header == "general/acc ↑"
    assert order(lb.leaderboard_rows(cells(), described, ["mia/auc"])) == ["npo", "ga", "rmu"]


@pytest.mark.parametrize("description, message", [
    ({"name": "auc", "direction": "higher", "ideal": 0.5}, "both a direction.*and an ideal"),
    ({"name": "auc"}, "needs a direction.*or an ideal"),
    ({"name": "auc", "direction": None, "ideal": None}, "needs a direction.*or an ideal"),
    ({"name": "auc", "ideal": "half"}, "ideal must be a finite number"),
    ({"name": "auc", "ideal": True}, "ideal must be a finite number"),
    ({"name": "auc", "direction": "up"}, "direction must be 'higher' or 'lower'"),
])
def test_bad_metric_descriptions_are_one_line_errors(description, message):
    with pytest.raises(LeaderboardError, match=message) as info:
        metric_columns([description])
    assert "\n" not in str(info.value) and "auc" in str(info.value)
    with pytest.raises(LeaderboardError):
        lb.leaderboard_rows([], [description], [])


def test_ideal_axis_in_figures():
    rows = lb.leaderboard_rows([TARGET, *cells()], METRICS, ["mia/auc"])
    fig = figures.tradeoff_figure(rows, METRICS, ("general/acc", "mia/auc"), pareto=True)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "MIA AUC (best at 0.5)" and ax.get_xlabel() == "general acc (better →)"
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.lines)  # the guide at the ideal
    # front on (general acc ↑, −|AUC − 0.5|): ga (0.59, 0.12 away) and npo (0.50, 0.05 away); rmu is
    # dominated by ga (lower accuracy, further from 0.5). Front cells are ringed, not joined.
    rings = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines
             if line.get_marker() == "o" and line.get_markerfacecolor() == "none"]
    assert sorted(rings) == [(0.50, 0.45), (0.59, 0.62)]
    assert "Pareto front" in {t.get_text() for t in fig.legends[0].get_texts()}
    bars = figures.bars_figure(rows, METRICS)
    assert bars.axes[0].get_ylabel() == "MIA AUC\n(best at 0.5)"


def test_optimizer_comparison_favours_the_mean_closer_to_the_ideal():
    records = []
    for seed, (adamw, sophia) in enumerate([(0.30, 0.56), (0.35, 0.55), (0.40, 0.54)]):
        records += [rec(method="ga", optimizer="adamw", seed=seed, mia__auc=adamw, general__acc=0.5),
                    rec(method="ga", optimizer="sophia", seed=seed, mia__auc=sophia, general__acc=0.5)]
    rows = optimizer_comparison_rows(records, METRICS, "adamw")
    auc = next(r for r in rows if r["metric"] == "mia/auc")
    assert auc["favours"] == "sophia"  # 0.05 from 0.5 vs 0.15 (a larger AUC, but closer to the ideal)
    assert auc["arrow"] == "→0.5" and auc["higher"] is None and auc["ideal"] == 0.5
    flipped = [dict(r, metrics={"mia/auc": 1.0 - r["metrics"]["mia/auc"] + 0.2}) for r in records]
    # adamw 0.9/0.85/0.8 (0.35 away), sophia 0.64/0.65/0.66 (0.15 away): sophia again, with Δ < 0 now
    again = next(r for r in optimizer_comparison_rows(flipped, METRICS, "adamw") if r["metric"] == "mia/auc")
    assert again["mean_diff"] < 0 and again["favours"] == "sophia"
    assert "MIA AUC →0.5" in fo_vs_so_markdown(rows, "t", "adamw")
    direction = {r["metric"]: r["direction"] for r in csv.DictReader(io.StringIO(fo_vs_so_csv(rows)))}
    assert direction == {"mia/auc": "ideal 0.5", "general/acc": "higher"}
    assert "MIA AUC $\\rightarrow$0.5" in latex.fo_vs_so_latex(rows, "t")


# --------------------------------------------------------------------------- requirements


RELATIVE = {"by": ["mia/auc"], "require": [{"metric": "general/acc", "at_least": 0.95, "relative_to": "target"}]}


def test_cells_missing_a_relative_requirement_rank_after_the_others():
    # target general acc 0.60 -> bound 0.57: npo (0.50) misses it although its AUC is the best
    rows = lb.leaderboard_rows([TARGET, *cells()], METRICS, RELATIVE)
    assert order(rows) == ["ga", "rmu", "npo"]
    assert [r["rank"] for r in rows if r["kind"] == "unlearned"] == [1, 2, 3]
    unmet = {r["method"]: r["unmet"] for r in rows if r["kind"] == "unlearned"}
    assert unmet == {"ga": [], "rmu": [], "npo": ["general acc < 0.95× target"]}
    assert rows[0]["unmet"] == []  # baselines are not judged


def test_unmet_in_markdown_console_and_csv():
    records = [TARGET, *cells()]
    rows = lb.leaderboard_rows(records, METRICS, RELATIVE)
    md = lb.render_markdown(rows, METRICS, RELATIVE, "WMDP")
    npo = next(line for line in md_body(md) if "| npo |" in line)
    assert npo.startswith("| 3 | npo | adamw |") and npo.endswith("| ok; unmet: general acc < 0.95× target |")
    assert "**0.45**" in npo  # still the best AUC value, just not ranked first
    assert next(line for line in md_body(md) if "| ga |" in line).endswith("| ok |")
    assert "cells that meet every requirement (general acc ≥ 0.95× target) rank before those that miss one" in md

    table = list(csv.DictReader(io.StringIO(lb.render_csv(rows, METRICS, rank_by=RELATIVE))))
    assert list(table[0])[:8] == ["rank", "kind", "method", "optimizer", "n_seeds", "n_failed", "status", "unmet"]
    assert [(r["method"], r["unmet"]) for r in table[1:]] == [
        ("ga", ""), ("rmu", ""), ("npo", "general acc < 0.95× target")]
    # without rank_by, the rows themselves say that requirements were missed
    assert "unmet" in lb.render_csv(rows, METRICS).splitlines()[0].split(",")
    # a ranking without requirements keeps the columns it always had
    plain = lb.leaderboard_rows(records, METRICS, ["mia/auc"])
    assert "unmet" not in lb.render_csv(plain, METRICS, rank_by=["mia/auc"]).splitlines()[0].split(",")

    from rich.console import Console

    console = Console(width=220, record=True, color_system=None)
    console.print(lb.summary_table(rows, METRICS, "WMDP"))
    text = console.export_text()
    assert "ok; unmet: general acc < 0.95× target" in text and "MIA AUC →0.5" in text


def test_write_leaderboard_and_build_report_with_requirements(tmp_path):
    import json

    records = [TARGET, *cells()]
    paths = lb.write_leaderboard(records, METRICS, RELATIVE, tmp_path / "lb", "WMDP", tradeoff=("general/acc", "mia/auc"))
    assert "ok; unmet: general acc < 0.95× target" in paths["md"].read_text(encoding="utf-8")
    assert paths["csv"].read_text(encoding="utf-8").splitlines()[0].split(",")[7] == "unmet"

    run = tmp_path / "run"
    (run / "records").mkdir(parents=True)
    for i, r in enumerate(records):
        (run / "records" / f"{i}.json").write_text(json.dumps(r), encoding="utf-8")
    out = build_report([run], tmp_path / "report", METRICS, RELATIVE, "WMDP", tradeoff=("general/acc", "mia/auc"),
                       figures_too=False)
    assert "unmet" in out["leaderboard.csv"].read_text(encoding="utf-8").splitlines()[0]
    assert "ok; unmet: general acc < 0.95× target" in out["leaderboard.md"].read_text(encoding="utf-8")
    tex = out["leaderboard.tex"].read_text(encoding="utf-8")
    assert "3$^\\dagger$ & NPO" in tex and "misses a ranking requirement" in tex
    assert "MIA AUC $\\rightarrow$0.5" in tex


def test_absolute_and_at_most_requirements_and_missing_values():
    rank_by = {"by": ["mia/auc"], "require": [{"metric": "forget/acc", "at_most": 0.35},
                                              {"metric": "general/acc", "at_least": 0.55}]}
    records = [*cells(), rec(method="po", optimizer="adamw", mia__auc=0.5, forget__acc=0.1)]  # no general acc
    rows = lb.leaderboard_rows(records, METRICS, rank_by)  # no target row needed: nothing is relative
    # rmu meets both; the others miss one and follow in AUC order: po 0.5, npo 0.45, ga 0.62
    assert order(rows) == ["rmu", "po", "npo", "ga"]
    unmet = {r["method"]: r["unmet"] for r in rows}
    assert unmet["rmu"] == []
    assert unmet["npo"] == ["general acc < 0.55"]
    assert unmet["po"] == ["general acc missing"]
    assert unmet["ga"] == ["forget acc > 0.35"]


def test_requirements_as_objects():
    ranking = SimpleNamespace(by=["mia/auc"], require=[
        SimpleNamespace(metric="general/acc", at_least=0.95, at_most=None, relative_to="target")])
    assert order(lb.leaderboard_rows([TARGET, *cells()], METRICS, ranking)) == ["ga", "rmu", "npo"]


def test_relative_requirement_without_a_target_row_is_one_clear_line():
    with pytest.raises(LeaderboardError, match="relative to the target, but there is no target row") as info:
        lb.leaderboard_rows(cells(), METRICS, RELATIVE)
    assert "\n" not in str(info.value)

def test_relative_requirement_the_target_cannot_judge_is_named_on_every_row():
    """A target without the metric (it failed, or the harness giving it was off): the leaderboard
    is still built — in rank-metric order, every row saying the requirement was not checked."""
    failed_target = rec("target", status="failed")
    rows = lb.leaderboard_rows([failed_target, *cells()], METRICS, RELATIVE)
    plain = lb.leaderboard_rows(cells(), METRICS, {"by": RELATIVE["by"]})
    assert order(rows) == order(plain)
    assert all(r["unmet"] == ["general acc not checked (the target has no value)"] for r in rows if r["kind"] == "unlearned")


@pytest.mark.parametrize("requirement, message", [
    ({"metric": "nope", "at_least": 1}, "unknown metric.*nope.*mia/auc"),
    ({"metric": "general/acc", "at_least": 0.5, "at_most": 0.9}, "exactly one of at_least / at_most"),
    ({"metric": "general/acc"}, "exactly one of at_least / at_most"),
    ({"metric": "general/acc", "at_least": 0.9, "relative_to": "retain"}, "relative_to must be 'target'"),
    ({"metric": "general/acc", "at_least": "high"}, "bound must be a finite number"),
    ({"metric": "general/acc", "at_lest": 0.9}, "unknown key.*at_lest"),
    ({"at_least": 0.9}, "without a metric name"),
])
def test_bad_requirements_are_one_line_errors(requirement, message):
    rank_by = {"by": ["mia/auc"], "require": [requirement]}
    with pytest.raises(LeaderboardError, match=message) as info:
        lb.leaderboard_rows([TARGET, *cells()], METRICS, rank_by)
    assert "\n" not in str(info.value)


def test_bad_rank_by_shapes():
    with pytest.raises(LeaderboardError, match="unknown key.*order"):
        lb.leaderboard_rows([], METRICS, {"by": ["mia/auc"], "order": "asc"})
    with pytest.raises(LeaderboardError, match="require must be a list"):
        lb.leaderboard_rows([], METRICS, {"by": ["mia/auc"], "require": {"metric": "general/acc", "at_least": 1}})
    with pytest.raises(LeaderboardError, match="rank_by names unknown metric"):
        lb.leaderboard_rows([], METRICS, {"by": ["nope"]})


# --------------------------------------------------------------------------- baselines


BASELINE_METRICS = [{"name": "general/acc", "label": "general acc", "direction": "higher", "headline": True},
                    {"name": "mia/auc", "label": "MIA AUC", "ideal": 0.5, "headline": True}]


def baseline_records():
    return [rec("retain", general__acc=0.59, mia__auc=0.52),
            rec("oracle", general__acc=0.58, mia__auc=0.5, label="oracle (never saw the forget set)"),
            rec("base", general__acc=0.3, mia__auc=0.5),
            TARGET, *cells()]


def test_baseline_labels_and_order():
    rows = lb.leaderboard_rows(baseline_records(), BASELINE_METRICS, ["mia/auc"])
    assert [r["kind"] for r in rows[:4]] == ["target", "base", "oracle", "retain"]  # target, then by kind
    assert [r["baseline_label"] for r in rows[:4]] == [None, None, "oracle (never saw the forget set)", None]
    md = lb.render_markdown(rows, BASELINE_METRICS, ["mia/auc"], "t")
    body = md_body(md)
    assert [line.split(" | ")[1] for line in body[:4]] == [
        "*target (no unlearning)*", "*base*", "*oracle (never saw the forget set)*", "*retain (oracle)*"]
    tex = latex.leaderboard_latex(rows, BASELINE_METRICS, "t")
    assert "\\textit{oracle (never saw the forget set)}" in tex and "\\textit{base}" in tex

    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(lb.summary_table(rows, BASELINE_METRICS, "t"))
    text = console.export_text()
    assert "oracle (never saw the forget set)" in text and "retain (oracle)" in text


def test_a_records_own_label_wins_over_the_usual_note():
    rows = lb.leaderboard_rows([rec("retain", label="retain (trained without F)", general__acc=0.5)],
                               BASELINE_METRICS, [])
    assert "*retain (trained without F)*" in lb.render_markdown(rows, BASELINE_METRICS, [], "t")


def test_figure_styles_of_declared_baselines():
    rows = lb.leaderboard_rows(baseline_records(), BASELINE_METRICS, ["mia/auc"])
    fig = figures.tradeoff_figure(rows, BASELINE_METRICS, ("general/acc", "mia/auc"))
    ax = fig.axes[0]
    markers = {(line.get_xdata()[0], line.get_marker()) for line in ax.lines
               if line.get_markerfacecolor() == "white"}
    assert markers == {(0.6, "X"), (0.59, "*"), (0.58, "d"), (0.3, "d")}
    assert {"target", "retain", "oracle", "base"} <= {t.get_text() for t in ax.texts}
