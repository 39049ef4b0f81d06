"""A sweep split with --shard I/N and merged by `report` equals the sweep run in one process;
two sweeps cannot write one output folder at once."""

import csv

import pytest

from cli_helpers import run_cli

SWEEP = ["run", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw,sgd", "--steps", "2", "--no-progress"]


def rows(path):
    with open(path, newline="") as handle:
        return {(r["kind"], r["method"], r["optimizer"]): r for r in csv.DictReader(handle)}


@pytest.mark.slow  # four sweeps (~50 s); .ci/run runs the slow tier
def test_two_shards_merged_equal_one_process(tmp_path, capsys):
    whole, first, second, merged = (tmp_path / name for name in ("whole", "s0", "s1", "merged"))
    assert run_cli([*SWEEP, "--out", whole], capsys)[0] == 0
    assert run_cli([*SWEEP, "--out", first, "--shard", "0/2"], capsys)[0] == 0
    assert run_cli([*SWEEP, "--out", second, "--shard", "1/2"], capsys)[0] == 0
    cells = lambda folder: {p.name for p in (folder / "records").glob("*unlearned*.json")}  # noqa: E731
    assert cells(first) and cells(second) and not cells(first) & cells(second)
    assert cells(first) | cells(second) == cells(whole)
    code, _, err = run_cli(["report", first, second, "--out", merged], capsys)
    assert code == 0, err
    assert not (merged / "conflicts.md").exists()  # the baselines of both shards are the same records
    assert rows(merged / "leaderboard.csv") == rows(whole / "leaderboard.csv")


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "-1/3", "0/0"])
def test_bad_shard_is_one_line(tmp_path, capsys, shard):
    code, _, err = run_cli([*SWEEP, "--out", tmp_path / "out", "--shard", shard], capsys)
    assert code == 2 and "bad setting 'shard'" in err and "I/N" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_another_sweep_is_writing_is_refused(tmp_path, capsys):
    from soul_bench.results import lock_run_folder

    out = tmp_path / "out"
    out.mkdir()
    held = lock_run_folder(out)  # as a running sweep holds it
    try:
        code, _, err = run_cli([*SWEEP, "--out", out], capsys)
        assert code == 2 and "another soul-bench run" in err and "is writing" in err
        assert not (out / "records").exists() or not any((out / "records").iterdir())
    finally:
        held.close()
    assert run_cli([*SWEEP, "--out", out], capsys)[0] == 0  # released: the folder is usable again


@pytest.mark.slow  # three sweeps (~1 min): .ci/run runs the slow tier after the default one
def test_a_sweep_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    """SIGKILL a sweep (a real process: no cleanup runs) after its first cell's record is written;
    the same command again skips the finished cells, redoes the rest, and ends with the records
    an uninterrupted sweep writes. Records are written atomically: every record file is whole."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "soul_bench.cli", *SWEEP, "--steps", "3", "--harness-tasks", ""]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli([*SWEEP, "--steps", "3", "--harness-tasks", "", "--out", whole], capsys)[0] == 0  # also prepares
    process = subprocess.Popen([*command, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((killed / "records").glob("*unlearned*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "the sweep wrote no cell record in 5 minutes"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    finished = {p.name for p in (killed / "records").glob("*.json")}
    assert 0 < len([n for n in finished if "unlearned" in n]) < 4  # killed mid-sweep
    for path in (killed / "records").glob("*.json"):  # a kill mid-write leaves at most a hidden .tmp
        json.loads(path.read_text())
    resumed = subprocess.run([*command, "--out", str(killed)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("finished before, skipped") >= 1
    load = lambda folder: {p.name: json.loads(p.read_text()) for p in (folder / "records").glob("*.json")}  # noqa: E731
    expected, got = load(whole), load(killed)
    assert set(got) == set(expected)
    for name, record in expected.items():
        assert got[name]["status"] == record["status"] == "ok"
        assert got[name]["metrics"].keys() == record["metrics"].keys()
        for key, value in record["metrics"].items():
            assert got[name]["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (name, key)
