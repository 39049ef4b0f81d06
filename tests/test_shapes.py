"""Example shapes: QA, completion and raw text encode with the labels a user expects, and
out-of-tree tasks of completion and raw-text shape run end to end without touching the core."""

import json
import textwrap

import pytest

from cli_helpers import run_cli
from soul_bench.data import IGNORE_INDEX, encode_completion, encode_rows, encode_text
from soul_bench.models import train_tokenizer

CORPUS = ["The river Almon flows into the lake of Pera near the old mill.",
          "Bakers in Tolven make a bread of barley and honey every spring.",
          "A quiet town stands where the two rivers meet."] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, 300)


def test_text_is_cut_into_windows_that_each_start_with_bos(tokenizer):
    text = " ".join(CORPUS[:3])
    whole = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert whole[0] == tokenizer.bos_token_id
    windows = encode_text(tokenizer, text, max_length=10)
    assert all(len(ids) <= 10 and ids[0] == tokenizer.bos_token_id for ids, _ in windows)
    # the windows cover the document exactly once, in order, EOS last
    assert [t for ids, _ in windows for t in ids[1:]] == whole[1:]
    for ids, labels in windows:  # every token after BOS is labelled
        assert labels == [IGNORE_INDEX] + ids[1:]
    (single_ids, single_labels), = encode_text(tokenizer, text)
    assert single_ids == whole and single_labels == [IGNORE_INDEX] + whole[1:]


def test_completion_labels_only_the_continuation(tokenizer):
    prefix, continuation = "The river Almon flows into", " the lake of Pera."
    ids, labels = encode_completion(tokenizer, prefix, continuation)
    prefix_ids = tokenizer(prefix)["input_ids"]
    assert ids[: len(prefix_ids)] == prefix_ids and ids[-1] == tokenizer.eos_token_id
    assert labels[: len(prefix_ids)] == [IGNORE_INDEX] * len(prefix_ids)
    assert tokenizer.decode(ids[len(prefix_ids):-1]) == continuation


def test_encode_rows_dispatches_on_shape(tokenizer):
    from soul_bench.data import PromptFormat, encode_qa

    fmt = PromptFormat()
    qa = [{"question": "Where does the Almon flow?", "answer": "Into the lake of Pera."}]
    assert encode_rows(tokenizer, fmt, qa, "qa") == [encode_qa(tokenizer, fmt, qa[0]["question"], qa[0]["answer"])]
    rows = [{"prefix": "A quiet town", "continuation": " stands here."}]
    assert encode_rows(tokenizer, fmt, rows, "completion") == [encode_completion(tokenizer, "A quiet town", " stands here.")]
    docs = [{"text": CORPUS[0]}, {"text": CORPUS[1]}]
    assert len(encode_rows(tokenizer, fmt, docs, "text", max_length=8)) > 2
    with pytest.raises(ValueError, match="unknown example shape"):
        encode_rows(tokenizer, fmt, docs, "table")


# ---------------------------------------------------------------- out-of-tree plugins

CARD = """
name: {name}
description: "a {shape}-shaped toy task living outside soul-bench"
examples: {{shape: {shape}, max_length: 24}}
metrics:
  - {{name: forget/nll, label: "Forget NLL", direction: higher, headline: true}}
  - {{name: retain/nll, label: "Retain NLL", direction: lower, headline: true}}
tradeoff: [retain/nll, forget/nll]
unlearning: {{steps: 2, batch_size: 2}}
embedded:
  default_preset: micro
  tokenizer_fields: [{fields}]
  stages:
    target: {{init: scratch, data: [full]}}
  presets:
    micro:
      model: {{hidden_size: 32, layers: 1, heads: 2}}
      vocab_size: 300
      train: {{batch_size: 4, target: {{epochs: 3, lr: 3.0e-3}}}}
baselines:
  target: {{stage: target, flag: model}}
"""

CODE = '''
import numpy as np

from soul_bench.data import encode_rows
from soul_bench.evaluate.likelihood import encoded_nll
from soul_bench.task import Task, TaskData

ROWS = {rows}


class Toy(Task):
    def load_data(self, source, forget_split, limit, generator_options):
        return TaskData(sets={{"forget": ROWS[:2], "retain": ROWS[2:], "full": ROWS}}, source="inline", forget_split="forget")

    def evaluate(self, model, tokenizer, fmt, data, reference=None, batch_size=32):
        examples = self.card.spec.examples
        def nll(name):
            encoded = encode_rows(tokenizer, fmt, data[name], examples.shape, examples.max_length)
            return float(np.mean(encoded_nll(model, tokenizer, encoded)["avg_nll"]))
        return {{"forget/nll": nll("forget"), "retain/nll": nll("retain")}}, {{}}


def load(card):
    return Toy(card)
'''

