"""Report statistics, LaTeX tables, FO-vs-SO comparison, merging of run folders, figures.

Hand-made records only (no model), so the whole file runs in seconds. To look at the figures:
``python tests/test_report.py /tmp/report_test`` renders the fixture's report there.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import pytest
from scipy import stats as sps

from soul_bench.report import figures, latex
from soul_bench.report import leaderboard as lb
from soul_bench.report.build import build_report, merge_records
from soul_bench.report.stats import (format_p, mean_ci, optimizer_comparison_rows, paired_comparison,
                                     t_half_width)

METRICS = [
    {"name": "forget_quality", "label": "Forget quality", "direction": "higher", "headline": True, "log": True},
    {"name": "model_utility", "label": "Model utility", "direction": "higher", "headline": True},
    {"name": "forget/rouge", "label": "Forget ROUGE-L", "direction": "lower", "headline": True},
    {"name": "retain/prob", "label": "Retain Prob.", "direction": "higher"},
]
RANK_BY = ["forget_quality", "model_utility"]
TRADEOFF = ("model_utility", "forget_quality")
SEEDS = (0, 1, 2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (method, optimizer) -> metric -> per-seed values (seeds 0, 1, 2), chosen so means / CIs are easy:
# ga×adamw utility 0.40 / 0.45 / 0.50: mean 0.45, s = 0.05, CI half-width t(.975, 2)·0.05/√3 = 0.12421.
CELLS = {
    ("ga", "adamw"): {"forget_quality": [0.01, 0.02, 0.03], "model_utility": [0.40, 0.45, 0.50],
                      "forget/rouge": [0.30, 0.35, 0.40], "retain/prob": [0.5, 0.5, 0.5]},
    ("ga", "sophia"): {"forget_quality": [0.10, 0.25, 0.30], "model_utility": [0.38, 0.44, 0.47],
                       "forget/rouge": [0.20, 0.22, 0.27], "retain/prob": [0.6, 0.6, 0.6]},
    ("npo", "adamw"): {"forget_quality": [0.05, 0.06, 0.08], "model_utility": [0.55, 0.56, 0.57],
                       "forget/rouge": [0.45, 0.42, 0.44], "retain/prob": [0.7, 0.7, 0.7]},
    ("npo", "sophia"): {"forget_quality": [0.20, 0.30, 0.45], "model_utility": [0.51, 0.53, 0.52],
                        "forget/rouge": [0.33, 0.37, 0.36], "retain/prob": [0.8, 0.8, 0.8]},
}
BASELINES = {
    "target": {"forget_quality": 1.2e-5, "model_utility": 0.60, "forget/rouge": 0.97, "retain/prob": 0.9},
    "retain": {"forget_quality": 1.0, "model_utility": 0.59, "forget/rouge": 0.38, "retain/prob": 0.88},
}
MIA_STRENGTH = {"target": 2.6, "retain": 0.05, "adamw": 1.1, "sophia": 0.45}  # binormal ROC separation


def _roc(d: float) -> dict:
    fpr = [i / 50 for i in range(51)]
    tpr = [0.0 if f == 0 else 1.0 if f == 1 else float(sps.norm.cdf(sps.norm.ppf(f) + d)) for f in fpr]
    return {"fpr": fpr, "tpr": tpr}


def _train_log(method: str, optimizer: str, seed: int, steps: int = 120) -> list[dict]:
    rate = 0.035 if optimizer == "sophia" else 0.02
    log = []
    for step in range(steps):
        noise = 0.15 * math.sin(1.7 * step + 2.1 * seed) + 0.05 * seed
        ce_forget = 0.1 + 4.0 * (1 - math.exp(-rate * step)) + noise
        if method == "ga":
            entry = {"loss": -ce_forget, "ce_forget": ce_forget}
        else:
            npo = 0.69 * math.exp(-rate * step) + 0.02 * noise
            ce_retain = 0.3 + (0.25 if optimizer == "sophia" else 0.4) * (1 - math.exp(-0.01 * step)) + 0.03 * noise
            entry = {"loss": npo + ce_retain, "npo": npo, "nll_forget": ce_forget, "ce_retain": ce_retain}
        log.append({"step": step, "grad_norm": 1.0, "lr": 1e-4, **entry})
    return log


def make_record(kind="unlearned", method=None, optimizer=None, seed=None, metrics=None, mia=False, **extra):
    name = "-".join(str(p) for p in ("tofu", "forget10", kind, method, optimizer, f"s{seed}") if p and p != "sNone")
    record = {"schema": 1, "cell_id": f"{name}-abcd1234", "kind": kind, "task": "tofu", "method": method,
              "optimizer": optimizer, "seed": seed, "status": "ok", "error": None, "metrics": dict(metrics or {}),
              "spec": {"forget_split": "forget10"}, "per_item": {}}
    if mia:
        d = MIA_STRENGTH[kind if kind != "unlearned" else optimizer] + (0.1 * seed if seed else 0.0)
        # the layout the TOFU task writes: per_item["mia"]["roc"][attack] = {"fpr": [...], "tpr": [...]}
        record["per_item"]["mia"] = {"members": "forget", "nonmembers": "holdout", "k": 0.4, "notes": [],
                                     "auc": {"loss": None, "min_k": None},
                                     "roc": {"loss": _roc(d), "min_k": _roc(0.8 * d)}}
    if kind == "unlearned":
        record["train_log"] = _train_log(method, optimizer, seed)
    record.update(extra)
    return record


def fixture_records(mia: bool = False) -> list[dict]:
    records = [make_record(kind, metrics=values, mia=mia) for kind, values in BASELINES.items()]
    for (method, optimizer), values in CELLS.items():
        for i, seed in enumerate(SEEDS):
            metrics = {name: v[i] for name, v in values.items()}
            records.append(make_record("unlearned", method, optimizer, seed, metrics, mia=mia))
    return records


def write_run(run_dir: Path, records: list[dict]) -> Path:
    (run_dir / "records").mkdir(parents=True, exist_ok=True)
    for r in records:
        (run_dir / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r), encoding="utf-8")
    return run_dir


def build_fixture_report(out: Path, mia: bool = True, figures_too: bool = True):
    run = write_run(out.parent / f"{out.name}_run", fixture_records(mia=mia))
    return build_report([run], out, METRICS, RANK_BY, "TOFU forget10 (fixture)", TRADEOFF, figures_too=figures_too)


# --------------------------------------------------------------------------- stats


def test_mean_ci_matches_scipy_and_hand_computation():
    mean, low, high = mean_ci([0.40, 0.45, 0.50])
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t_{0.975, 2} = 4.3027 (tables)
    assert mean == pytest.approx(0.45)
    assert (low, high) == (pytest.approx(0.45 - half), pytest.approx(0.45 + half))
    assert half == pytest.approx(0.1242069, rel=1e-6)

    data = [2.1, 3.4, 1.9, 5.0, 4.2, 3.3]
    lo, hi = sps.t.interval(0.9, len(data) - 1, loc=sps.tmean(data), scale=sps.sem(data))
    m, low, high = mean_ci(data, level=0.9)
    assert m == pytest.approx(sum(data) / 6) and low == pytest.approx(lo) and high == pytest.approx(hi)


def test_mean_ci_edge_cases():
    assert mean_ci([0.3]) == (0.3, None, None)
    assert mean_ci([]) == (None, None, None)
    assert mean_ci([0.3, None, float("nan")]) == (0.3, None, None)
    assert mean_ci([0.2, 0.2, 0.2]) == (pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2))
    assert t_half_width([1.0]) is None
    with pytest.raises(ValueError, match="level"):
        mean_ci([1, 2], level=95)


def test_paired_comparison_matches_scipy():
    a = {0: 0.10, 1: 0.25, 2: 0.30, 3: 0.41, 4: 0.2}
    b = {0: 0.01, 1: 0.02, 2: 0.03, 3: 0.30, 4: 0.25, 9: 0.9}  # seed 9 has no partner
    out = paired_comparison(a, b)
    seeds = [0, 1, 2, 3, 4]
    xa, xb = [a[s] for s in seeds], [b[s] for s in seeds]
    diffs = [x - y for x, y in zip(xa, xb)]
    assert out["n"] == 5 and out["seeds"] == seeds and out["test"] == "paired t-test"
    assert out["mean_diff"] == pytest.approx(sum(diffs) / 5)
    ref = sps.ttest_rel(xa, xb)
    assert out["p_value"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert out["p_wilcoxon"] == pytest.approx(sps.wilcoxon(xa, xb).pvalue)


def test_paired_comparison_needs_three_pairs():
    out = paired_comparison({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.4, 1: 0.5, 5: 0.1})
    assert out["n"] == 2 and out["mean_diff"] == pytest.approx(0.15)
    assert out["ci_low"] is out["ci_high"] is out["p_value"] is out["p_wilcoxon"] is None
    assert out["test"] == "n/a" and format_p(out["p_value"]) == "n/a"
    empty = paired_comparison({}, {0: 1.0})
    assert empty["n"] == 0 and empty["mean_diff"] is None


def test_paired_comparison_identical_samples():
    out = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert out["mean_diff"] == 0 and out["p_value"] == 1.0 and out["p_wilcoxon"] == 1.0


@pytest.mark.parametrize("p, text", [(None, "n/a"), (0.0312, "0.031"), (0.41, "0.41"), (1.0, "1"), (2e-5, "<0.001")])
def test_format_p(p, text):
    assert format_p(p) == text


# --------------------------------------------------------------------------- leaderboard with CI


def test_rows_carry_ci_and_seed_values():
    rows = {(r["method"], r["optimizer"]): r for r in lb.leaderboard_rows(fixture_records(), METRICS, RANK_BY)}
    ga = rows[("ga", "adamw")]
    assert ga["ci"]["model_utility"] == pytest.approx(0.1242069, rel=1e-6)
    assert ga["values"]["model_utility"] == [0.40, 0.45, 0.50]
    assert rows[(None, None)]["ci"]["model_utility"] is None  # a baseline: one record


def test_leaderboard_markdown_csv_with_ci(tmp_path):
    paths = build_fixture_report(tmp_path / "rep", mia=False, figures_too=False)
    md = paths["leaderboard.md"].read_text(encoding="utf-8")
    body = [line for line in md.splitlines() if line.startswith("| ")][1:]
    # ranking by forget quality: npo×sophia (0.317) > ga×sophia (0.217) > npo×adamw (0.0633) > ga×adamw (0.02)
    assert [line.split(" | ")[1:3] for line in body[2:]] == [["npo", "sophia"], ["ga", "sophia"],
                                                             ["npo", "adamw"], ["ga", "adamw"]]
    ga_adamw = body[-1]
    assert ga_adamw.startswith("| 4 | ga | adamw | 3 |")
    assert "0.45 ± 0.124" in ga_adamw and "0.02 ± 0.0248" in ga_adamw
    assert "**0.317 ± 0.313**" in body[2]  # best forget quality, bold with its CI
    assert "95 % Student-t confidence interval" in md and "sample std" not in md
    with open(paths["leaderboard.csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["model_utility_ci95"]) == pytest.approx(0.1242069, rel=1e-6)
    assert float(rows[-1]["model_utility_std"]) == pytest.approx(0.05)
    assert rows[0]["model_utility_ci95"] == ""  # target: one record, no interval


def test_write_leaderboard_keeps_std_by_default(tmp_path):
    paths = lb.write_leaderboard(fixture_records(), METRICS, RANK_BY, tmp_path, "t")
    md = paths["md"].read_text(encoding="utf-8")
    assert "0.45 ± 0.05" in md and "sample std" in md


# --------------------------------------------------------------------------- LaTeX


def test_leaderboard_latex():
    records = fixture_records()
    records += [make_record("unlearned", "npo_rt", "adamw", 0, status="failed", error="non-finite loss & stop",
                            metrics={})]
    rows = lb.leaderboard_rows(records, METRICS, RANK_BY)
    tex = latex.leaderboard_latex(rows, METRICS, "TOFU forget_10 & more")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert rule in tex
    assert tex.count("\\begin{tabular}") == 1 and "\\begin{table}" in tex  # 4 metric columns: one column wide
    assert "TOFU forget\\_10 \\& more" in tex
    assert "npo\\_rt" in tex and "non-finite loss \\& stop" in tex
    header = next(line for line in tex.splitlines() if line.strip().startswith("\\#"))
    assert header.index("Forget quality $\\uparrow$") < header.index("Model utility $\\uparrow$") \
        < header.index("Forget ROUGE-L $\\downarrow$") < header.index("Retain Prob. $\\uparrow$")
    npo_sophia = next(line for line in tex.splitlines() if line.strip().startswith("1 & NPO & Sophia"))
    assert "\\textbf{0.317} {\\scriptsize$\\pm$\\,0.313}" in npo_sophia  # best forget quality
    assert tex.count("\\textbf{") == 4 + 1  # one best per metric column + "bold" in the caption
    target = next(line for line in tex.splitlines() if "target (no unlearning)" in line)
    assert "1.2$\\times10^{-5}$" in target and "\\pm" not in target


def test_wide_leaderboard_latex_is_scaled_table_star():
    many = METRICS + [{"name": f"extra_{i}", "label": f"Extra {i}", "direction": "higher"} for i in range(3)]
    rows = lb.leaderboard_rows(fixture_records(), many, RANK_BY)
    tex = latex.leaderboard_latex(rows, many, "wide")
    assert "\\begin{table*}" in tex and "\\resizebox{\\textwidth}{!}{%" in tex and "\\end{tabular}}" in tex
    assert tex.count("{") == tex.count("}")
    headline = latex.leaderboard_latex(rows, many, "narrow", headline_only=True)
    assert "\\begin{table}" in headline and "Retain Prob." not in headline and "resizebox" not in headline


def test_latex_escape_and_numbers():
    assert latex.escape("a_b & c% $ #x {y} ~ ^") == \
        "a\\_b \\& c\\% \\$ \\#x \\{y\\} \\textasciitilde{} \\textasciicircum{}"
    assert latex.escape("PrivLeak (→0) ≤ 1") == "PrivLeak ($\\rightarrow$0) $\\leq$ 1"
    assert latex.number(-0.25) == "$-$0.25" and latex.number(0.1, signed=True) == "+0.1"
    assert latex.number(None) == "--" and latex.number(3e-7) == "3$\\times10^{-7}$"


# --------------------------------------------------------------------------- FO vs SO


def test_fo_vs_so_rows_signs_and_values():
    rows = optimizer_comparison_rows(fixture_records(), METRICS, "adamw")
    assert [(r["method"], r["optimizer"], r["metric"]) for r in rows] == [
        ("ga", "sophia", "forget_quality"), ("ga", "sophia", "model_utility"), ("ga", "sophia", "forget/rouge"),
        ("npo", "sophia", "forget_quality"), ("npo", "sophia", "model_utility"), ("npo", "sophia", "forget/rouge")]
    by = {(r["method"], r["metric"]): r for r in rows}
    fq = by[("ga", "forget_quality")]  # sophia − adamw: +0.09, +0.23, +0.27
    assert fq["n"] == 3 and fq["mean_diff"] == pytest.approx(0.19666667) and fq["favours"] == "sophia"
    assert fq["p_value"] == pytest.approx(sps.ttest_rel([0.10, 0.25, 0.30], [0.01, 0.02, 0.03]).pvalue)
    assert fq["ci_low"] < fq["mean_diff"] < fq["ci_high"]
    mu = by[("npo", "model_utility")]  # −0.04, −0.03, −0.05: sophia worse, higher is better
    assert mu["mean_diff"] == pytest.approx(-0.04) and mu["favours"] == "adamw" and mu["ci_high"] < 0
    rouge = by[("ga", "forget/rouge")]  # −0.10, −0.13, −0.13: lower is better → favours sophia
    assert rouge["mean_diff"] < 0 and rouge["favours"] == "sophia"
    assert all(r["metric"] != "retain/prob" for r in rows)  # headline metrics only


def test_fo_vs_so_files(tmp_path):
    paths = build_fixture_report(tmp_path / "rep", mia=False, figures_too=False)
    md = paths["fo_vs_so.md"].read_text(encoding="utf-8")
    line = next(ln for ln in md.splitlines() if ln.startswith("| ga | sophia | Forget quality ↑"))
    assert "| 3 | 0.217 | 0.02 | +0.197 |" in line and line.rstrip().endswith("| sophia |")
    assert "paired t-test" in md and "Wilcoxon" in md
    with open(paths["fo_vs_so.csv"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["baseline"] == "adamw"
    assert float(rows[0]["mean_diff"]) == pytest.approx(0.19666667)
    tex = paths["fo_vs_so.tex"].read_text(encoding="utf-8")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "+0.197" in tex and "Forget ROUGE-L $\\downarrow$" in tex


def test_fo_vs_so_with_two_seeds_is_na(tmp_path):
    records = [r for r in fixture_records() if r["seed"] in (None, 0, 1)]
    rows = optimizer_comparison_rows(records, METRICS, "adamw")
    assert all(r["n"] == 2 and r["p_value"] is None and r["ci_low"] is None for r in rows)
    md = [ln for ln in __import__("soul_bench.report.build", fromlist=["x"]).fo_vs_so_markdown(
        rows, "t", "adamw").splitlines() if ln.startswith("| ga | sophia")]
    assert all(ln.count("n/a") == 3 for ln in md)  # CI, p (t), p (Wilcoxon)
    tex = latex.fo_vs_so_latex(rows, "t")
    assert "n/a" in tex


def test_fo_vs_so_other_baseline_and_missing_baseline():
    rows = optimizer_comparison_rows(fixture_records(), METRICS, "sophia")
    assert {r["optimizer"] for r in rows} == {"adamw"} and rows[0]["baseline"] == "sophia"
    assert optimizer_comparison_rows(fixture_records(), METRICS, "sgd") == []


# --------------------------------------------------------------------------- merging


def test_merge_detects_conflicts_and_dedupes_identical(tmp_path):
    records = fixture_records()
    run_a = write_run(tmp_path / "a", records[:8])
    twin = [json.loads(json.dumps(r)) for r in records[5:]]  # overlaps a on records 5..7
    for r in twin:
        r["environment"] = {"host": "elsewhere"}  # not part of the result: still a duplicate
    changed = next(r for r in twin if r["seed"] == 2 and r["method"] == "ga" and r["optimizer"] == "sophia")
    changed["metrics"]["model_utility"] = 0.99
    relabelled = json.loads(json.dumps(records[0]))  # target again, other cell id (other hyper-parameters)
    relabelled["cell_id"] = "tofu-forget10-target-ffff0000"
    relabelled["metrics"]["model_utility"] = 0.61
    run_b = write_run(tmp_path / "b", twin + [relabelled])

    paths = build_report([run_a, run_b], tmp_path / "rep", METRICS, RANK_BY, "merged", TRADEOFF, figures_too=False)
    assert len(paths.records) == len(records)  # every cell once
    assert paths.duplicates == 2  # records 5, 6 were in both, identical results
    assert {c.cell for c in paths.conflicts} == {"tofu / forget10 / ga × sophia / seed 2", "tofu / forget10 / target"}
    reasons = {c.cell: c.reason for c in paths.conflicts}
    assert reasons["tofu / forget10 / ga × sophia / seed 2"] == "same cell_id"
    assert reasons["tofu / forget10 / target"].startswith("same (task")
    kept = next(r for r in paths.records if r["method"] == "ga" and r["optimizer"] == "sophia" and r["seed"] == 2)
    assert kept["metrics"]["model_utility"] == 0.47  # the first run folder wins, the other is listed
    text = paths["conflicts.md"].read_text(encoding="utf-8")
    assert "model_utility: 0.47 vs 0.99" in text and "tofu-forget10-target-ffff0000" in text
    assert str(run_b) in text

    with pytest.raises(ValueError, match="conflicting"):
        build_report([run_a, run_b], tmp_path / "rep2", METRICS, RANK_BY, "merged", TRADEOFF, on_conflict="error",
                     figures_too=False)


def test_identical_runs_merge_cleanly_and_stale_conflicts_go(tmp_path):
    records = fixture_records()
    run_a, run_b = write_run(tmp_path / "a", records), write_run(tmp_path / "b", records)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "conflicts.md").write_text("stale")
    paths = build_report([run_a, run_b], out, METRICS, RANK_BY, "twice", TRADEOFF, figures_too=False)
    assert paths.conflicts == [] and paths.duplicates == len(records) and len(paths.records) == len(records)
    assert "conflicts.md" not in paths and not (out / "conflicts.md").exists()


def test_only_the_named_cells_reach_the_report(tmp_path):
    """`soul-bench reproduce` reports its protocol's cells only: a record of a setting the card no
    longer names (here an older ga x adamw seed 0 under another cell id) stays out of the tables."""
    records = fixture_records()
    stale = make_record("unlearned", "ga", "adamw", 0, {"model_utility": 0.01}, cell_id="stale-setting")
    run = write_run(tmp_path / "run", [*records, stale])
    paths = build_report([run], tmp_path / "all", METRICS, RANK_BY, "all", TRADEOFF, figures_too=False)
    assert len(paths.conflicts) == 1   # without the filter the stale record competes for the cell
    paths = build_report([run], tmp_path / "own", METRICS, RANK_BY, "own", TRADEOFF, figures_too=False,
                         only_cells={r["cell_id"] for r in records})
    assert paths.conflicts == [] and len(paths.records) == len(records)
    assert all(r["cell_id"] != "stale-setting" for r in paths.records)


def test_merge_records_within_one_folder():
    a = make_record("unlearned", "ga", "adamw", 0, {"model_utility": 0.4})
    b = make_record("unlearned", "ga", "adamw", 0, {"model_utility": 0.5}, cell_id="other-hash")
    merged, conflicts, dups = merge_records([("run", [a, b])])
    assert len(merged) == 1 and len(conflicts) == 1 and dups == 0


def test_several_forget_splits_are_refused(tmp_path):
    records = fixture_records()
    other = make_record("unlearned", "ga", "adamw", 7, {"model_utility": 0.1})
    other["spec"]["forget_split"] = "forget01"
    with pytest.raises(ValueError, match="several forget splits"):
        build_report([write_run(tmp_path / "a", records + [other])], tmp_path / "rep", METRICS, RANK_BY, "x", TRADEOFF,
                     figures_too=False)


# --------------------------------------------------------------------------- figures


EXPECTED_FIGURES = ["tradeoff", "bars", "curves_loss", "curves_ce_forget", "curves_ce_retain", "curves_nll_forget",
                    "curves_npo", "mia_roc_loss", "mia_roc_min_k"]


def test_every_report_file_written(tmp_path):
    out = tmp_path / "rep"
    paths = build_fixture_report(out, mia=True)
    expected = {"leaderboard.md", "leaderboard.csv", "leaderboard.tex", "leaderboard_headline.tex",
                "fo_vs_so.md", "fo_vs_so.csv", "fo_vs_so.tex"}
    expected |= {f"{stem}.{ext}" for stem in EXPECTED_FIGURES for ext in ("png", "pdf")}
    assert set(paths) == expected
    assert sorted(os.listdir(out)) == sorted(expected)  # no temp files left
    for name in expected:
        assert paths[name] == out / name and paths[name].stat().st_size > 0
        if name.endswith(".png"):
            assert paths[name].read_bytes()[:8] == PNG_MAGIC
        if name.endswith(".pdf"):
            assert paths[name].read_bytes()[:5] == b"%PDF-"


def test_figure_laid_out_once_for_every_format(tmp_path):
    """save_figure solves the constrained layout once and reuses it for the PDF: the PNG it writes
    beside the PDF is the very PNG the figure gives alone, and the PDF's axes sit where the PNG's do."""
    rows = lb.leaderboard_rows(fixture_records(), METRICS, RANK_BY)
    alone = figures.save_figure(figures.tradeoff_figure(rows, METRICS, TRADEOFF), tmp_path / "a", "t", formats=("png",))
    fig = figures.tradeoff_figure(rows, METRICS, TRADEOFF)
    both = figures.save_figure(fig, tmp_path / "b", "t")
    assert sorted(both) == ["t.pdf", "t.png"]
    assert both["t.png"].read_bytes() == alone["t.png"].read_bytes()
    assert both["t.pdf"].read_bytes()[:5] == b"%PDF-"
    laid_out = fig.axes[0].get_position().bounds
    assert laid_out != pytest.approx((0.125, 0.11, 0.775, 0.77))  # not matplotlib's unlaid default box
    # the figure keeps its layout engine: edited and saved again, it is laid out again
    assert fig.get_layout_engine() is not None and fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"


def test_no_mia_no_roc_figures(monkeypatch, tmp_path):
    records = fixture_records(mia=False)
    assert figures.mia_attacks(records) == [] and figures.mia_roc_figure(records, "loss") is None
    monkeypatch.setattr(figures, "save_figure", lambda fig, out, stem, formats=(): {stem: out / stem})
    names = figures.write_figures(records, lb.leaderboard_rows(records, METRICS, RANK_BY), METRICS, tmp_path,
                                  tradeoff=TRADEOFF)
    assert sorted(names) == sorted(s for s in EXPECTED_FIGURES if not s.startswith("mia_roc"))


def test_mia_roc_layouts():
    curve = {"fpr": [0.0, 0.5, 0.0, 1.0], "tpr": [0.0, 0.8, 0.4, 1.0]}
    nested = {"per_item": {"mia": {"roc": {"loss": curve}, "auc": {"loss": 0.7}, "k": 0.4}}}
    flat = {"per_item": {"mia": {"loss": curve, "zlib": {"roc": curve}, "notes": ["x"]}}}
    assert figures.record_rocs(nested) == {"loss": ([0.0, 0.0, 0.5, 1.0], [0.0, 0.4, 0.8, 1.0])}  # sorted
    assert sorted(figures.record_rocs(flat)) == ["loss", "zlib"]
    assert figures.record_rocs({"per_item": {"mia": {"roc": {"loss": {"fpr": [0.1], "tpr": [0.2]}}}}}) == {}
    assert figures.record_rocs({"per_item": None}) == {} and figures.record_rocs({}) == {}
    grid, tpr = figures._mean_roc([([0.0, 0.0, 2 / 3, 2 / 3, 1.0], [0.0, 1 / 3, 1 / 3, 1.0, 1.0])])
    assert tpr[grid.searchsorted(0.5)] == pytest.approx(1 / 3)  # a step ROC stays a step


def test_tradeoff_figure_pareto_and_log_axes():
    rows = lb.leaderboard_rows(fixture_records(), METRICS, RANK_BY)
    fig = figures.tradeoff_figure(rows, METRICS, TRADEOFF)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "Model utility (better →)" and ax.get_ylabel() == "Forget quality (better →)"
    assert fig.get_size_inches()[0] == pytest.approx(3.5)
    assert "Pareto front" in {t.get_text() for t in fig.legends[0].get_texts()}
    linear = figures.tradeoff_figure(rows, METRICS, TRADEOFF, log_y=False, pareto=False)
    assert linear.axes[0].get_yscale() == "linear"
    assert "Pareto front" not in {t.get_text() for t in linear.legends[0].get_texts()}


def test_pareto_front_and_staircase():
    pts = [(0.45, 0.02), (0.44, 0.22), (0.56, 0.063), (0.52, 0.32), (0.40, 0.01)]
    assert lb.pareto_front(pts) == [3, 2]  # (0.52, 0.32) and (0.56, 0.063) dominate the rest; x ascending
    assert lb.pareto_front(pts, x_higher=False) == [4, 1, 3]  # lower x is better now
    xs, ys = lb.pareto_staircase(pts)
    assert list(zip(xs, ys)) == [(0.52, 0.32), (0.52, 0.063), (0.56, 0.063)]


def test_curves_figure_panels_and_band():
    records = fixture_records()
    assert figures.train_log_quantities(records) == ["loss", "ce_forget", "ce_retain", "nll_forget", "npo"]
    records[-1]["train_log"][0]["hessian_s"] = 0.5  # a timing, not a curve
    assert "hessian_s" not in figures.train_log_quantities(records)
    fig = figures.curves_figure(records, "loss")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["GA", "NPO"]
    assert all(len(ax.lines) == 2 and len(ax.collections) == 2 for ax in panels)  # 2 optimizers, each with a band
    ce = figures.curves_figure(records, "ce_forget")
    assert [ax.get_title() for ax in ce.axes if ax.get_visible()] == ["GA"]


def test_bars_figure_panels():
    rows = lb.leaderboard_rows(fixture_records(), METRICS, RANK_BY)
    fig = figures.bars_figure(rows, METRICS)
    assert len(fig.axes) == 3  # headline metrics
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["GA", "NPO"]
    assert fig.axes[2].get_ylabel() == "Forget ROUGE-L\n(← better)"


def render(out_dir: str | Path) -> dict:
    """Render the fixture report (with MIA) into ``out_dir`` for a human to look at."""
    out = Path(out_dir)
    return build_fixture_report(out, mia=True)


if __name__ == "__main__":
    for name, path in sorted(render(sys.argv[1] if len(sys.argv) > 1 else "/tmp/report_test").items()):
        print(name, path)


def test_records_of_other_target_weights_are_conflicts_not_seeds(tmp_path):
    """The same embedded path prepared on another machine holds other weights: a run made from
    it must not be averaged into the rows as more seeds."""
    records = fixture_records()
    for r in records:
        r.setdefault("spec", {})["weights"] = {"target": "sha256:aaaa", "retain": "sha256:bbbb"}
    elsewhere = [json.loads(json.dumps(r)) for r in records if r["seed"] == 2 and r["kind"] == "unlearned"]
    for r in elsewhere:
        r["seed"], r["cell_id"] = 9, r["cell_id"] + "-s9"
        r["spec"]["weights"]["target"] = "sha256:cccc"
    run_a, run_b = write_run(tmp_path / "a", records), write_run(tmp_path / "b", elsewhere)
    paths = build_report([run_a, run_b], tmp_path / "rep", METRICS, RANK_BY, "merged", TRADEOFF, figures_too=False)
    assert len(paths.records) == len(records) and not any(r["seed"] == 9 for r in paths.records)
    assert len(paths.conflicts) == len(elsewhere)
    assert all(c.reason.startswith("made from other target weights (sha256:cccc vs sha256:aaaa)") for c in paths.conflicts)
    assert "other target weights" in paths["conflicts.md"].read_text(encoding="utf-8")


def two_target_runs(tmp_path, shifted) -> tuple[list, list]:
    """The fixture's records as made from target sha256:aaaa (run folder a) and again from
    sha256:cccc (folder b), there with forget quality 0.1 higher in the unlearned records
    ``shifted(record)`` picks. → (run folders, the first target's records)."""
    records = fixture_records()
    for r in records:
        r.setdefault("spec", {})["weights"] = {"target": "sha256:aaaa"}
    other = json.loads(json.dumps(records))
    for r in other:
        r["spec"]["weights"]["target"] = "sha256:cccc"
        r["cell_id"] += "-other"
        if r["kind"] == "unlearned" and shifted(r):
            r["metrics"]["forget_quality"] += 0.1
    return [write_run(tmp_path / "a", records), write_run(tmp_path / "b", other)], records


def test_several_targets_pool_as_seeds_when_asked(tmp_path):
    """Embedded targets prepared with different seeds, reported together on purpose: every
    (target, seed) is a seed of its cell, and the FO-vs-SO table pairs by (target, seed)."""
    runs, records = two_target_runs(tmp_path, lambda r: True)
    paths = build_report(runs, tmp_path / "rep", METRICS, RANK_BY, "pooled", TRADEOFF, figures_too=False,
                         across_targets=True)
    assert not paths.conflicts and len(paths.records) == 2 * len(records)
    rows = {(r["kind"], r["method"], r["optimizer"]): r for r in csv.DictReader(open(paths["leaderboard.csv"]))}
    ga_adamw = rows[("unlearned", "ga", "adamw")]
    assert ga_adamw["n_seeds"] == "6" and float(ga_adamw["forget_quality"]) == pytest.approx(0.02 + 0.05)
    assert rows[("target", "", "")]["n_seeds"] == "2"
    fo = next(r for r in csv.DictReader(open(paths["fo_vs_so.csv"]))
              if (r["method"], r["optimizer"], r["metric"]) == ("ga", "sophia", "forget_quality"))
    # the same shift on both sides: the paired differences 0.09, 0.23, 0.27 twice
    assert fo["n"] == "6" and float(fo["mean_diff"]) == pytest.approx((0.09 + 0.23 + 0.27) / 3)
    assert fo["seeds"].split() == ["T0s0", "T0s1", "T0s2", "T1s0", "T1s1", "T1s2"]


def test_pooled_targets_show_the_paired_difference_within_each_target(tmp_path):
    """A gap that one target makes larger than the other: the pooled Δ averages them, the
    per-target column shows each (T0: the fixture's 0.09, 0.23, 0.27; T1: each 0.1 larger)."""
    runs, _ = two_target_runs(tmp_path, lambda r: (r["method"], r["optimizer"]) == ("ga", "sophia"))
    paths = build_report(runs, tmp_path / "rep", METRICS, RANK_BY, "pooled", TRADEOFF, figures_too=False,
                         across_targets=True)
    fo = next(r for r in csv.DictReader(open(paths["fo_vs_so.csv"]))
              if (r["method"], r["optimizer"], r["metric"]) == ("ga", "sophia", "forget_quality"))
    t0 = (0.09 + 0.23 + 0.27) / 3
    assert [float(d) for d in fo["mean_diff_by_target"].split()] == pytest.approx([t0, t0 + 0.1])
    assert float(fo["mean_diff"]) == pytest.approx(t0 + 0.05)
    md = paths["fo_vs_so.md"].read_text(encoding="utf-8")
    assert "Δ per target (T0 / T1)" in md and "Pooled over target models" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| ga | sophia | Forget quality ↑"))
    assert "| +0.197 / +0.297 |" in line
    tex = paths["fo_vs_so.tex"].read_text(encoding="utf-8")
    assert "$\\Delta$ per target" in tex and "& +0.197 / +0.297 &" in tex and "{lllrrrcrr}" in tex
    # T0 is the first run folder's target, whatever its fingerprint (reproduce: prepare seed 0)
    swapped = build_report(runs[::-1], tmp_path / "swapped", METRICS, RANK_BY, "pooled", TRADEOFF, figures_too=False,
                           across_targets=True)
    fo = next(r for r in csv.DictReader(open(swapped["fo_vs_so.csv"]))
              if (r["method"], r["optimizer"], r["metric"]) == ("ga", "sophia", "forget_quality"))
    assert [float(d) for d in fo["mean_diff_by_target"].split()] == pytest.approx([t0 + 0.1, t0])
    # records that carry their embedded prepare seed number the targets by it, whatever the folder order
    for run, seed in zip(runs, (0, 1)):
        for path in (run / "records").glob("*.json"):
            path.write_text(json.dumps({**json.loads(path.read_text()), "embedded": {"preset": "tiny", "prepare_seed": seed}}))
    by_seed = build_report(runs[::-1], tmp_path / "by_seed", METRICS, RANK_BY, "pooled", TRADEOFF, figures_too=False,
                           across_targets=True)
    fo = next(r for r in csv.DictReader(open(by_seed["fo_vs_so.csv"]))
              if (r["method"], r["optimizer"], r["metric"]) == ("ga", "sophia", "forget_quality"))
    assert [float(d) for d in fo["mean_diff_by_target"].split()] == pytest.approx([t0, t0 + 0.1])
    # one target: no per-target column, an empty CSV field
    single = build_report([runs[0]], tmp_path / "one", METRICS, RANK_BY, "one", TRADEOFF, figures_too=False)
    assert "Δ per target" not in single["fo_vs_so.md"].read_text(encoding="utf-8")
    assert all(r["mean_diff_by_target"] == "" for r in csv.DictReader(open(single["fo_vs_so.csv"])))
