"""Bad run settings end in one line on stderr and exit code 2, before anything is written
(table-driven; each case would otherwise run, crash mid-run or silently do the wrong thing)."""

from __future__ import annotations

import pytest
import yaml

from cli_helpers import run_cli

BASE = ["run", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw,sophia", "--no-progress"]

FLAG_CASES = [
    (["--steps", "0"], "'steps' must be an integer >= 1"),
    (["--steps", "-5"], "'steps' must be an integer >= 1"),
    (["--epochs", "-1"], "'epochs' must be a number > 0"),
    (["--epochs", "0"], "'epochs' must be a number > 0"),
    (["--batch-size", "0"], "'batch_size' must be an integer >= 1"),
    (["--hparam", "npo.beta=abc"], "npo.beta must be a number, got 'abc'"),
    (["--hparam", "sophia.rho=abc"], "sophia.rho must be a number, got 'abc'"),
    (["--hparam", "sophia.betas=0.9"], "sophia.betas must be a list of 2 numbers"),
    (["--hparam", "sophia.bias_correction=maybe"], "sophia.bias_correction must be true or false"),
    (["--hparam", "adamw.weight_decay=[1, 2]"], "adamw.weight_decay must be a number"),
    (["--prompt-template", "Tell me about it."], "has no {question} field"),
    (["--prompt-template", "Q: {quest}"], "is not a valid format string"),
    (["--prompt-template", "Q: {question"], "is not a valid format string"),
    (["--max-length", "4"], "bad setting 'max_length': Input should be greater than or equal to 8"),
    (["--system-prompt", "Be brief."], "a system prompt needs the chat template"),
    (["--dtype", "fp8"], "bad setting 'dtype'"),
    (["--hparam", "npo.beta=-1"], "npo.beta must be > 0, got -1"),
    (["--hparam", "npo.beta=0"], "npo.beta must be > 0, got 0"),
    (["--methods", "graddiff", "--hparam", "graddiff.retain_weight=-0.5"], "graddiff.retain_weight must be >= 0"),
    (["--methods", "rmu", "--hparam", "rmu.layer=-2"], "rmu.layer must be >= 0"),
    (["--eval-batch-size", "0"], "bad setting 'eval_batch_size'"),
    (["--seeds", "99999999999999999999"], "--seeds: seed 99999999999999999999 is out of range; valid: 0 to 4294967295"),
    (["--seeds", "0,-1"], "seed -1 is out of range"),
    (["--lr", "-1e-4"], "optimizer 'adamw': Invalid learning rate: -0.0001"),
    (["--lr", "0"], "optimizer 'adamw': lr 0 changes no weight"),
    (["--seeds", ""], "--seeds names no seed"),
    (["--hparam", "npo.beta="], "--hparam 'npo.beta=' gives no value after '='"),
    (["--methods", "npo", "--optimizers", "iu"], "no cell of this sweep can run: iu is a one-shot influence update"),
]

CONFIG_CASES = [
    ({"unlearning": {"schedule": "step"}}, "'schedule' must be one of constant, linear, cosine"),
    ({"unlearning": {"warmup_ratio": 1.5}}, "'warmup_ratio' must be in [0, 1)"),
    ({"unlearning": {"warmup_ratio": -0.1}}, "'warmup_ratio' must be a number >= 0"),
    ({"unlearning": {"grad_accum": 0}}, "'grad_accum' must be an integer >= 1"),
    ({"unlearning": {"grad_accum": 2.5}}, "'grad_accum' must be an integer >= 1"),
    ({"unlearning": {"max_grad_norm": -1}}, "'max_grad_norm' must be a number > 0"),
    ({"unlearning": {"batch_size": "eight"}}, "'batch_size' must be an integer >= 1"),
    ({"unlearning": {"bf16": "yes"}}, "'bf16' must be true or false"),
    ({"unlearning": {"early_stop_every": 0}}, "'early_stop_every' must be an integer >= 1"),
    ({"method_hparams": {"npo": {"beta": "high"}}}, "npo.beta must be a number"),
    ({"optimizer_hparams": {"sophia": {"lr": 0}}}, "optimizer 'sophia': lr 0 changes no weight"),
    ({"optimizer_hparams": {"sophia": {"bias_correction": 1}}}, "sophia.bias_correction must be true or false"),
    ({"optimizer_hparams": {"adamw": {"betas": [0.9]}}}, "adamw.betas must be a list of 2 numbers"),
    ({"prompt_template": "Q: {question}", "system_prompt": "Be brief."}, "a system prompt needs the chat template"),
    # the embedded recipe's training keys: a typo would otherwise be ignored (and train another model)
    ({"embedded": {"train": {"epoch": 3}}}, "unknown key train.epoch; valid: epochs, lr, batch_size"),
    ({"embedded": {"train": {"target": {"lr": 1e-3, "epcohs": 3}}}}, "unknown key train.target.epcohs; valid: epochs"),
    ({"embedded": {"train": {"target": 3}}}, "train.target must be a mapping of epochs"),
    # LoRA settings peft would reject only once the model is loaded (after the baselines)
    ({"lora": {"r": 0}}, "r (the adapters' rank) must be an integer >= 1, got 0"),
    ({"lora": {"rr": 4}}, "bad LoRA setting (LoraConfig.__init__() got an unexpected keyword argument 'rr')"),
    # ... and target modules the model lacks, found on its skeleton before the baselines
    ({"lora": {"target_modules": ["qq_proj"]}}, "bad LoRA setting for this model: Target modules {'qq_proj'} not found"),
]


def _assert_one_line_error(code, err, expected):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert expected in err, err


@pytest.mark.parametrize("flags, expected", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_flag_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, flags, expected):
    out = tmp_path / "out"
    code, _, err = run_cli([*BASE, "--out", out, *flags], capsys)
    _assert_one_line_error(code, err, expected)
    assert not out.exists()


@pytest.mark.parametrize("config, expected", CONFIG_CASES, ids=[str(c[0]) for c in CONFIG_CASES])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, config, expected):
    out = tmp_path / "out"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_cli([*BASE, "--out", out, "--config", path], capsys)
    _assert_one_line_error(code, err, expected)
    assert not out.exists()


