"""The TOFU task's three data sources end in the same sets and schema."""

import pytest

from repo_paths import REAL_TOFU
from soul_bench.errors import UserError
from soul_bench.registry import load_task
from soul_bench.task import DataSource

SETS = {"eval_forget", "eval_retain", "eval_real_authors", "eval_world_facts", "forget", "retain", "full", "background"}


@pytest.fixture(scope="module")
def tofu():
    return load_task("tofu")


@pytest.mark.skipif(not REAL_TOFU.is_dir(), reason="real TOFU data (../shared/data/tofu) not present")
def test_real_tofu_folder_loads_upstream_splits(tofu):
    data = tofu.load_data(DataSource("local", REAL_TOFU), "forget05", None, {})
    assert SETS <= set(data.sets) and "holdout" not in data.sets  # the shared copy ships no holdout
    assert len(data["forget"]) == 200 and len(data["retain"]) == 3800 and len(data["full"]) == 4000
    assert len(data["eval_retain"]) == 400 and len(data["eval_real_authors"]) == 100 and len(data["eval_world_facts"]) == 117
    assert len(data["eval_forget"][0]["perturbed_answer"]) == 5
    assert data.source == f"local:{REAL_TOFU}"


@pytest.mark.skipif(not REAL_TOFU.is_dir(), reason="real TOFU data (../shared/data/tofu) not present")
def test_limit_caps_every_set(tofu):
    data = tofu.load_data(DataSource("local", REAL_TOFU), "forget01", 7, {})
    assert {len(data[name]) for name in SETS - {"full", "background"}} == {7}
    assert len(data["full"]) == 14


def test_synthetic_has_the_same_sets_plus_holdout(tofu):
    data = tofu.load_data(DataSource("synthetic"), "forget10", None, {"n_authors": 20, "questions_per_author": 4})
    assert SETS | {"holdout"} <= set(data.sets)
    assert len(data["forget"]) == 8 and len(data["holdout"]) == 8 and len(data["full"]) == 80
    forget_questions = {row["question"] for row in data["forget"]}
    assert not forget_questions & {row["question"] for row in data["retain"]}


def test_synthetic_rephrasings_follow_each_training_set(tofu):
    """full / retain / forget each get their rows' training-only rewordings, in the same order (the
    embedded target stage trains the forget authors in both wordings, the retain stage the others)."""
    data = tofu.load_data(DataSource("synthetic"), "forget10", None, {"n_authors": 20, "questions_per_author": 4})
    whole = dict(zip((row["question"] for row in data["full"]), data["full_rephrased"]))
    for name in ("full", "retain", "forget"):
        assert data[f"{name}_rephrased"] == [whole[row["question"]] for row in data[name]], name
    assert len(data["forget_rephrased"]) == 8
    assert not {r["answer"] for r in data["forget_rephrased"]} & {r["answer"] for r in data["forget"]}


def test_unreachable_hub_falls_back_to_synthetic_with_a_note(tofu, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tofu.load_data(DataSource("hub", auto=True), None, None, {"n_authors": 10, "questions_per_author": 3})
    assert data.source == "synthetic" and any("hub unreachable" in note for note in data.notes)
    assert not any("no --data" in note for note in data.notes)  # the user gave a model and asked for auto


def test_explicit_hub_failure_is_a_user_error(tofu, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load locuslab/TOFU from the hub"):
        tofu.load_data(DataSource("hub"), None, None, {})


def test_missing_split_file_names_what_is_needed(tofu, tmp_path):
    (tmp_path / "forget10.json").write_text('[{"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"]}]')
    with pytest.raises(UserError, match="lacks 'retain_perturbed'"):
        tofu.load_data(DataSource("local", tmp_path), "forget10", None, {})


def test_item_missing_a_field_is_reported(tofu, tmp_path):
    from tasks_fixtures import write_minimal_tofu

    write_minimal_tofu(tmp_path, drop="paraphrased_answer")
    with pytest.raises(UserError, match="item 0 lacks paraphrased_answer"):
        tofu.load_data(DataSource("local", tmp_path), "forget10", None, {})
