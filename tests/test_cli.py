"""End to end through the CLI on the micro preset (seconds), and the one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import records_by_cell, run_cli
from repo_paths import REAL_TOFU, REPO
from soul_bench.registry import load_task

REPO_TASKS = REPO / "tasks"
MICRO = ["--preset", "micro", "--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "micro"
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from soul_bench.cli import main

    buffer = io.StringIO()
    old = sys.argv
    sys.argv = ["soul-bench", "run", "--task", "tofu", "--methods", "ga,npo", "--optimizers", "adamw,sophia",
                "--out", str(out), *MICRO]
    try:
        with redirect_stdout(buffer), redirect_stderr(buffer):
            main()
    finally:
        sys.argv = old
    return out, buffer.getvalue()


def test_run_writes_a_record_per_cell_and_the_leaderboard(micro_run):
    out, log = micro_run
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    kinds = sorted((r["kind"], r["method"] or "", r["optimizer"] or "") for r in records)
    assert kinds == [("retain", "", ""), ("target", "", ""), ("unlearned", "ga", "adamw"), ("unlearned", "ga", "sophia"),
                     ("unlearned", "npo", "adamw"), ("unlearned", "npo", "sophia")]
    for record in records:
        assert record["status"] == "ok"
        assert 0.0 <= record["metrics"]["model_utility"] <= 1.0
        assert set(record["per_item"]) == {"forget", "retain", "real_authors", "world_facts", "mia"}
        assert {"likelihood_s", "generation_s", "mia_s", "harness_s", "evaluate_s"} <= set(record["timings"])
        assert record["environment"]["torch"]
        assert 0.0 <= record["metrics"]["harness/tofu_mc/acc"] <= 1.0 and record["metrics"]["harness/tofu_mc/acc_stderr"] >= 0
        assert record["harness"]["lm_eval_version"] and record["harness"]["n_samples"]
    fingerprints = {json.dumps(r["spec"]["weights"], sort_keys=True) for r in records}
    assert len(fingerprints) == 1  # every record names the same target and retain weights
    weights = records[0]["spec"]["weights"]
    assert weights["target"].startswith("sha256:") and weights["retain"].startswith("sha256:")
    assert weights["target"] != weights["retain"]
    retain = next(r for r in records if r["kind"] == "retain")
    assert retain["metrics"]["forget_quality"] == pytest.approx(1.0)  # KS of a sample with itself
    unlearned = [r for r in records if r["kind"] == "unlearned"]
    assert all(0.0 <= r["metrics"]["forget_quality"] <= 1.0 for r in unlearned)
    assert all(len(r["train_log"]) == 2 and r["spec"]["hparams"]["loop"]["steps"] == 2 for r in unlearned)
    sophia = next(r for r in unlearned if r["optimizer"] == "sophia")
    card_rho = load_task("tofu").card.section("optimizers")["sophia"]["rho"]  # the card's, not the factory's 0.04
    assert sophia["spec"]["hparams"]["optimizer"]["rho"] == card_rho != 0.04 and sophia["timings"]["hessian_s"] > 0
    assert all(0.0 <= entry["unclipped_fraction"] <= 1.0 for entry in sophia["train_log"])
    for name in ("leaderboard.md", "leaderboard.csv", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    assert "npo" in (out / "leaderboard.md").read_text()


def test_rerun_skips_finished_cells(micro_run, capsys):
    out, _ = micro_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    code, stdout, _ = run_cli(["run", "--methods", "ga,npo", "--optimizers", "adamw,sophia", "--out", out, *MICRO], capsys)
    assert code == 0
    assert stdout.count("finished before, skipped") == 4
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == before


def test_a_second_sweep_reuses_the_baseline_evaluations(micro_run, tmp_path, capsys, monkeypatch):
    import soul_bench
    import soul_bench.runner

    out, _ = micro_run
    first = records_by_cell(out)
    fingerprinted = []  # the key's shared part (code, task folder, data) is computed once per sweep, not per baseline
    monkeypatch.setattr(soul_bench.runner, "files_fingerprint",
                        lambda folder, **kw: fingerprinted.append(Path(folder)) or soul_bench.results.files_fingerprint(folder, **kw))
    code, stdout, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--out", tmp_path / "second", *MICRO], capsys)
    assert code == 0, err
    assert fingerprinted.count(Path(soul_bench.__file__).parent) == 1
    assert stdout.count("Reusing the") == 2 and "Evaluating the" not in stdout
    second = records_by_cell(tmp_path / "second")
    for kind in ("target", "retain"):
        reused, original = second[(kind, None)], first[(kind, None)]
        assert reused["cell_id"] == original["cell_id"] and reused["metrics"] == original["metrics"]
        assert Path(reused["reused_from"]).is_file()
    assert "reused_from" not in second[("unlearned", "ga")]  # the sweep's own cells are always computed
    code, stdout, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--out", tmp_path / "third",
                                 "--fresh-baselines", *MICRO], capsys)
    assert code == 0, err
    assert stdout.count("Evaluating the") == 2 and "Reusing the" not in stdout
    third = records_by_cell(tmp_path / "third")
    assert third[("target", None)]["metrics"]["forget/rouge"] == pytest.approx(first[("target", None)]["metrics"]["forget/rouge"])


def test_the_evaluation_cache_key_follows_the_code(tmp_path):
    from soul_bench.results import EvaluationCache, files_fingerprint

    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "metrics.py").write_text("SCALE = 1\n")
    before = files_fingerprint(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__" / "metrics.pyc").write_bytes(b"compiled")
    (tmp_path / "pkg" / "notes.md").write_text("not code")
    assert files_fingerprint(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "metrics.py").write_text("SCALE = 2\n")
    after = files_fingerprint(tmp_path / "pkg")
    assert after != before
    record = {"cell_id": "tofu-forget10-target-12345678", "status": "ok", "metrics": {"forget_quality": 0.5}}
    EvaluationCache(tmp_path / "cache", {"code": before}).put(record)
    assert EvaluationCache(tmp_path / "cache", {"code": before}).get(record["cell_id"]) == record
    assert EvaluationCache(tmp_path / "cache", {"code": after}).get(record["cell_id"]) is None
    EvaluationCache(tmp_path / "cache", {"code": after}).put({**record, "status": "failed"})  # never kept
    assert EvaluationCache(tmp_path / "cache", {"code": after}).get(record["cell_id"]) is None


def test_harness_can_be_switched_off(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--harness-tasks", "", "--out", out, *MICRO], capsys)
    assert code == 0, err
    for path in (out / "records").glob("*.json"):
        record = json.loads(path.read_text())
        assert not any(name.startswith("harness/") for name in record["metrics"]) and "harness" not in record


def test_a_lora_sweep_trains_adapters_and_records_the_setting(tmp_path, capsys):
    """A config's lora: the target's skeleton passes the adapters' check, the cell trains them
    (NPO's reference is the base with adapters off), its record keeps the setting, and the
    relearning probe attacks the merged weights."""
    config = tmp_path / "lora.yaml"
    config.write_text("lora: {r: 4, target_modules: [q_proj, v_proj]}\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "npo", "--optimizers", "adamw", "--harness-tasks", "", "--config", config,
                            "--probes", "relearn", "--out", out, *MICRO], capsys)
    assert code == 0, err
    cell = next(r for r in map(lambda p: json.loads(p.read_text()), (out / "records").glob("*.json"))
                if r["kind"] == "unlearned")
    assert cell["status"] == "ok" and cell["spec"]["hparams"]["lora"] == {"r": 4, "target_modules": ["q_proj", "v_proj"]}
    assert cell["train_log"] and cell["metrics"]["forget/prob"] is not None
    assert cell["metrics"]["relearn/forget/prob"] is not None


def test_report_rebuilds_leaderboard_from_records(micro_run, capsys):
    out, _ = micro_run
    (out / "leaderboard.csv").unlink()
    code, stdout, _ = run_cli(["report", out], capsys)
    assert code == 0 and (out / "leaderboard.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["run", "--task", "nope"], "unknown task 'nope'; valid: "),
    (["run", "--methods", "ga,bogus"], "unknown method 'bogus'; valid: "),
    (["run", "--optimizers", "adamw,adam"], "unknown optimizer 'adam'; valid: "),
    (["run", "--data", "/no/such/folder"], "data folder '/no/such/folder' does not exist"),
    (["run", "--forget-split", "forget07", "--preset", "micro"], "unknown forget split 'forget07'; valid: forget01"),
    (["run", "--preset", "huge"], "unknown preset 'huge'"),
    (["list", "gadgets"], "cannot list 'gadgets'"),
    # the parser's own errors (typer >= 0.25 carries its own click, whose errors are not click's)
    (["run", "--bogus", "1"], "error: No such option: --bogus"),
    (["import", "logs"], "error: Missing option '--name'. ('soul-bench import --help' lists what is valid)"),
    (["report"], "error: Missing argument 'run_dirs'. ('soul-bench report --help' lists what is valid)"),
    (["runn"], "error: No such command 'runn'."),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli([*args, "--out", out] if args[0] == "run" else args, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing half written


def test_malformed_json_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "tofu"
    data.mkdir()
    (data / "forget10.json").write_text('[{"question": "q", "answer": ')
    code, _, err = run_cli(["run", "--data", data, "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 2 and "malformed JSON in" in err and "forget10.json" in err
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_lists_valid_settings(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("methods: [ga]\nlearning_rate: 0.1\n")
    code, _, err = run_cli(["run", "--config", config, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "learning_rate" in err and "valid settings:" in err


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "soul_bench.cli", "run", "--methods", "xx", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown method 'xx'")


def test_list_shows_every_kind(capsys):
    code, stdout, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in ("tofu", "graddiff", "npo", "sophia", "soul", "forget_quality", "smollm2-135m", "tofu-llama3.2-1b"):
        assert name in stdout


@pytest.mark.skipif(not REAL_TOFU.is_dir(), reason="real TOFU data (../shared/data/tofu) not present")
def test_real_tofu_local_folder_end_to_end(tmp_path, capsys):
    local = tmp_path / "tofu"
    shutil.copytree(REAL_TOFU, local)
    code, stdout, err = run_cli(["run", "--data", local, "--limit", "6", "--methods", "graddiff", "--optimizers", "soul",
                                 "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 0, err
    record = json.loads(next((tmp_path / "out" / "records").glob("*graddiff*.json")).read_text())
    assert record["spec"]["data"] == f"local:{local}"
    assert len(record["per_item"]["forget"]["avg_gt_loss"]) == 6
    assert len(record["per_item"]["real_authors"]["average_perturb_loss"][0]) == 3
    assert "no holdout set" in stdout  # why the MIA columns are empty, said once on the console
    assert stdout.count("no holdout set") == 1


def test_hparam_flag_reaches_the_record(tmp_path, capsys):
    out = tmp_path / "out"
    # a template typed in a shell: \n arrives as backslash + n and must be read as a newline
    # exponent notation without a dot (YAML 1.1 would read '3e-2' as a string)
    code, _, err = run_cli(["run", "--methods", "npo", "--optimizers", "sophia", "--hparam", "npo.beta=0.25",
                            "--hparam", "sophia.rho=3e-2", "--harness-tasks", "", "--out", out,
                            "--prompt-template", r"Question: {question}\nAnswer:", "--dtype", "float32",
                            "--gradient-checkpointing", "--eval-batch-size", "8", *MICRO], capsys)
    assert code == 0, err
    record = json.loads(next((out / "records").glob("*npo-sophia*.json")).read_text())
    assert record["spec"]["dtype"] == "float32" and record["spec"]["hparams"]["loop"]["gradient_checkpointing"] is True
    assert record["spec"]["hparams"]["method"]["beta"] == 0.25 and record["spec"]["hparams"]["optimizer"]["rho"] == 0.03
    assert record["spec"]["prompt"]["template"] == "Question: {question}\nAnswer:"


def test_numbers_written_1e_4_are_numbers_in_configs_and_flags(tmp_path):
    """A config's ``lr: 1e-4`` and ``grid: {lr: [1e-4, 3e-4]}`` and a flag's ``npo.beta=1e-1,2E-1``
    are numbers (PyYAML's YAML 1.1 reads an exponent without a dot as a string)."""
    from soul_bench.cli import _parse_hparams
    from soul_bench.spec import build_spec

    config = tmp_path / "sweep.yaml"
    config.write_text("unlearning: {lr: 1e-4, steps: 3}\ngrid: {lr: [1e-4, 3e-4]}\n"
                      "optimizer_hparams: {adamw: {weight_decay: 1e-2}}\n")
    spec = build_spec(config, {})
    assert spec.unlearning["lr"] == 1e-4 and spec.grid["lr"] == [1e-4, 3e-4]
    assert spec.optimizer_hparams["adamw"]["weight_decay"] == 0.01
    [(_, name, key, values)] = _parse_hparams(["npo.beta=1e-1,2E-1"])
    assert (name, key, list(values)) == ("npo", "beta", [0.1, 0.2])
    assert _parse_hparams(["sophia.rho=-3e+2"])[0][3] == -300.0 and _parse_hparams(["npo.beta=1e4x"])[0][3] == "1e4x"
    # a config may write a list as the flag does
    config.write_text("methods: ga,npo\noptimizers: adamw\nseeds: 0, 1\nselect_on_seeds: 0\n")
    spec = build_spec(config, {})
    assert (spec.methods, spec.optimizers, spec.seeds, spec.select_on_seeds) == (["ga", "npo"], ["adamw"], [0, 1], [0])


def test_bad_yaml_says_where(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("methods: [ga, npo\noptimizers: [adamw]\n")
    code, _, err = run_cli(["run", "--config", config, "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 2 and "is not valid YAML" in err and "at line 2, column" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("item, message", [("npo.beta", "must look like NAME.KEY=VALUE"),
                                           ("adam.lr=1", "'adam' is neither a method nor an optimiser"),
                                           ("sophia.gamma=1", "unknown hyper-parameter 'gamma' for optimizer 'sophia'")])
def test_bad_hparam_is_one_line_and_exit_2(item, message, tmp_path, capsys):
    code, _, err = run_cli(["run", "--hparam", item, "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_harness_task_is_one_line_and_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--harness-tasks", "tofu_mcq",
                            "--out", out, *MICRO], capsys)
    assert code == 2 and "unknown lm-eval task 'tofu_mcq'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_one_shot_iu_runs_ga_and_records_npo_as_skipped(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga,npo", "--optimizers", "iu", "--harness-tasks", "", "--out", out, *MICRO], capsys)
    assert code == 0, err
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*-iu-*.json"))}
    assert records["ga"]["status"] == "ok" and records["ga"]["timings"]["steps"] == 1
    assert "update_norm" in records["ga"]["train_log"][0]
    assert records["npo"]["status"] == "skipped" and "no such objective" in records["npo"]["error"]


def test_users_own_harness_task_runs_and_reaches_the_leaderboard(tmp_path, capsys):
    """--harness-include DIR adds a user's lm-eval task folder; every harness metric the run
    produced gets a leaderboard column, also those the task card does not describe."""
    harness = tmp_path / "my_tasks"
    harness.mkdir()
    card_task = (REPO_TASKS / "tofu" / "harness" / "tofu_mc.yaml").read_text()
    (harness / "my_mc.yaml").write_text(card_task.replace("task: tofu_mc", "task: my_mc"))
    shutil.copy(REPO_TASKS / "tofu" / "harness" / "tofu_mc.jsonl", harness / "tofu_mc.jsonl")
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--harness-tasks", "my_mc",
                            "--harness-include", harness, "--harness-limit", "4", "--out", out, *MICRO], capsys)
    assert code == 0, err
    record = json.loads(next((out / "records").glob("*ga-adamw*.json")).read_text())
    assert 0.0 <= record["metrics"]["harness/my_mc/acc"] <= 1.0 and record["spec"]["harness"]["include"] == [str(harness)]
    header = next(line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("|"))
    assert "my_mc acc" in header and "my_mc acc_norm" in header


