"""tasks/tofu/logs.py and `soul-bench import` / `export`: TOFU eval logs (locuslab/tofu,
open-unlearning) in and out, through the tofu task's ``import_results`` / ``export_results``.

The fixture is two items per eval set with losses that are logs of simple numbers, so every
metric is worked out by hand below (the expected values are literals, not calls to the code).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from soul_bench.errors import UserError
from soul_bench.registry import load_task, task_folders
from soul_bench.report import leaderboard as lb
from soul_bench.report.rows import baseline_label
from soul_bench.task import load_sibling

T = load_sibling(str(task_folders()["tofu"] / "task.py"), "logs")  # the module the task delegates to

ln = math.log

# TOFU's file per eval set: {field: {item index: value}} (locuslab/tofu evaluate_util.py).
# item -> (avg_gt_loss, avg_paraphrased_loss, average_perturb_loss, rougeL_recall)
HAND = {
    "eval_log_forget.json": [(ln(2), ln(2), [ln(4), ln(4)], 1.0),
                             (ln(4), ln(4), [ln(2), ln(8)], 0.5)],
    "eval_log.json": [(ln(5 / 4), ln(2), [ln(8), ln(8)], 1.0),
                      (ln(5 / 2), ln(4), [ln(2), ln(2)], 0.8)],
    # item 1's avg_paraphrased_loss (TOFU's second pass over the original answer) differs from its
    # avg_gt_loss on purpose: TOFU's truth ratio uses the former, and so must the importer.
    "eval_real_author_wo_options.json": [(ln(2), ln(2), [ln(4), ln(4)], 1.0),
                                         (ln(4 / 3), 0.0, [ln(4), ln(4)], 1.0)],
    "eval_real_world_wo_options.json": [(ln(2), ln(2), [ln(2), ln(2)], 0.5),
                                        (0.0, 0.0, [ln(4), ln(4)], 1.0)],
}
# The retain model's forget set: truth-ratio statistics exp(mean pert − para) = exp(0 − ln 4) = 0.25
# and exp(0 − ln 2) = 0.5.
RETAIN_FORGET = [(ln(3), ln(4), [0.0, 0.0], 0.2), (ln(3), ln(2), [0.0, 0.0], 0.2)]

# By hand. Prob. (forget, retain) = mean exp(−gt); Prob. (real authors, world facts) = mean
# p/(p + Σq); truth-ratio stat s = exp(mean pert − para); TR forget = mean min(s, 1/s), else
# mean max(0, 1 − 1/s); ROUGE = mean rougeL_recall.
#   forget:  p = 1/2, 1/4 → 0.375; s = 4/2 = 2, exp(ln 4 − ln 4) = 1 → TR (1/2 + 1)/2 = 0.75; ROUGE 0.75
#   retain:  p = 4/5, 2/5 → 0.6;   s = 8/2 = 4, 2/4 = 1/2 → TR (3/4 + 0)/2 = 0.375; ROUGE 0.9
#   real authors: p/(p+Σq) = (1/2)/(1/2+1/4+1/4) = 1/2, (3/4)/(3/4+1/4+1/4) = 3/5 → 0.55;
#            s = 4/2 = 2, 4/1 = 4 → TR (1/2 + 3/4)/2 = 0.625; ROUGE 1.0
#   world facts: (1/2)/(1/2+1/2+1/2) = 1/3, 1/(1+1/4+1/4) = 2/3 → 0.5;
#            s = 1, 4 → TR (0 + 3/4)/2 = 0.375; ROUGE 0.75
#   model utility = 9 / (5/3 + 10/9 + 8/3 + 20/11 + 1 + 8/5 + 2 + 4/3 + 8/3) = 9 / 15.86263 = 0.567371
#   forget quality: KS two-sample test of {2, 1} vs the retain model's {0.25, 0.5}: D = 1; of the
#            C(4, 2) = 6 equally likely splits of 4 values into two pairs, 2 are that separated → p = 1/3
EXPECTED = {
    "forget/prob": 0.375, "forget/truth_ratio": 0.75, "forget/rouge": 0.75,
    "retain/prob": 0.6, "retain/truth_ratio": 0.375, "retain/rouge": 0.9,
    "real_authors/prob": 0.55, "real_authors/truth_ratio": 0.625, "real_authors/rouge": 1.0,
    "world_facts/prob": 0.5, "world_facts/truth_ratio": 0.375, "world_facts/rouge": 0.75,
    "model_utility": 0.5673714, "forget_quality": 1 / 3,
}
TOL = 1e-6


def _tofu_log(items: list[tuple]) -> dict:
    by_index = lambda values: {str(i): v for i, v in enumerate(values)}  # noqa: E731
    return {"avg_gt_loss": by_index([i[0] for i in items]),
            "gt_loss": by_index([3 * i[0] for i in items]),  # fields soul-bench ignores stay harmless
            "generated_text": by_index([[f"Q{k}?", f"answer {k}", f"truth {k}"] for k in range(len(items))]),
            "rougeL_recall": by_index([i[3] for i in items]),
            "average_perturb_loss": by_index([i[2] for i in items]),
            "avg_paraphrased_loss": by_index([i[1] for i in items])}


def write_tofu_folder(folder: Path, forget: list[tuple] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in HAND.items():
        items = forget if forget is not None and name == "eval_log_forget.json" else items
        (folder / name).write_text(json.dumps(_tofu_log(items)))
    return folder


@pytest.fixture
def logs(tmp_path) -> Path:
    return write_tofu_folder(tmp_path / "grad_ascent_1e-05_forget10_5")


@pytest.fixture
def retain_logs(tmp_path) -> Path:
    return write_tofu_folder(tmp_path / "retain90", forget=RETAIN_FORGET)


def assert_expected(metrics: dict, expected: dict = EXPECTED) -> None:
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=TOL), name


# --------------------------------------------------------------------------- import (a)


def test_hand_made_tofu_logs_give_the_hand_computed_metrics(logs, retain_logs):
    (record,) = T.import_records(logs, retain_logs, name="GA")
    assert_expected(record["metrics"])
    assert record["kind"] == "imported" and record["status"] == "ok" and record["method"] == "GA"
    assert record["task"] == "tofu" and record["optimizer"] is None and record["seed"] is None
    assert record["spec"]["forget_split"] == "forget10"  # named in the folder, as TOFU names its runs
    assert record["imported_from"]["format"] == "tofu"
    assert record["imported_from"]["path"] == str(logs.resolve())
    assert record["imported_from"]["retain"]["path"] == str(retain_logs.resolve())
    assert record["cell_id"].startswith("tofu-forget10-imported-GA-")
    forget = record["per_item"]["forget"]
    assert forget["truth_ratio_stat"] == pytest.approx([2.0, 1.0])
    assert forget["generated_text"] == ["answer 0", "answer 1"]  # TOFU's [prompt, generation, truth]


def test_without_retain_logs_forget_quality_is_empty_and_against_itself_it_is_one(logs):
    assert T.import_records(logs, name="GA")[0]["metrics"]["forget_quality"] is None
    assert T.import_records(logs, logs, name="GA")[0]["metrics"]["forget_quality"] == pytest.approx(1.0)


def test_the_eval_results_layout_the_aggregated_file_and_rank_shards_read_the_same(tmp_path, logs):
    reference = T.read_tofu_logs(logs).sets
    model = tmp_path / "model"
    write_tofu_folder(model / "eval_results" / "ds_size300")  # TOFU's default save_dir
    assert T.read_tofu_logs(model).sets == reference

    aggregated = tmp_path / "aggregated" / "eval_log_aggregated.json"
    aggregated.parent.mkdir()
    aggregated.write_text(json.dumps({name: _tofu_log(items) for name, items in HAND.items()}))
    assert T.read_tofu_logs(aggregated).sets == reference

    sharded = tmp_path / "sharded"  # a 2-GPU evaluate_util.py run: <eval_task>_<rank>.json, items split
    write_tofu_folder(sharded)
    whole = json.loads((sharded / "eval_log.json").read_text())
    (sharded / "eval_log.json").unlink()
    for rank in (0, 1):
        part = {field: {k: v for k, v in values.items() if int(k) % 2 == rank} for field, values in whole.items()}
        (sharded / f"eval_log_{rank}.json").write_text(json.dumps(part))
    assert T.read_tofu_logs(sharded).sets == reference


def test_a_folder_of_checkpoints_gives_one_record_each_in_step_order(tmp_path):
    for step in (10, 5):
        write_tofu_folder(tmp_path / "run" / f"checkpoint-{step}")
    records = T.import_records(tmp_path / "run", name="NPO", seed=1)
    assert [r["method"] for r in records] == ["NPO/checkpoint-5", "NPO/checkpoint-10"]
    assert all(r["seed"] == 1 for r in records)


# --------------------------------------------------------------------------- export (b)


def test_export_then_import_gives_identical_metrics(tmp_path, logs, retain_logs):
    (record,) = T.import_records(logs, retain_logs, name="GA")
    T.export_tofu_logs(record, tmp_path / "exported")
    (again,) = T.import_records(tmp_path / "exported", retain_logs, name="GA")
    assert again["metrics"] == record["metrics"]  # JSON floats round-trip exactly
    assert again["per_item"] == record["per_item"]


def _soul_bench_record(seed: int = 0) -> dict:
    """A record in the tofu task's own layout: no separate correct-answer pass on real authors /
    world facts (avg_paraphrased_loss None), MIA values beside the eval sets."""
    rng = np.random.default_rng(seed)
    per_item = {}
    for name in ("forget", "retain", "real_authors", "world_facts"):
        n, k = 5, 3
        gt, para = rng.uniform(0.1, 3, n), rng.uniform(0.1, 3, n)
        pert, rouge = rng.uniform(0.1, 4, (n, k)), rng.uniform(0, 1, n)
        per_item[name] = {"avg_gt_loss": gt.tolist(), "avg_paraphrased_loss": para.tolist() if name in ("forget", "retain") else None,
                          "average_perturb_loss": pert.tolist(), "truth_ratio_stat": [1.0] * n,
                          "rougeL_recall": rouge.tolist(), "generated_text": [f"g{i}" for i in range(n)]}
    per_item["mia"] = {"members": "forget"}
    metrics, _ = T.tofu_metrics(per_item)
    return {"schema": 1, "cell_id": "tofu-forget10-unlearned-npo-adamw-s0-abcd1234", "task": "tofu", "kind": "unlearned",
            "method": "npo", "optimizer": "adamw", "seed": 0, "status": "ok", "metrics": metrics, "per_item": per_item}


def test_a_soul_bench_record_exports_as_logs_tofu_aggregates_to_the_same_numbers(tmp_path):
    record = _soul_bench_record()
    paths = T.export_tofu_logs(record, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["eval_log.json", "eval_log_aggregated.json", "eval_log_forget.json",
                                             "eval_real_author_wo_options.json", "eval_real_world_wo_options.json"]
    (again,) = T.import_records(tmp_path / "out", name="npo")
    for name, value in record["metrics"].items():
        assert again["metrics"][name] == value, name

    # What TOFU's aggregate_eval_stat.py reads (eval_log_aggregated.json, {file: {field: {index: value}}}),
    # restated with numpy: Prob. on real authors, and the forget truth ratio from avg_paraphrased_loss.
    aggregated = json.loads((tmp_path / "out" / "eval_log_aggregated.json").read_text())
    authors = aggregated["eval_real_author_wo_options.json"]
    true = np.exp(-np.array(list(authors["avg_gt_loss"].values())))
    false = np.exp(-np.array(list(authors["average_perturb_loss"].values())))
    assert np.mean(true / (true + false.sum(-1))) == pytest.approx(record["metrics"]["real_authors/prob"], rel=1e-12)
    assert authors["avg_paraphrased_loss"] == authors["avg_gt_loss"]  # one pass in soul-bench: the same answer
    forget = aggregated["eval_log_forget.json"]
    stat = np.exp(np.array(list(forget["average_perturb_loss"].values())).mean(-1)
                  - np.array(list(forget["avg_paraphrased_loss"].values())))
    assert np.mean(np.minimum(stat, 1 / stat)) == pytest.approx(record["metrics"]["forget/truth_ratio"], rel=1e-12)
    assert forget["generated_text"]["0"] == ["", "g0", ""]


def test_export_refuses_a_record_of_another_task_or_without_results(tmp_path):
    other = {**_soul_bench_record(), "task": "wmdp"}
    with pytest.raises(UserError, match="task 'wmdp'"):
        T.export_records([_soul_bench_record(), other], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written
    failed = {**_soul_bench_record(), "status": "failed", "per_item": None}
    with pytest.raises(UserError, match="no TOFU record with results"):
        T.export_records([failed], tmp_path / "out")
    written, skipped = T.export_records([_soul_bench_record(), failed | {"cell_id": "x-failed"}], tmp_path / "out")
    assert list(written) == ["tofu-forget10-unlearned-npo-adamw-s0-abcd1234"] and skipped == ["x-failed"]


# --------------------------------------------------------------------------- open-unlearning (d)


def _open_unlearning_eval(items_by_file: dict[str, list[tuple]]) -> dict:
    """TOFU_EVAL.json: {metric: {"agg_value", "value_by_index": {index: {...}}}}, pre-computes included
    (locuslab/open-unlearning src/evals/base.py, configs/eval/tofu_metrics/)."""
    def prob(losses):
        return {"agg_value": None, "value_by_index": {
            str(i): {"prob": np.exp(-np.array(l)).tolist(), "avg_loss": l} for i, l in enumerate(losses)}}

    out = {"model_utility": {"agg_value": 0.5}, "forget_quality": {"agg_value": None}}
    prefixes = {"eval_log_forget.json": "forget", "eval_log.json": "retain",
                "eval_real_author_wo_options.json": "ra", "eval_real_world_wo_options.json": "wf"}
    for file_name, prefix in prefixes.items():
        items = items_by_file[file_name]
        out[f"{prefix}_Q_A_Prob"] = prob([i[0] for i in items])
        if prefix in ("forget", "retain"):
            out[f"{prefix}_Q_A_PARA_Prob"] = prob([i[1] for i in items])
        out[f"{prefix}_Q_A_PERT_Prob"] = prob([i[2] for i in items])
        out[f"{prefix}_Q_A_ROUGE"] = {"agg_value": None, "value_by_index": {
            str(k): {"rouge1_recall": 1.0, "rougeL_f1": 1.0, "rougeL_recall": i[3], "input": "Q", "ground_truth": "A",
                     "generation": f"answer {k}"} for k, i in enumerate(items)}}
    return out


def test_an_open_unlearning_tofu_eval_json_gives_the_hand_computed_metrics(tmp_path):
    unlearned = tmp_path / "unlearn" / "tofu_forget10_GradAscent" / "evals" / "TOFU_EVAL.json"
    unlearned.parent.mkdir(parents=True)
    unlearned.write_text(json.dumps(_open_unlearning_eval(HAND)))
    retain = tmp_path / "retain" / "TOFU_EVAL.json"
    retain.parent.mkdir()
    retain.write_text(json.dumps(_open_unlearning_eval({**HAND, "eval_log_forget.json": RETAIN_FORGET})))

    (record,) = T.import_records(unlearned.parent.parent, retain, name="GradAscent")  # finds evals/
    # open-unlearning's real-authors truth ratio takes the Prob. pass (ra_Q_A_Prob) as correct:
    # item 1's s = exp(ln 4 − ln 4/3) = 3 → 1 − 1/3 = 2/3, TR = (1/2 + 2/3)/2 = 0.583333; so
    # model utility = 9 / (15.86263 − 8/5 + 12/7) = 9 / 15.97691 = 0.563313. The rest as for TOFU's logs.
    assert_expected(record["metrics"], {**EXPECTED, "real_authors/truth_ratio": 0.5833333, "model_utility": 0.5633129})
    assert record["imported_from"]["format"] == "open-unlearning"
    assert record["spec"]["forget_split"] == "forget10"
    assert record["per_item"]["real_authors"]["avg_paraphrased_loss"] is None
    assert record["per_item"]["forget"]["generated_text"] == ["answer 0", "answer 1"]


def test_an_open_unlearning_file_missing_a_pre_compute_is_one_clear_error(tmp_path):
    data = _open_unlearning_eval(HAND)
    del data["retain_Q_A_PERT_Prob"]
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="retain_Q_A_PERT_Prob"):
        T.read_tofu_logs(path)


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_a_one_line_user_error(tmp_path, logs):
    with pytest.raises(UserError, match="does not exist"):
        T.import_records(tmp_path / "nowhere", name="GA")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(UserError, match="no TOFU eval logs"):
        T.import_records(tmp_path / "junk", name="GA")
    with pytest.raises(UserError, match="not a TOFU eval log"):
        T.import_records(tmp_path / "junk" / "results.json", name="GA")
    with pytest.raises(UserError, match="non-empty --name"):
        T.import_records(logs, name="  ")
    with pytest.raises(UserError, match="unknown forget split"):
        T.import_records(logs, name="GA", forget_split="forget33")

    broken = write_tofu_folder(tmp_path / "broken")
    log = json.loads((broken / "eval_log.json").read_text())
    del log["average_perturb_loss"]
    (broken / "eval_log.json").write_text(json.dumps(log))
    with pytest.raises(UserError, match="lacks average_perturb_loss"):
        T.import_records(broken, name="GA")

    other_split = write_tofu_folder(tmp_path / "forget01_retain", forget=RETAIN_FORGET[:1])
    with pytest.raises(UserError, match="not the same forget split"):
        T.import_records(logs, other_split, name="GA")


# --------------------------------------------------------------------------- leaderboard rows


def test_imported_records_are_rows_of_their_own_marked_imported_after_the_baselines():
    def record(kind, method=None, optimizer=None, seed=None, mu=0.5):
        return {"task": "tofu", "kind": kind, "method": method, "optimizer": optimizer, "seed": seed, "status": "ok",
                "metrics": {"forget_quality": 0.1, "model_utility": mu}}

    records = [record("imported", "NPO", seed=0, mu=0.4), record("imported", "NPO", seed=1, mu=0.6),
               record("imported", "GA"), record("unlearned", "ga", "adamw", 0), record("retain"), record("target")]
    metrics = [{"name": "forget_quality", "direction": "higher"}, {"name": "model_utility", "direction": "higher"}]
    rows = lb.leaderboard_rows(records, metrics, ["forget_quality"])
    assert [baseline_label(r) if r["kind"] != "unlearned" else "cell" for r in rows] == [
        "target (no unlearning)", "retain (oracle)", "GA (imported)", "NPO (imported)", "cell"]
    npo = rows[3]
    assert npo["n_seeds"] == 2 and npo["mean"]["model_utility"] == pytest.approx(0.5) and npo["rank"] is None
    assert "*NPO (imported)*" in lb.render_markdown(rows, metrics, ["forget_quality"], "t")


# --------------------------------------------------------------------------- CLI (c)


def test_cli_import_report_export(tmp_path, capsys, logs, retain_logs):
    run = tmp_path / "run"
    code, out, err = run_cli(["import", logs, "--name", "GA", "--retain", retain_logs, "--out", run], capsys)
    assert code == 0, err
    (path,) = (run / "records").glob("*.json")
    assert "wrote 1 record(s)" in out and str(run / "records") in " ".join(out.split())
    assert json.loads(path.read_text())["metrics"]["forget_quality"] == pytest.approx(1 / 3)

    code, out, err = run_cli(["report", run], capsys)
    assert code == 0, err
    assert "| – | *GA (imported)* | – | 1 | 0.333 | 0.567 |" in (run / "leaderboard.md").read_text()

    code, out, err = run_cli(["export", run, "--out", tmp_path / "exported"], capsys)
    assert code == 0, err
    (folder,) = (tmp_path / "exported").iterdir()
    assert folder.name == path.stem
    (again,) = load_task("tofu").import_results(folder, retain_logs, name="GA")  # what `import` calls
    assert again["metrics"] == json.loads(path.read_text())["metrics"]


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, logs):
    run = tmp_path / "run"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "results.json").write_text(json.dumps({"accuracy": 0.5}))
    for args in (["import", tmp_path / "nowhere", "--name", "GA", "--out", run],
                 ["import", logs, "--name", "GA", "--retain", tmp_path / "nowhere", "--out", run],
                 ["import", junk, "--name", "GA", "--out", run],  # a folder without TOFU logs
                 ["import", junk / "results.json", "--name", "GA", "--out", run],
                 ["import", logs, "--name", "GA", "--out", run, "--task", "wmdp"],  # a task without an importer
                 ["import", logs, "--name", "GA", "--out", run, "--task", "nosuch"]):
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
        assert not run.exists()

    other = tmp_path / "wmdp_run" / "records"
    other.mkdir(parents=True)
    (other / "cell.json").write_text(json.dumps({"schema": 1, "cell_id": "cell", "task": "wmdp", "status": "ok",
                                                 "metrics": {}, "per_item": {}}))
    code, out, err = run_cli(["export", other.parent, "--out", tmp_path / "exported"], capsys)
    assert code == 2 and "task 'wmdp'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exported").exists()
