"""A sweep split with --shard I/N and merged by `report` equals the sweep run in one process;
two sweeps cannot write one output folder at once."""

import csv

import pytest

from cli_helpers import run_cli

SWEEP = ["run", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw,sgd", "--steps", "2", "--no-progress"]


def rows(path):
    with open(path, newline="") as handle:
        return {(r["kind"], r["method"], r["optimizer"]): r for r in csv.DictReader(handle)}


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