def test_missing_harness_include_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["run", "--harness-tasks", "my_mc", "--harness-include", tmp_path / "nowhere",
                            "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_eval_options_cap_items_and_fix_the_generation_budget(tmp_path, capsys, monkeypatch):
    """--eval-option overrides the card's evaluation section (validated by the task, recorded):
    an item cap per eval set and open-unlearning's fixed generation budget."""
    import soul_bench.evaluate.likelihood as likelihood

    budgets = []
    real = likelihood.generate_answers

    def recording(model, tokenizer, fmt, questions, max_new_tokens, *args, **kwargs):
        budgets.append(max_new_tokens)
        return real(model, tokenizer, fmt, questions, max_new_tokens, *args, **kwargs)

    monkeypatch.setattr(likelihood, "generate_answers", recording)  # the run loads the task module afresh
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--harness-tasks", "", "--out", out,
                            "--eval-option", "max_items=3", "--eval-option", "max_new_tokens=5", *MICRO], capsys)
    assert code == 0, err
    record = json.loads(next((out / "records").glob("*ga-adamw*.json")).read_text())
    assert record["spec"]["evaluation"]["max_items"] == 3 and record["spec"]["evaluation"]["max_new_tokens"] == 5
    assert len(record["per_item"]["forget"]["avg_gt_loss"]) == 3
    assert budgets and all(b == [5] * len(b) for b in budgets)
    code, _, err = run_cli(["run", "--eval-option", "max_items=0", "--out", tmp_path / "bad", *MICRO], capsys)
    assert code == 2 and "max_items" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
