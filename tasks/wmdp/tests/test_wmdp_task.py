"""The wmdp task: the real path's lm-eval tasks on local files in the upstream schema, local
corpora in the upstream layout, the harness summary, and a micro end-to-end run."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from soul_bench.errors import UserError
from soul_bench.registry import load_task
from soul_bench.task import DataSource

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def _upstream_questions(n: int = 8, subject: str | None = None) -> list[dict]:
    """Rows in the schema of cais/wmdp (question, choices, answer) / cais/mmlu (+ subject)."""
    rows = []
    for i in range(n):
        row = {"question": f"Which compound neutralises agent {i}?", "choices": [f"c{i}a", f"c{i}b", f"c{i}c", f"c{i}d"],
               "answer": i % 4}
        if subject:
            row["subject"] = subject
        rows.append(row)
    return rows


def _localise(task_yaml: Path, out_dir: Path, data_file: Path, splits=("test",)) -> None:
    """Copy lm-eval's own YAML of a hub task, pointing its dataset at a local JSON-lines file."""
    config = yaml.safe_load(task_yaml.read_text())
    config.update(dataset_path="json", dataset_kwargs={"data_files": {split: str(data_file) for split in splits}})
    config.pop("dataset_name", None)
    (out_dir / task_yaml.name).write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def tiny_model():
    from soul_bench.models import build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(["Which compound neutralises agent 3? A. c3a B. c3b Answer: A"] * 20, 300)
    return build_tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2), tokenizer


def test_real_path_lm_eval_tasks_build_and_run_from_local_upstream_files(tmp_path, tiny_model):
    """wmdp_bio / wmdp_cyber / mmlu_college_biology as lm-eval defines them (prompt with A–D,
    choices A–D, target = answer index), on local files in the hub schema: the names the card's
    hub source asks for, and the hazard / general summary the leaderboard ranks by."""
    from soul_bench.evaluate.harness import run_harness

    model, tokenizer = tiny_model
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("wmdp_bio", "wmdp_cyber"):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _upstream_questions()))
        _localise(LM_EVAL_TASKS / "wmdp" / f"{name}.yaml", folder, data)
    shutil.copy(LM_EVAL_TASKS / "wmdp" / "_default_template_yaml", folder / "_default_template_yaml")
    mmlu = tmp_path / "mmlu_college_biology.jsonl"
    mmlu.write_text("".join(json.dumps(r) + "\n" for r in _upstream_questions(subject="college_biology")))
    (folder / "mmlu").mkdir()
    shutil.copy(LM_EVAL_TASKS / "mmlu" / "default" / "_default_template_yaml", folder / "mmlu" / "_default_template_yaml")
    _localise(LM_EVAL_TASKS / "mmlu" / "default" / "mmlu_college_biology.yaml", folder / "mmlu", mmlu, ("test", "dev"))

    metrics, details = run_harness(model, tokenizer, ["wmdp_bio", "wmdp_cyber", "mmlu_college_biology"],
                                   include_dirs=[folder], batch_size=8)
    assert details["n_samples"]["wmdp_bio"]["effective"] == 8
    for name in ("wmdp_bio", "wmdp_cyber", "mmlu_college_biology"):
        assert 0.0 <= metrics[f"harness/{name}/acc"] <= 1.0
    task = load_task("wmdp")
    summary = task.summarise_harness(metrics)
    expected = (metrics["harness/wmdp_bio/acc"] + metrics["harness/wmdp_cyber/acc"]) / 2
    assert summary["hazard/acc"] == pytest.approx(expected)
    assert summary["general/acc"] is None  # mmlu (the group) did not run; its subject is reported apart
    assert "harness/mmlu_college_biology/acc" in {m.name for m in task.card.metrics}


def test_hub_source_names_the_upstream_lm_eval_tasks():
    card = load_task("wmdp").card
    hub_tasks = card.spec.harness.tasks_by_source["hub"]
    assert {"wmdp_bio", "wmdp_cyber", "wmdp_chem", "mmlu"} <= set(hub_tasks)
    for name in ("wmdp_bio", "wmdp_cyber", "wmdp_chem"):
        assert (LM_EVAL_TASKS / "wmdp" / f"{name}.yaml").exists()  # a real lm-eval task of that name