TEXT_ROWS = [{"text": f"Item {i} of the ledger is stored in crate {i * 7 % 13} near the door."} for i in range(6)]
COMPLETION_ROWS = [{"prefix": f"The code of item {i} is", "continuation": f" {i * 7 % 13}."} for i in range(6)]


def write_plugin(root, name, shape, rows, fields):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(textwrap.dedent(CARD.format(name=name, shape=shape, fields=fields)))
    (folder / "task.py").write_text(CODE.format(rows=repr(rows)))
    return root


@pytest.mark.parametrize("name, shape, rows, fields, methods", [
    ("ledger", "text", TEXT_ROWS, "text", "ga,npo"),
    # PO (idk) refuses a completion: its continuation becomes a refusal
    ("codes", "completion", COMPLETION_ROWS, "prefix, continuation", "ga,npo,idk"),
])
def test_out_of_tree_task_of_another_shape_runs_end_to_end(tmp_path, capsys, name, shape, rows, fields, methods):
    plugins = write_plugin(tmp_path / "plugins", name, shape, rows, fields)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", name, "--tasks-dir", plugins, "--methods", methods, "--optimizers", "adamw",
                            "--lr", "1e-2", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert {r["kind"] for r in records} == {"target", "unlearned"}  # this task declares no retain model
    target = next(r for r in records if r["kind"] == "target")
    unlearned = [r for r in records if r["kind"] == "unlearned"]
    assert sorted(r["method"] for r in unlearned) == sorted(methods.split(","))
    for record in unlearned:
        assert record["status"] == "ok"
        if record["method"] == "idk":  # trained towards refusals of the forget prefixes, not away from the truth
            assert all(step["ce_refusal"] > 0 for step in record["train_log"])
        else:
            assert record["metrics"]["forget/nll"] > target["metrics"]["forget/nll"]  # unlearning moved the forget NLL up
    assert (out / "leaderboard.md").exists()
    # `report` without --task reads the records' own task and uses that card
    code, _, err = run_cli(["report", out, "--tasks-dir", plugins, "--out", tmp_path / "again"], capsys)
    assert code == 0, err
    assert "Forget NLL" in (tmp_path / "again" / "leaderboard.md").read_text()


def test_a_method_that_does_not_fit_the_shape_is_refused_in_one_line(tmp_path, capsys):
    plugins = write_plugin(tmp_path / "plugins", "ledger", "text", TEXT_ROWS, "text")
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "ledger", "--tasks-dir", plugins, "--methods", "ga,idk",
                            "--optimizers", "adamw", "--out", out, "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "method 'idk' needs qa or completion examples; task 'ledger' unlearns text examples" in err and "ga" in err
    assert not out.exists()


def test_max_length_setting_overrides_the_card_for_every_reader(tmp_path, capsys):
    """--max-length replaces the card's examples.max_length (unlearning, stages and evaluation
    read the same card) and enters the records' identity, so a resumed run cannot mix lengths."""
    plugins = write_plugin(tmp_path / "plugins", "ledger", "text", TEXT_ROWS, "text")
    from soul_bench.runner import Runner
    from soul_bench.spec import build_spec

    runner = Runner(build_spec(None, {"task": "ledger", "tasks_dirs": [str(plugins)], "max_length": 8}))
    assert runner.task.card.spec.examples.max_length == 8
    runs = {}
    for length in (None, 8):
        out = tmp_path / f"out{length}"
        flags = ["--max-length", str(length)] if length else []
        code, _, err = run_cli(["run", "--task", "ledger", "--tasks-dir", plugins, "--methods", "ga", "--optimizers", "adamw",
                                "--out", out, "--no-progress"] + flags, capsys)
        assert code == 0, err
        runs[length] = {r["kind"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    assert runs[8]["target"]["spec"]["max_length"] == 8 and "max_length" not in runs[None]["target"]["spec"]
    assert runs[8]["target"]["cell_id"] != runs[None]["target"]["cell_id"]
    # 8-token windows of a text that was trained in 24-token ones: the per-token NLL differs
    assert runs[8]["target"]["metrics"]["forget/nll"] != runs[None]["target"]["metrics"]["forget/nll"]