def test_out_naming_an_existing_file_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    code, _, err = run_cli([*BASE, "--out", out], capsys)
    _assert_one_line_error(code, err, "is an existing file")
    assert out.read_text() == "keep me"


def _model_folder_without_weights(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("weights are elsewhere")
    return folder


def _tofu_folder_missing_retain(tmp_path):
    from tasks_fixtures import write_minimal_tofu

    folder = tmp_path / "tofu-data"
    folder.mkdir()
    write_minimal_tofu(folder)
    (folder / "retain90.json").unlink()
    return folder


def _tofu_folder_with_bad_json(tmp_path):
    from tasks_fixtures import write_minimal_tofu

    folder = tmp_path / "tofu-data"
    folder.mkdir()
    write_minimal_tofu(folder)
    (folder / "forget10.json").write_text('[{"question": "q?", "answer": ')
    return folder


# (name, flags built from tmp_path, expected text): the model, data and harness inputs
INPUT_CASES = [
    ("model folder without a model", lambda t: ["--model", _model_folder_without_weights(t)], "is not a model folder"),
    ("retain model folder without a model", lambda t: ["--retain-model", _model_folder_without_weights(t)],
     "is not a model folder"),
    ("model path that is a file", lambda t: ["--model", (t / "w.bin").write_text("x") and t / "w.bin"], "is not a model folder"),
    ("data folder that does not exist", lambda t: ["--data", t / "nowhere"], "does not exist"),
    ("data folder missing a TOFU set", lambda t: ["--data", _tofu_folder_missing_retain(t)], "lacks 'retain90'"),
    ("data folder with malformed JSON", lambda t: ["--data", _tofu_folder_with_bad_json(t)], "malformed JSON"),
    ("unknown lm-eval task", lambda t: ["--harness-tasks", "tofu_mcq"], "unknown lm-eval task 'tofu_mcq'"),
    ("unknown task", lambda t: ["--task", "tofoo"], "unknown task 'tofoo'; valid:"),
    ("method that needs questions on a raw-text task", lambda t: ["--task", "wmdp", "--methods", "dpo"],
     "method 'dpo' needs qa or completion examples"),
    ("unknown forget split", lambda t: ["--forget-split", "forget50"], "unknown forget split 'forget50'"),
]


@pytest.mark.parametrize("name, flags, expected", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_bad_model_data_or_harness_input_is_one_line_before_any_work(tmp_path, capsys, name, flags, expected):
    out = tmp_path / "out"
    code, _, err = run_cli([*BASE, "--out", out, *flags(tmp_path)], capsys)
    _assert_one_line_error(code, err, expected)
    assert not out.exists()


REPORT_CASES = [
    ("folder without records", lambda t: [t], "has no records/ folder"),
    ("missing folder", lambda t: [t / "nowhere"], "nowhere' does not exist"),
    ("no records yet", lambda t: [_empty_run(t)], "records: nothing to report yet"),
    ("unknown --baseline-optimizer", lambda t: [_run_with_record(t, '{"schema": 1, "task": "tofu", "optimizer": "adamw"}'),
                                                "--baseline-optimizer", "adamx"], "unknown optimizer 'adamx'; valid: adamw"),
    ("corrupt record", lambda t: [_run_with_record(t, "{not json")], "not a valid JSON record"),
    ("record of an unsupported schema", lambda t: [_run_with_record(t, '{"schema": 99, "task": "tofu"}')],
     "record schema 99 is not supported"),
    ("unknown --task", lambda t: [_run_with_record(t, '{"schema": 1, "task": "tofu"}'), "--task", "nope"], "unknown task 'nope'"),
    ("--task of other records", lambda t: [_run_with_record(t, '{"schema": 1, "task": "tofu"}'), "--task", "wmdp"],
     "--task wmdp: the records are of task tofu"),
]


def _empty_run(tmp_path):
    (tmp_path / "empty" / "records").mkdir(parents=True)
    return tmp_path / "empty"


def _run_with_record(tmp_path, text):
    run = tmp_path / "run"
    (run / "records").mkdir(parents=True)
    (run / "records" / "cell.json").write_text(text)
    return run


@pytest.mark.parametrize("name, args, expected", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_bad_report_input_is_one_line_and_writes_nothing(tmp_path, capsys, name, args, expected):
    out = tmp_path / "report"
    code, _, err = run_cli(["report", *args(tmp_path), "--out", out], capsys)
    _assert_one_line_error(code, err, expected)
    assert not out.exists()


def test_report_out_inside_a_records_folder_is_refused(tmp_path, capsys):
    """The report's files would land among the records, which every later report reads."""
    run = _run_with_record(tmp_path, '{"schema": 1, "task": "tofu"}')
    code, _, err = run_cli(["report", run, "--out", run / "records" / "report"], capsys)
    _assert_one_line_error(code, err, "lies in the records/ folder of")
    assert [p.name for p in (run / "records").iterdir()] == ["cell.json"]


def test_a_config_that_is_a_folder_or_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    code, _, err = run_cli([*BASE, "--out", tmp_path / "out", "--config", tmp_path / "configs"], capsys)
    _assert_one_line_error(code, err, "configs' is a folder; give a YAML file")
    (tmp_path / "latin1.yaml").write_bytes(b"methods: [ga]\n\xff\xfe bad: 1\n")
    code, _, err = run_cli([*BASE, "--out", tmp_path / "out", "--config", tmp_path / "latin1.yaml"], capsys)
    _assert_one_line_error(code, err, "latin1.yaml' is not UTF-8 text (byte 14")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_exits_130_with_a_line_on_resuming(tmp_path, capsys, monkeypatch):
    """typer turns KeyboardInterrupt into a returned 130, which the CLI used to drop (exit 0):
    `soul-bench run … && soul-bench report …` then went on after an interrupt."""
    import soul_bench.runner

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(soul_bench.runner.Runner, "run", interrupted)
    code, _, err = run_cli([*BASE, "--out", tmp_path / "out"], capsys)
    assert code == 130
    assert "interrupted: finished cells are kept; run the same command again to resume" in err


def test_report_out_naming_a_file_is_one_line(tmp_path, capsys):
    run = _run_with_record(tmp_path, '{"schema": 1, "task": "tofu"}')
    (tmp_path / "afile").write_text("keep me")
    code, _, err = run_cli(["report", run, "--out", tmp_path / "afile"], capsys)
    _assert_one_line_error(code, err, "afile' is an existing file")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_run_out_under_a_file_or_beside_another_tasks_records_is_refused(tmp_path, capsys):
    """--out inside a path whose parent is a file, or a folder of another task's runs (whose
    report would then mix tasks): one line before any work, the folder left as it was."""
    (tmp_path / "afile").write_text("keep me")
    code, _, err = run_cli([*BASE, "--out", tmp_path / "afile" / "sub"], capsys)
    _assert_one_line_error(code, err, "afile' is a file, not a folder")
    other = _run_with_record(tmp_path, '{"schema": 1, "task": "copyright", "status": "ok"}')
    code, _, err = run_cli([*BASE, "--out", other], capsys)
    _assert_one_line_error(code, err, "holds records of task 'copyright'; a run folder holds one task's runs")
    assert [p.name for p in (other / "records").iterdir()] == ["cell.json"]


@pytest.mark.parametrize("task, split", [("copyright", "book"), ("toxicity", "harmful")])
def test_forget_split_of_a_one_split_task_is_checked(tmp_path, capsys, task, split):
    code, _, err = run_cli(["run", "--task", task, "--preset", "micro", "--methods", "ga", "--optimizers", "adamw",
                            "--forget-split", "forget10", "--out", tmp_path / "out"], capsys)
    _assert_one_line_error(code, err, f"unknown forget split 'forget10'; valid: {split}")
    assert not (tmp_path / "out").exists()
