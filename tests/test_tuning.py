"""Fair tuning: value lists expand into cells, and the report picks each (method, optimiser)'s
setting by the card's selection rule, marks it, keeps the rest, and compares optimisers at their
chosen settings."""

from __future__ import annotations

import csv
import json

import pytest

from cli_helpers import run_cli
from soul_bench.registry import load_task
from soul_bench.report import leaderboard as lb
from soul_bench.report.build import build_report
from soul_bench.runner import cell_settings, grid_points
from soul_bench.spec import SweepSpec

METRICS = [
    {"name": "forget_quality", "label": "Forget quality", "direction": "higher", "headline": True, "log": True},
    {"name": "model_utility", "label": "Model utility", "direction": "higher", "headline": True},
]
RANK_BY = ["forget_quality", "model_utility"]
SELECT_BY = {"by": ["forget_quality", "model_utility"],
             "require": [{"metric": "model_utility", "at_least": 0.9, "relative_to": "target"}]}
TARGET = {"forget_quality": 1e-4, "model_utility": 0.60}  # the requirement: model utility ≥ 0.54

# (method, optimizer, lr) -> per-seed (forget quality, model utility) for seeds 0, 1, 2
SETTINGS = {
    ("ga", "adamw", 1e-4): [(0.01, 0.58), (0.02, 0.59), (0.03, 0.60)],
    ("ga", "adamw", 3e-4): [(0.10, 0.55), (0.20, 0.56), (0.30, 0.57)],   # chosen: best FQ with MU ≥ 0.54
    ("ga", "adamw", 1e-3): [(0.50, 0.50), (0.60, 0.52), (0.70, 0.51)],   # best FQ, but MU 0.51 < 0.54
    ("ga", "sophia", 1e-4): [(0.20, 0.57), (0.30, 0.58), (0.40, 0.58)],
    ("ga", "sophia", 3e-4): [(0.40, 0.55), (0.50, 0.55), (0.60, 0.56)],  # chosen
    ("ga", "sophia", 1e-3): [(0.90, 0.30), (0.95, 0.31), (0.99, 0.29)],
}


def record(kind, method=None, optimizer=None, seed=None, lr=None, metrics=None):
    name = "-".join(str(p) for p in ("tofu", "forget10", kind, method, optimizer, lr, seed) if p is not None)
    spec = {"forget_split": "forget10"}
    if kind == "unlearned":
        spec["hparams"] = {"loop": {"seed": seed, "steps": 30}, "method": {},
                           "optimizer": {"lr": lr, "weight_decay": 0.01}, "lora": None}
    return {"schema": 1, "cell_id": name, "kind": kind, "task": "tofu", "method": method, "optimizer": optimizer,
            "seed": seed, "status": "ok", "error": None, "metrics": dict(metrics or {}), "spec": spec, "per_item": {}}


def grid_records(settings=SETTINGS):
    records = [record("target", metrics=TARGET)]
    for (method, optimizer, lr), values in settings.items():
        for seed, (fq, mu) in enumerate(values):
            records.append(record("unlearned", method, optimizer, seed, lr,
                                  {"forget_quality": fq, "model_utility": mu}))
    return records


