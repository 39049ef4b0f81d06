"""benchmarks/shared_evaluation.py's reading of two sweeps' records, on hand-made records (the
script itself runs the sweeps under accelerate launch; not here)."""

from __future__ import annotations

import json

import pytest

from repo_paths import REPO
from soul_bench.task import load_sibling


def load():
    return load_sibling(str(REPO / "benchmarks" / "shared_evaluation.py"), "shared_evaluation")


def test_evaluations_reads_each_models_seconds_and_metrics(tmp_path):
    (tmp_path / "records").mkdir()
    records = {"target": {"kind": "target", "timings": {"evaluate_s": 14.5, "harness_s": 1.1}, "metrics": {"a": 0.5}},
               "cell": {"kind": "unlearned", "method": "ga", "optimizer": "adamw", "timings": {"evaluate_s": 9.0},
                        "metrics": {"a": 0.25}}}
    for name, record in records.items():
        (tmp_path / "records" / f"{name}.json").write_text(json.dumps(record))
    found = load().evaluations(tmp_path)
    assert found == {"target": {"evaluate_s": 14.5, "harness_s": 1.1, "metrics": {"a": 0.5}},
                     "ga × adamw": {"evaluate_s": 9.0, "harness_s": 0.0, "metrics": {"a": 0.25}}}


def test_largest_difference_is_relative_over_the_numbers_both_records_have():
    largest = load().largest_difference
    assert largest({"a": 2.0, "b": 1.0, "c": None, "d": 5.0}, {"a": 2.0, "b": 1.01, "c": None}) == pytest.approx(0.01)
    assert largest({"a": 0.0}, {"a": 0.0}) == 0.0
