"""benchmarks/embedded_checks.py's verdicts (issue 17's goals 1-3) on hand-made measurements: no
model is prepared here (the script itself does that, on the slow path)."""

from __future__ import annotations

import pytest
from scipy import stats as sps

from repo_paths import REPO
from soul_bench.task import load_sibling


@pytest.fixture(scope="module")
def checks():
    return load_sibling(str(REPO / "benchmarks" / "embedded_checks.py"), "embedded_checks")


def test_chance_auc_p_is_the_mann_whitney_test(checks):
    members = [0.1, 0.4, 0.35, 0.8, 0.9, 0.65, 0.72]
    nonmembers = [0.2, 0.05, 0.3, 0.5, 0.45, 0.15]
    u = sps.mannwhitneyu(members, nonmembers, alternative="two-sided", method="asymptotic", use_continuity=False)
    auc = u.statistic / (len(members) * len(nonmembers))  # 33 of 42 pairs ordered: 0.786
    assert auc == pytest.approx(33 / 42)
    assert checks.chance_auc_p(auc, len(members), len(nonmembers)) == pytest.approx(u.pvalue, rel=1e-9)
    # 50 + 50 items: the AUC's sd under chance is sqrt(101 / 30000) = 0.0580, so 0.6 is 1.72 sd out
    assert checks.chance_auc_p(0.6, 50, 50) == pytest.approx(2 * sps.norm.sf(0.1 / (101 / 30000) ** 0.5))
    assert checks.chance_auc_p(0.6, 50, 50) == pytest.approx(0.0848, abs=5e-4)
    assert checks.chance_auc_p(0.5, 50, 50) == pytest.approx(1.0)


def test_judge_rows_and_goal_two_p_values(checks):
    retain = {"mia/loss_auc": 0.52, "mia/zlib_auc": 0.634, "forget/prob": 0.03, "forget/truth_ratio": 0.78}
    target = {"forget_quality": 2.6e-9, "forget/prob": 0.88, "retain/prob": 0.97}
    result = {"forget_split": "forget10", "splits": {"forget10": {"items": 50, "holdout_items": 50}},
              "metrics": {"target": target, "retain": retain}}
    rows = {(r["goal"], r["model"], r["metric"]): r for r in checks.judge(result)}
    assert rows[(1, "target", "forget_quality")]["status"] == "PASS"
    assert rows[(2, "retain", "mia/loss_auc")]["status"] == "PASS"
    zlib = rows[(2, "retain", "mia/zlib_auc")]
    assert zlib["status"] == "FAIL" and zlib["chance_p"] == pytest.approx(checks.chance_auc_p(0.634, 50, 50))
    assert 0.01 < zlib["chance_p"] < 0.05
    assert rows[(3, "target", "retain/prob")]["status"] == "FAIL"  # 0.97 > 0.95: no headroom
    assert rows[(3, "retain", "forget/prob")]["status"] == "EXEMPT"
    assert rows[(3, "target", "world_facts/rouge")]["status"] == "FAIL"  # not measured: None fails