def write_run(folder, records):
    (folder / "records").mkdir(parents=True)
    for r in records:
        (folder / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    return folder


def test_each_pair_is_reported_at_the_setting_the_rule_chooses():
    rows = lb.leaderboard_rows(grid_records(), METRICS, RANK_BY, select_by=SELECT_BY)
    cells = {(r["method"], r["optimizer"]): r for r in rows if r["kind"] == "unlearned"}
    assert set(cells) == {("ga", "adamw"), ("ga", "sophia")}
    assert cells[("ga", "adamw")]["setting"] == "lr=0.0003" and cells[("ga", "adamw")]["n_settings"] == 3
    assert cells[("ga", "adamw")]["mean"]["forget_quality"] == pytest.approx(0.20)
    assert cells[("ga", "sophia")]["setting"] == "lr=0.0003"
    assert cells[("ga", "sophia")]["mean"]["forget_quality"] == pytest.approx(0.50)
    assert [r["rank"] for r in rows if r["kind"] == "unlearned"] == [1, 2]  # sophia (0.5) before adamw (0.2)
    # without the requirement, the rank rule alone picks the most forgetting setting (lr 1e-3)
    plain = {(r["method"], r["optimizer"]): r for r in lb.leaderboard_rows(grid_records(), METRICS, RANK_BY)
             if r["kind"] == "unlearned"}
    assert plain[("ga", "adamw")]["setting"] == "lr=0.001"


def test_when_no_setting_meets_the_requirement_the_closest_is_chosen():
    """Every lr of NPO x SOUL falls below model utility 0.54 (0.9x the target's 0.60): the report
    keeps the one missing it by least (0.50), not the best forgetter among collapsed models (MU 0)."""
    settings = {("npo", "soul", 1e-4): [(1e-3, 0.50), (1e-3, 0.50)],
                ("npo", "soul", 3e-4): [(0.05, 0.20), (0.05, 0.22)],
                ("npo", "soul", 1e-3): [(0.30, 0.0), (0.30, 0.0)]}
    rows = lb.leaderboard_rows(grid_records(settings), METRICS, RANK_BY, select_by=SELECT_BY)
    (cell,) = [r for r in rows if r["kind"] == "unlearned"]
    assert cell["setting"] == "lr=0.0001" and cell["mean"]["model_utility"] == pytest.approx(0.50)
    assert cell["selection_unmet"] == ["Model utility < 0.9× target"]  # still says what it misses


def test_report_marks_the_chosen_setting_keeps_the_rest_and_compares_chosen_cells(tmp_path):
    paths = build_report([write_run(tmp_path / "run", grid_records())], tmp_path / "out", METRICS, RANK_BY,
                         "t", select_by=SELECT_BY, figures_too=False)
    assert not paths.conflicts
    tuning = list(csv.DictReader(open(paths["tuning.csv"])))
    assert len(tuning) == 6
    chosen = {(r["method"], r["optimizer"], float(r["optimizer.lr"])) for r in tuning if r["selected"] == "1"}
    assert chosen == {("ga", "adamw", 3e-4), ("ga", "sophia", 3e-4)}
    missed = next(r for r in tuning if r["optimizer"] == "adamw" and float(r["optimizer.lr"]) == 1e-3)
    assert missed["selection_unmet"] == "Model utility < 0.9× target"
    text = (tmp_path / "out" / "tuning.md").read_text()
    assert text.count("✓") == 3  # two chosen rows + the note's legend
    assert "among the settings with Model utility ≥ 0.9× target" in text
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| Setting |" in board and "lr=0.0003 (of 3)" in board and "lr=0.001 (of 3)" not in board
    assert next(csv.reader(open(paths["leaderboard.csv"])))[4:6] == ["setting", "n_settings"]
    # FO vs SO pairs the chosen cells by seed: sophia 0.4/0.5/0.6 − adamw 0.1/0.2/0.3 = 0.3 on every seed
    fo = next(r for r in csv.DictReader(open(paths["fo_vs_so.csv"])) if r["metric"] == "forget_quality")
    assert float(fo["mean_diff"]) == pytest.approx(0.3) and fo["favours"] == "sophia"
    assert "\\scriptsize(lr=0.0003)" in (tmp_path / "out" / "leaderboard.tex").read_text()


def test_settings_from_separate_runs_merge_into_one_grid_not_conflicts(tmp_path):
    records = grid_records()
    by_lr = lambda lr: [r for r in records if r["kind"] != "unlearned" or r["spec"]["hparams"]["optimizer"]["lr"] == lr]
    runs = [write_run(tmp_path / f"run{i}", by_lr(lr)) for i, lr in enumerate((1e-4, 3e-4, 1e-3))]
    paths = build_report(runs, tmp_path / "out", METRICS, RANK_BY, "t", select_by=SELECT_BY, figures_too=False)
    assert not paths.conflicts and paths.duplicates == 2  # the target, in every folder
    assert len(list(csv.DictReader(open(paths["tuning.csv"])))) == 6


def test_unequal_budgets_are_called_out_and_untuned_reports_have_no_tuning_files(tmp_path):
    uneven = {k: v for k, v in SETTINGS.items() if not (k[1] == "sophia" and k[2] != 3e-4)}
    build_report([write_run(tmp_path / "run", grid_records(uneven))], tmp_path / "out", METRICS, RANK_BY, "t",
                 select_by=SELECT_BY, figures_too=False)
    assert "unequal tuning budgets" in (tmp_path / "out" / "tuning.md").read_text()
    assert "ga: adamw 3, sophia 1" in (tmp_path / "out" / "tuning.md").read_text()
    one = {k: v for k, v in SETTINGS.items() if k[2] == 3e-4}
    build_report([write_run(tmp_path / "one", grid_records(one))], tmp_path / "out", METRICS, RANK_BY, "t",
                 select_by=SELECT_BY, figures_too=False)
    assert not (tmp_path / "out" / "tuning.md").exists()  # the stale one is gone too
    assert "Setting" not in (tmp_path / "out" / "leaderboard.md").read_text()
    assert "setting" not in next(csv.reader(open(tmp_path / "out" / "leaderboard.csv")))


def test_grid_points_apply_to_the_cells_they_name():
    grid = {"lr": [1e-4, 3e-4], "npo.beta": [0.05, 0.1], "sophia.lr": [1e-5]}
    assert grid_points(grid, "npo", "adamw") == [{"lr": 1e-4, "npo.beta": 0.05}, {"lr": 1e-4, "npo.beta": 0.1},
                                                 {"lr": 3e-4, "npo.beta": 0.05}, {"lr": 3e-4, "npo.beta": 0.1}]
    assert grid_points(grid, "ga", "sophia") == [{"sophia.lr": 1e-5}]  # its own lr list replaces the shared one
    assert grid_points(grid, "ga", "iu") == [{}]                        # a one-shot update has no lr
    assert grid_points({}, "ga", "adamw") == [{}]


def test_a_grid_point_overrides_card_config_and_flags():
    task = load_task("tofu")
    spec = SweepSpec(unlearning={"lr": 5e-5, "epochs": 3}, method_hparams={"npo": {"beta": 0.3}})
    loop, method_hp, optimizer_hp = cell_settings(task, spec, "npo", "sophia", 0,
                                                  {"lr": 3e-4, "npo.beta": 0.2, "steps": 7, "sophia.rho": 0.5})
    assert (loop.steps, loop.epochs) == (7, None)  # a grid over steps clears the epochs below it
    assert method_hp["beta"] == 0.2 and optimizer_hp["lr"] == 3e-4 and optimizer_hp["rho"] == 0.5
    _, _, optimizer_hp = cell_settings(task, spec, "ga", "sophia", 0, {"lr": 3e-4, "sophia.lr": 1e-5})
    assert optimizer_hp["lr"] == 1e-5


def test_lr_list_runs_one_cell_per_value_and_reports_the_choice(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--lr", "1e-4,1e-3",
                                 "--harness-tasks", "", "--out", out, "--preset", "micro", "--steps", "2",
                                 "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*-ga-adamw-*.json")]
    assert sorted(r["spec"]["hparams"]["optimizer"]["lr"] for r in records) == [1e-4, 1e-3]
    assert "(lr=0.0001)" in stdout and "(lr=0.001)" in stdout
    assert (out / "tuning.md").is_file() and "(of 2)" in (out / "leaderboard.md").read_text()


