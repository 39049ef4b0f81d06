"""benchmarks/demo_speed.py's split of the demo's wall time, on hand-made records (the script
itself runs the demo; not here)."""

from __future__ import annotations

import pytest

from repo_paths import REPO
from soul_bench.task import load_sibling


def load():
    return load_sibling(str(REPO / "benchmarks" / "demo_speed.py"), "demo_speed")


def test_breakdown_splits_the_wall():
    records = [
        {"kind": "target", "timings": {"evaluate_s": 11.5}, "reused_from": "/cache/evaluations/x.json"},
        {"kind": "retain", "timings": {"evaluate_s": 16.0}},
        {"kind": "unlearned", "method": "ga", "optimizer": "adamw", "status": "ok",
         "timings": {"unlearn_s": 9.5, "evaluate_s": 10.5}},
        {"kind": "unlearned", "method": "npo", "optimizer": "sophia", "status": "ok",
         "timings": {"unlearn_s": 14.0, "evaluate_s": 9.0}},
        {"kind": "unlearned", "method": "npo", "optimizer": "adamw", "status": "failed", "timings": {}},
    ]
    result = load().breakdown(records, {"base-1": 45.0, "retain-2": 205.0}, wall_s=340.0)
    assert result["prepare_s"] == 250.0
    assert result["baselines_s"] == {"target": 0.0, "retain": 16.0}  # the target's evaluation was reused
    assert result["cells_s"] == {"ga × adamw": 20.0, "npo × sophia": 23.0}
    assert result["rest_s"] == pytest.approx(340.0 - 250.0 - 16.0 - 43.0)
    assert result["compute_share"] == pytest.approx(309.0 / 340.0)