def test_local_corpora_in_the_upstream_layout(tmp_path):
    task = load_task("wmdp")
    rows = [{"title": "t", "abstract": "a", "text": f"Document {i} about a fictional agent.", "doi": "x"} for i in range(5)]
    (tmp_path / "bio-forget-corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bio-retain-corpus.json").write_text(json.dumps([{"text": f"General text {i}."} for i in range(4)]))
    data = task.load_data(DataSource("local", path=tmp_path), "bio", None, {})
    assert [r["text"] for r in data["forget"]] == [r["text"] for r in rows] and len(data["retain"]) == 4
    assert "holdout" not in data.sets and data["full"] == data["forget"] + data["retain"]
    (tmp_path / "bio-retain-corpus.json").unlink()
    with pytest.raises(UserError, match="lacks bio-retain-corpus.jsonl"):
        task.load_data(DataSource("local", path=tmp_path), "bio", None, {})
    (tmp_path / "bio-retain-corpus.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(UserError, match="row 0 has no 'text'"):
        task.load_data(DataSource("local", path=tmp_path), "bio", None, {})
    with pytest.raises(UserError, match="unknown forget split 'chem'; valid: bio, cyber, synthetic"):
        task.load_data(DataSource("local", path=tmp_path), "chem", None, {})


def test_micro_run_end_to_end(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
    from cli_helpers import records_by_cell, run_cli

    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "wmdp", "--preset", "micro", "--methods", "rmu,ga", "--optimizers", "adamw",
                            "--steps", "3", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = records_by_cell(out)
    assert set(records) == {("target", None), ("retain", None), ("unlearned", "rmu"), ("unlearned", "ga")}
    target = records[("target", None)]
    assert target["baseline_label"] == "target (knows the hazard)"
    for key in ("hazard/acc", "general/acc", "forget/ppl", "retain/ppl", "mia/min_k_auc", "mia/privleak"):
        assert target["metrics"][key] is not None, key
    assert records[("retain", None)]["metrics"]["mia/reference_auc"] == pytest.approx(0.5)
    assert records[("unlearned", "ga")]["metrics"]["forget/ppl"] > target["metrics"]["forget/ppl"]
    board = (out / "leaderboard.md").read_text()
    assert "Hazard MCQ acc →0.25" in board and "target (knows the hazard)" in board
    # IDK needs questions to refuse: the raw-text task refuses it before any work
    code, _, err = run_cli(["run", "--task", "wmdp", "--preset", "micro", "--methods", "idk", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "needs qa or completion examples" in err and not (tmp_path / "x").exists()


def test_the_zephyr_config_is_a_valid_run_configuration():
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    spec = build_spec(Path(__file__).parents[1] / "configs" / "zephyr-7b-beta.yaml", {})
    runner = Runner(spec)  # validates names and every cell's hyper-parameters; loads no model
    loop, method_hp, optimizer_hp = cell_settings(runner.task, spec, "rmu", "adamw", 0)
    assert (method_hp["layer"], method_hp["steering_coeff"], method_hp["alpha"]) == (7, 6.5, 1200.0)
    assert optimizer_hp["lr"] == 5e-5 and loop.steps == 150 and loop.batch_size == 4
    # the card's own per-method lr for the tiny model does not leak into the config's
    assert cell_settings(runner.task, spec, "ga", "adamw", 0)[2]["lr"] == 5e-5


def test_per_method_optimizer_values_and_their_typos():
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    spec = build_spec(None, {"task": "wmdp", "methods": ["rmu", "ga"], "optimizers": ["adamw"]})
    task = Runner(spec).task
    assert cell_settings(task, spec, "rmu", "adamw", 0)[2]["lr"] == 3e-3   # the card's per_method value
    assert cell_settings(task, spec, "ga", "adamw", 0)[2]["lr"] == 3e-4
    spec.optimizer_hparams["adamw"] = {"per_method": {"rmuu": {"lr": 1.0}}}
    with pytest.raises(UserError, match="optimizers.adamw.per_method names unknown method 'rmuu'"):
        Runner(spec)
