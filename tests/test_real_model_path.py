"""The path a researcher with a real model takes — `--model DIR --retain-model DIR` with data
in the upstream TOFU file format — uses the same code as the embedded default and works
end to end (here with small models saved as ordinary HF folders)."""

import json

import pytest

from cli_helpers import run_cli
from soul_bench.task import load_sibling

GENERATOR = {"n_authors": 10, "questions_per_author": 3, "n_real_authors": 6, "n_world_facts": 6}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Two HF model folders (target, retain), built once by `soul-bench prepare --preset micro`."""
    import io
    import sys
    from contextlib import redirect_stdout

    from soul_bench.cli import main

    buffer, old = io.StringIO(), sys.argv
    sys.argv = ["soul-bench", "prepare", "--preset", "micro"]
    try:
        with redirect_stdout(buffer):
            main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = old
    lines = dict(line.split(": ", 1) for line in buffer.getvalue().splitlines() if line.startswith(("target model", "retain model")))
    return lines["target model"].strip(), lines["retain model"].strip()


def test_local_model_folders_with_upstream_files(hf_folders, tmp_path, capsys):
    import soul_bench_tasks.tofu as tofu_package
    from pathlib import Path

    synthetic = load_sibling(str(Path(tofu_package.__file__).with_name("task.py")), "synthetic")
    data = tmp_path / "tofu"
    synthetic.write_local(synthetic.generate_tofu(**GENERATOR), data)
    target, retain = hf_folders
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", "--model", target, "--retain-model", retain, "--data", data, "--methods", "npo",
                                 "--optimizers", "sophia", "--steps", "2", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = {r["kind"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    assert set(records) == {"target", "retain", "unlearned"}
    unlearned = records["unlearned"]
    assert unlearned["spec"]["model"] == target and unlearned["spec"]["data"] == f"local:{data.resolve()}"
    assert 0.0 <= unlearned["metrics"]["forget_quality"] <= 1.0
    assert unlearned["metrics"]["mia/min_k_auc"] is not None  # local files carry holdout10.json
    assert not any(k.startswith("harness/") for k in unlearned["metrics"])  # no harness tasks for local data
    first = json.loads((data / "forget10.json").read_text())[0]
    for record in records.values():  # what the model was asked, rendered, in every record
        example = record["prompt_example"]
        assert example["prompt"].endswith(f"Question: {first['question']}\nAnswer:")
        assert example["labelled"].strip().startswith(first["answer"].strip())


def test_model_without_data_never_swaps_in_synthetic_data_unasked(hf_folders, tmp_path, capsys, monkeypatch):
    """A real model with no --data means the task's hub data: offline that is one clear line and
    nothing written — a real model's numbers on synthetic data would be meaningless. --data auto
    asks for the fallback, and gets it with a note."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target, retain = hf_folders
    args = ["run", "--model", target, "--retain-model", retain, "--methods", "ga", "--optimizers", "adamw",
            "--steps", "1", "--no-progress"]
    code, _, err = run_cli(args + ["--out", tmp_path / "refused"], capsys)
    assert code == 2 and "--data auto" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "refused").exists()
    code, stdout, err = run_cli(args + ["--data", "auto", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "hub unreachable" in stdout and "no --data" not in stdout


def test_missing_model_folder_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["run", "--model", tmp_path / "no-model", "--data", "synthetic", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1  # not the hub's "Repo id …"
    assert not (tmp_path / "out").exists()