@pytest.mark.parametrize("args, config, message", [
    (["--lr", "1e-4,abc"], None, "--lr '1e-4,abc': 'abc' is not a number"),
    (["--hparam", "npo.beta=abc,0.1"], None, "hyper-parameter npo.beta must be a number, got 'abc'"),
    ([], {"grid": {"nosuch.x": [1]}}, "grid 'nosuch.x': 'nosuch' is neither a method nor an optimiser"),
    ([], {"grid": {"warmup": [0.1]}}, "grid 'warmup': unknown setting"),
    ([], {"grid": {"lr": []}}, "grid 'lr' must list at least one value"),
    ([], {"grid": {"lr": [1.0e-4, 1.0e-4]}}, "grid 'lr' lists a value twice"),
    ([], {"grid": {"lr": 0.1}}, "bad setting 'grid.lr'"),
])
def test_bad_grids_are_one_line_exit_2_and_write_nothing(args, config, message, tmp_path, capsys):
    extra = []
    if config is not None:
        (tmp_path / "sweep.yaml").write_text(json.dumps(config))
        extra = ["--config", tmp_path / "sweep.yaml"]
    code, _, err = run_cli(["run", "--methods", "ga,npo", "--optimizers", "adamw", *args, *extra,
                            "--out", tmp_path / "out", "--preset", "micro", "--no-progress"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~1-2 min: two micro targets prepared and swept
def test_reproduce_pools_targets_of_several_prepare_seeds(tmp_path, capsys):
    tables = tmp_path / "leaderboards"
    code, _, err = run_cli(["reproduce", "embedded", "--task", "tofu", "--preset", "micro", "--prepare-seeds", "0,1",
                            "--seeds", "0,1", "--methods", "ga", "--optimizers", "adamw,sophia", "--leaderboards",
                            tables, "--reports", tmp_path / "reports", "--runs", tmp_path / "runs", "--no-progress"],
                           capsys)
    assert code == 0, err
    targets = set()
    for prepare_seed in (0, 1):
        for path in (tmp_path / "runs" / "tofu" / f"prepare-{prepare_seed}" / "records").glob("*-target-*.json"):
            record = json.loads(path.read_text())
            targets.add(record["spec"]["weights"]["target"])
            assert record["embedded"] == {"preset": "micro", "prepare_seed": prepare_seed}
    assert len(targets) == 2  # another prepare seed is another target model
    # the grid (three lrs) ran on the first target's seed 0 only; the second target ran the choice
    # on the held-out seed alone, so the choice never saw it
    lrs = {}
    for prepare_seed in (0, 1):
        for path in (tmp_path / "runs" / "tofu" / f"prepare-{prepare_seed}" / "records").glob("*-unlearned-*.json"):
            r = json.loads(path.read_text())
            lrs.setdefault((prepare_seed, r["optimizer"], r["seed"]), []).append(r["spec"]["hparams"]["optimizer"]["lr"])
    assert {key: len(values) for key, values in lrs.items()} == {
        (0, "adamw", 0): 3, (0, "sophia", 0): 3, (0, "adamw", 1): 1, (0, "sophia", 1): 1,
        (1, "adamw", 1): 1, (1, "sophia", 1): 1}
    assert lrs[(1, "adamw", 1)] == lrs[(0, "adamw", 1)] and lrs[(1, "sophia", 1)] == lrs[(0, "sophia", 1)]
    rows = {(r["kind"], r["method"], r["optimizer"]): r for r in csv.DictReader(open(tables / "tofu" / "leaderboard.csv"))}
    assert rows[("target", "", "")]["n_seeds"] == "2" and rows[("unlearned", "ga", "sophia")]["n_seeds"] == "2"
    fo = next(csv.DictReader(open(tables / "tofu" / "fo_vs_so.csv")))
    assert fo["seeds"].split() == ["T0s1", "T1s1"]  # chosen on the first target's seed 0, reported on seed 1 of both
    assert len(fo["mean_diff_by_target"].split()) == 2  # and the difference within each target
    assert "Settings chosen on seed 0 of target T0 only" in (tables / "tofu" / "leaderboard.md").read_text()


def test_report_select_by_replaces_the_cards_rule(tmp_path, capsys):
    """The card's rule (MU ≥ 0.9× target) picks lr 3e-4 for both; without a requirement the most
    forgetting setting wins; a looser requirement (MU ≥ 0.8× target = 0.48) lets AdamW's 1e-3
    (MU 0.51) in but not Sophia's (0.30)."""
    run = write_run(tmp_path / "run", grid_records())

    def chosen(*flags):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        code, _, err = run_cli(["report", run, "--out", out, *flags], capsys)
        assert code == 0, err
        rows = csv.DictReader(open(out / "tuning.csv"))
        return {r["optimizer"]: float(r["optimizer.lr"]) for r in rows if r["selected"] == "1"}

    assert chosen() == {"adamw": 3e-4, "sophia": 3e-4}
    assert chosen("--select-by", "forget_quality,model_utility") == {"adamw": 1e-3, "sophia": 1e-3}
    loose = "{by: [forget_quality], require: [{metric: model_utility, at_least: 0.8, relative_to: target}]}"
    assert chosen("--select-by", loose) == {"adamw": 1e-3, "sophia": 3e-4}


@pytest.mark.parametrize("rule, message", [
    ("forget_qualty", "select_by names unknown metric 'forget_qualty'; task 'tofu' metrics:"),
    ("{by: [forget_quality], require: [{metric: model_utility, atleast: 1}]}", "select_by.require.0.atleast: Extra inputs are not permitted"),
    ("{by: [forget_quality", "is neither metric names (a,b) nor a YAML rule"),
    ("{require: []}", "select_by.by: Field required"),
])
def test_a_bad_selection_rule_is_one_line_exit_2(tmp_path, capsys, rule, message):
    run = write_run(tmp_path / "run", grid_records())
    code, _, err = run_cli(["report", run, "--out", tmp_path / "out", "--select-by", rule], capsys)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    config = tmp_path / "sweep.yaml"  # the same rule in a run config fails before any work
    config.write_text(json.dumps({"select_by": rule}))
    code, _, err = run_cli(["run", "--preset", "micro", "--methods", "ga", "--optimizers", "adamw", "--config", config,
                            "--out", tmp_path / "runout"], capsys)
    assert code == 2 and message in err and not (tmp_path / "runout").exists()


def test_records_name_the_seed_the_target_stage_trained_with(tmp_path):
    """record["embedded"]["prepare_seed"]: the target stage's own train seed when the recipe sets one
    (train.target.seed), else the shared train.seed — not another stage's."""
    from soul_bench.runner import Runner

    def seed_of(embedded):
        spec = SweepSpec(task="tofu", methods=["ga"], optimizers=["adamw"], preset="micro", embedded=embedded or {},
                         out=tmp_path / "out", show_progress=False)
        return Runner(spec).prepare_seed()

    assert seed_of(None) == 0
    assert seed_of({"train": {"seed": 2}}) == 2
    assert seed_of({"train": {"seed": 2, "target": {"seed": 5}}}) == 5
    assert seed_of({"train": {"retain": {"seed": 7}}}) == 0
