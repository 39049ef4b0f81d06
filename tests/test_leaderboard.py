"""Leaderboard tables and trade-off figure, built from hand-made records (fast, no model)."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from soul_bench.report import leaderboard as lb
from soul_bench.report.columns import metric_columns, tradeoff_axes
from soul_bench.report.figures import tradeoff_scatter
from soul_bench.report.leaderboard import (format_value, leaderboard_rows, load_records, summary_table,
                                           write_leaderboard)

METRICS = [
    {"name": "forget_quality", "label": "Forget quality", "direction": "higher", "headline": True, "log": True},
    {"name": "forget/rouge", "label": "Forget ROUGE", "direction": "lower", "headline": False, "log": False},
    {"name": "model_utility", "label": "Model utility", "direction": "higher", "headline": True, "log": False},
]
RANK_BY = ["forget_quality", "model_utility"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rec(kind="unlearned", method=None, optimizer=None, seed=0, status="ok", error=None, **metrics):
    r = {
        "schema": 1, "cell_id": f"tofu-forget10-{method}-{optimizer}-s{seed}-{kind}", "kind": kind,
        "task": "tofu", "method": method, "optimizer": optimizer, "seed": seed, "status": status,
        "metrics": {k.replace("__", "/"): v for k, v in metrics.items()}, "spec": {"ignored": True},
    }
    if error is not None:
        r["error"] = error
    return r


@pytest.fixture
def records():
    # Hand-checked ranking (forget_quality ↑, then model_utility ↑):
    #   ga-sophia fq 0.8           -> 1
    #   npo-adamw fq 0.5, mu 0.52  -> 2 (ties ga-adamw on fq, wins on mu)
    #   ga-adamw  fq mean 0.5, mu mean 0.45 -> 3
    #   npo-sophia fq 0.1          -> 4
    return [
        rec("unlearned", "npo", "sophia", forget_quality=0.1, model_utility=0.55, forget__rouge=0.5),
        rec("unlearned", "ga", "adamw", seed=1, forget_quality=0.75, model_utility=0.50, forget__rouge=0.20),
        rec("retain", forget_quality=0.9, model_utility=0.59, forget__rouge=0.40),
        rec("unlearned", "simnpo", "sophia", status="failed", error="CUDA out of memory\nTraceback ...", metrics=None),
        rec("unlearned", "ga", "sophia", forget_quality=0.8, model_utility=0.30, forget__rouge=0.05),
        rec("target", forget_quality=1e-5, model_utility=0.60, forget__rouge=0.95),
        rec("unlearned", "ga", "adamw", seed=0, forget_quality=0.25, model_utility=0.40, forget__rouge=0.30),
        rec("unlearned", "npo", "adamw", forget_quality=0.5, model_utility=0.52, forget__rouge=0.35),
    ]


def names(rows):
    return [(r["kind"], r["method"], r["optimizer"]) for r in rows]


EXPECTED_ORDER = [
    ("target", None, None), ("retain", None, None),
    ("unlearned", "ga", "sophia"), ("unlearned", "npo", "adamw"), ("unlearned", "ga", "adamw"),
    ("unlearned", "npo", "sophia"), ("unlearned", "simnpo", "sophia"),
]


def test_row_order_follows_rank_rule(records):
    rows = leaderboard_rows(records, METRICS, RANK_BY)
    assert names(rows) == EXPECTED_ORDER
    assert [r["rank"] for r in rows] == [None, None, 1, 2, 3, 4, None]


def test_rank_direction_lower_is_better(records):
    rows = leaderboard_rows(records, METRICS, ["forget/rouge"])
    ranked = [(r["method"], r["optimizer"]) for r in rows if r["rank"] is not None]
    assert ranked == [("ga", "sophia"), ("ga", "adamw"), ("npo", "adamw"), ("npo", "sophia")]  # 0.05 < 0.25 < 0.35 < 0.5


def test_rank_by_unknown_metric_is_a_clear_error(records):
    with pytest.raises(ValueError, match="nope.*forget_quality"):
        leaderboard_rows(records, METRICS, ["nope"])


def test_mean_and_std_over_seeds(records):
    rows = {(r["method"], r["optimizer"]): r for r in leaderboard_rows(records, METRICS, RANK_BY)}
    two = rows[("ga", "adamw")]
    assert two["n_seeds"] == 2 and two["seeds"] == [0, 1] and two["status"] == "ok"
    assert two["mean"]["forget_quality"] == pytest.approx(0.5)
    assert two["std"]["forget_quality"] == pytest.approx(math.sqrt(2 * 0.25**2))  # sample std: 0.353553...
    assert two["mean"]["model_utility"] == pytest.approx(0.45)
    assert two["std"]["model_utility"] == pytest.approx(math.sqrt(0.005))  # 0.0707107
    assert two["mean"]["forget/rouge"] == pytest.approx(0.25)
    one = rows[("npo", "adamw")]
    assert one["n_seeds"] == 1 and one["mean"]["model_utility"] == pytest.approx(0.52)
    assert one["std"]["model_utility"] is None


def test_failed_cell_at_bottom_with_reason(records):
    last = leaderboard_rows(records, METRICS, RANK_BY)[-1]
    assert (last["method"], last["optimizer"]) == ("simnpo", "sophia")
    assert last["status"] == "failed: CUDA out of memory"
    assert last["n_seeds"] == 0 and last["rank"] is None
    assert all(v is None for v in last["mean"].values())


def test_partly_failed_cell_uses_successful_seeds_only():
    records = [rec("unlearned", "ga", "adamw", seed=0, forget_quality=0.2, model_utility=0.4),
               rec("unlearned", "ga", "adamw", seed=1, status="failed", error="nan loss", forget_quality=99.0),
               rec("unlearned", "ga", "sgd", seed=0, status="skipped", error="optimizer not installed")]
    rows = leaderboard_rows(records, METRICS, RANK_BY)
    assert names(rows) == [("unlearned", "ga", "adamw"), ("unlearned", "ga", "sgd")]
    assert rows[0]["status"] == "ok" and rows[0]["n_seeds"] == 1 and rows[0]["n_failed"] == 1
    assert rows[0]["mean"]["forget_quality"] == pytest.approx(0.2)
    assert rows[1]["status"] == "skipped: optimizer not installed"


def test_missing_metric_values_sort_last_and_never_crash():
    records = [rec("unlearned", "a", "x", forget_quality=None, model_utility=0.9),
               rec("unlearned", "b", "x", forget_quality=float("nan"), model_utility=0.1),
               rec("unlearned", "c", "x", forget_quality=0.01)]
    rows = leaderboard_rows(records, METRICS, RANK_BY)
    assert [r["method"] for r in rows] == ["c", "a", "b"]
    assert rows[0]["mean"]["model_utility"] is None and rows[2]["mean"]["forget_quality"] is None


def test_records_from_several_tasks_are_refused(records):
    other = rec("unlearned", "ga", "adamw", forget_quality=0.1)
    other["task"] = "wmdp"
    with pytest.raises(ValueError, match="several tasks"):
        leaderboard_rows(records + [other], METRICS, RANK_BY)


@pytest.mark.parametrize("value, text", [(0.0123, "0.0123"), (0.41234, "0.412"), (1.2e-05, "1.2e-05"),
                                         (None, "–"), (float("nan"), "–"), (0, "0"), (1.0, "1"),
                                         (1234.56, "1235"), (2.5e7, "2.5e+07")])
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.fixture
def written(records, tmp_path):
    out = tmp_path / "lb"
    paths = write_leaderboard(records, METRICS, RANK_BY, out, "TOFU forget10")
    return out, paths


def md_rows(md):
    return [line for line in md.splitlines() if line.startswith("| ")]


def test_markdown_table(written):
    out, paths = written
    assert paths["md"] == out / "leaderboard.md"
    md = paths["md"].read_text(encoding="utf-8")
    assert md.startswith("# TOFU forget10")
    header, *body = md_rows(md)
    # headline metrics first (card order otherwise), arrows by direction
    assert header.index("Forget quality ↑") < header.index("Model utility ↑") < header.index("Forget ROUGE ↓")
    assert "Status" in header
    assert len(body) == 7
    assert "target" in body[0] and "retain" in body[1]
    assert body[2].startswith("| 1 | ga | sophia |")
    assert body[-1].startswith("| – | simnpo | sophia |") and "failed: CUDA out of memory" in body[-1]
    # several seeds -> mean ± std; best unlearned value per column in bold (not the baselines' 0.6 utility)
    ga_adamw = next(line for line in body if "| ga | adamw |" in line)
    assert "0.5 ± 0.354" in ga_adamw and "0.45 ± 0.0707" in ga_adamw
    assert "**0.8**" in body[2]  # best forget quality (higher)
    assert "**0.05**" in body[2]  # best forget ROUGE (lower)
    assert "**0.55**" in next(line for line in body if "| npo | sophia |" in line)  # best utility
    assert "**" not in body[0] + body[1] and "**" not in body[-1]
    assert sum(line.count("**") for line in body) == 2 * 3  # one bold cell per metric column
    assert "Ranked by Forget quality ↑, then Model utility ↑" in md


def test_csv_columns_and_values(written):
    _, paths = written
    with open(paths["csv"], newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["rank", "kind", "method", "optimizer", "n_seeds", "n_failed", "status",
                                 "forget_quality", "forget_quality_std", "model_utility", "model_utility_std",
                                 "forget/rouge", "forget/rouge_std"]
    assert [(r["kind"], r["method"] or None, r["optimizer"] or None) for r in rows] == EXPECTED_ORDER
    ga_adamw = rows[4]
    assert ga_adamw["rank"] == "3" and ga_adamw["n_seeds"] == "2"
    assert float(ga_adamw["forget_quality"]) == pytest.approx(0.5)
    assert float(ga_adamw["forget_quality_std"]) == pytest.approx(0.3535534, rel=1e-6)
    assert float(rows[0]["forget_quality"]) == pytest.approx(1e-5)
    assert rows[2]["forget_quality_std"] == ""  # one seed: no std
    assert rows[-1]["status"] == "failed: CUDA out of memory" and rows[-1]["forget_quality"] == ""


def test_png_written_and_no_temp_files_left(written):
    out, paths = written
    assert paths["png"] == out / "tradeoff.png"
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(out)) == ["leaderboard.csv", "leaderboard.md", "tradeoff.png"]


def test_crash_while_writing_keeps_old_file_and_leaves_no_temp(written, records, monkeypatch):
    out, paths = written
    old_png = paths["png"].read_bytes()

    def broken_savefig(self, fh, **kwargs):
        fh.write(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        write_leaderboard(records, METRICS, RANK_BY, out, "TOFU forget10")
    assert paths["png"].read_bytes() == old_png
    assert sorted(os.listdir(out)) == ["leaderboard.csv", "leaderboard.md", "tradeoff.png"]


def test_write_with_nothing_to_show_does_not_crash(tmp_path):
    failed = [rec("unlearned", "ga", "adamw", status="failed", error="boom")]
    for records in ([], failed):
        paths = write_leaderboard(records, METRICS, RANK_BY, tmp_path, "empty")
        assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert "failed: boom" in paths["md"].read_text(encoding="utf-8")


def test_tradeoff_axes_and_fallback(records, tmp_path):
    with pytest.raises(ValueError, match="tradeoff.*nope"):
        write_leaderboard(records, METRICS, RANK_BY, tmp_path, "t", tradeoff=("nope", "forget_quality"))
    specs = metric_columns(METRICS)
    x, y = tradeoff_axes(("forget/rouge", "model_utility"), specs)
    assert (x.name, y.name) == ("forget/rouge", "model_utility")
    other_task = [{"name": "acc", "direction": "higher", "headline": True},
                  {"name": "bio", "direction": "lower", "headline": True}]
    x, y = tradeoff_axes(lb.DEFAULT_TRADEOFF, metric_columns(other_task))
    assert (x.name, y.name) == ("acc", "bio")


def test_figure_content(records):
    rows = leaderboard_rows(records, METRICS, RANK_BY)
    specs = {m.name: m for m in metric_columns(METRICS)}
    fig = tradeoff_scatter(rows, (specs["model_utility"], specs["forget_quality"]), "TOFU")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "Model utility (better →)" and ax.get_ylabel() == "Forget quality (better →)"
    assert fig.get_size_inches()[0] == pytest.approx(3.5)
    texts = {t.get_text() for t in ax.texts}
    assert {"target", "retain"} <= texts
    legend_labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"GA", "NPO", "AdamW", "Sophia"} <= legend_labels


def test_summary_table_headline_only(records):
    from rich.console import Console

    rows = leaderboard_rows(records, METRICS, RANK_BY)
    table = summary_table(rows, METRICS, "TOFU")
    assert [c.header for c in table.columns] == ["#", "Method", "Optimizer", "Seeds", "Forget quality ↑",
                                                 "Model utility ↑", "Status"]
    assert table.row_count == 7
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "0.5 ± 0.354" in text and "failed: CUDA out of memory" in text


def test_load_records(records, tmp_path):
    rec_dir = tmp_path / "records"
    (rec_dir / "sub").mkdir(parents=True)
    for i, r in enumerate(records[:3]):
        (rec_dir / ("sub" if i == 0 else ".") / f"{i}.json").write_text(json.dumps(r))
    (rec_dir / ".3.json").write_text("{half")  # a hidden (temp) file is skipped
    loaded = load_records(tmp_path)
    assert len(loaded) == 3 and {r["cell_id"] for r in loaded} == {r["cell_id"] for r in records[:3]}


def test_load_records_names_the_corrupt_file(tmp_path):
    rec_dir = tmp_path / "records"
    rec_dir.mkdir()
    (rec_dir / "good.json").write_text(json.dumps(rec("target", forget_quality=0.1)))
    (rec_dir / "tofu-ga-adamw-s0.json").write_text('{"schema": 1, "metrics": {')
    with pytest.raises(ValueError, match="tofu-ga-adamw-s0.json"):
        load_records(tmp_path)


def test_load_records_without_records_folder(tmp_path):
    with pytest.raises(ValueError, match="no records folder"):
        load_records(tmp_path / "nowhere")


def test_harness_metrics_outside_the_card_get_columns_with_their_direction():
    from soul_bench.report.columns import harness_metric_descriptions

    records = [{"metrics": {"harness/mmlu/acc": 0.4, "harness/mmlu/acc_stderr": 0.01, "harness/wikitext/word_perplexity": 20.0,
                            "harness/gsm8k/exact_match/strict-match": 0.1, "harness/tofu_mc/acc": 0.9,
                            "harness/tofu_mc/acc_norm": 0.8, "forget/prob": 0.5}}]  # the card shows tofu_mc's acc only
    described = harness_metric_descriptions(records, ["harness/tofu_mc/acc"])
    assert [(d["name"], d["direction"]) for d in described] == [
        ("harness/gsm8k/exact_match/strict-match", "higher"), ("harness/mmlu/acc", "higher"),
        ("harness/wikitext/word_perplexity", "lower")]
    assert described[0]["label"] == "gsm8k exact_match/strict-match"


def test_harness_tasks_the_card_summarises_get_no_columns_of_their_own():
    """WMDP's card reports wmdp_syn_hazard / wmdp_syn_general as hazard/acc and general/acc; their
    raw lm-eval metrics must not come back as four extra columns, while a task the user added does."""
    from soul_bench.registry import load_task
    from soul_bench.report.columns import harness_metric_descriptions

    card = load_task("wmdp").card
    assert {"wmdp_syn_hazard", "wmdp_syn_general", "mmlu"} <= set(card.harness_tasks)
    records = [{"metrics": {"harness/wmdp_syn_hazard/acc": 0.7, "harness/wmdp_syn_general/acc_norm": 0.8,
                            "harness/arc_easy/acc": 0.5, "hazard/acc": 0.7}}]
    described = harness_metric_descriptions(records, [m.name for m in card.metrics], card.harness_tasks)
    assert [d["name"] for d in described] == ["harness/arc_easy/acc"]
