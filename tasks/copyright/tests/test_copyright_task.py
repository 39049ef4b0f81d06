"""The copyright task: books cut into prompted passages, local books in the user layout, the
prompt/continuation border on token ids, bad input, and a micro end-to-end run."""

import json
import sys
from pathlib import Path

import pytest

from soul_bench.data import IGNORE_INDEX, PLAIN_TEXT, encode_completion, encode_prompt
from soul_bench.errors import UserError
from soul_bench.registry import load_task
from soul_bench.task import DataSource

TESTS = Path(__file__).resolve().parents[3] / "tests"
sys.path.insert(0, str(TESTS))

from cli_helpers import records_by_cell, run_cli  # noqa: E402
from toy_tokenizers import sentencepiece_like  # noqa: E402

TASK = load_task("copyright")
MODULE = sys.modules[type(TASK).__module__]


def _book(n_words: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n_words))


def test_passages_cut_words_and_drop_a_stub():
    text = "one  two\nthree " + _book(20, "w")  # 23 words, odd whitespace
    pieces = MODULE.passages(text, 10)
    assert pieces[0] == "one two three w0 w1 w2 w3 w4 w5 w6"
    assert len(pieces) == 2  # the last 3 words cannot be prompted and continued: dropped
    assert MODULE.passages(text, None) == [" ".join(text.split())]


def test_completions_join_back_to_the_passage_and_cycle_templates():
    rows = [{"id": f"p{i}", "text": _book(30, f"p{i}w")} for i in range(3)]
    out = MODULE.completions(rows, [5, 25], ["T1:", "T2:"])
    # L = 25 leaves 5 words < MIN_CONTINUATION_WORDS: only L = 5 per passage
    assert [r["id"] for r in out] == ["p0-L5", "p1-L5", "p2-L5"]
    assert [r["template"] for r in out] == ["T1:", "T2:", "T1:"]
    for row, passage in zip(out, rows):
        assert row["prefix"] + row["continuation"] == f"{row['template']} {passage['text']}"
        assert row["prefix"].split()[1:] == passage["text"].split()[:5]
        assert row["continuation"].startswith(" ") and row["passage_id"] == passage["id"]


def test_local_books_in_the_user_layout(tmp_path):
    (tmp_path / "forget.txt").write_text(_book(1000, "f"))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps({"text": _book(450, f"r{i}_")}) + "\n" for i in range(2)))
    data = TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    # 1000 words → passages of 400, 400, 200; each jsonl row is cut on its own: 400 + 50, twice
    assert [len(r["text"].split()) for r in data["forget_text"]] == [400, 400, 200]
    assert [len(r["text"].split()) for r in data["retain_text"]] == [400, 50, 400, 50]
    assert "holdout_text" not in data.sets
    # L = 100 and 300 (SOUL): the 200-word passage only has room for L = 100, the 50-word ones for neither
    assert [r["id"] for r in data["forget"]] == ["forget-0000-L100", "forget-0000-L300", "forget-0001-L100",
                                                 "forget-0001-L300", "forget-0002-L100"]
    assert len(data["retain"]) == 4
    train, test = TASK.options["data"].templates.train, TASK.options["data"].templates.test
    assert {r["template"] for r in data["forget"]} <= set(train)
    assert {r["template"] for r in data["forget_probe"]} <= set(test) and not set(train) & set(test)


def test_bad_local_books_are_one_line_errors(tmp_path):
    (tmp_path / "forget.txt").write_text(_book(500, "f"))
    with pytest.raises(UserError, match="lacks retain.txt"):
        TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    (tmp_path / "retain.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError, match="row 0 has no 'text' string"):
        TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    (tmp_path / "retain.jsonl").write_text(json.dumps({"text": "too short to prompt"}) + "\n")
    with pytest.raises(UserError, match="retain book .* has no passage of more than 8 words"):
        TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    with pytest.raises(UserError, match="ships no books"):
        TASK.load_data(DataSource("hub"), None, None, {})


def test_books_from_a_hub_dataset_named_on_the_command_line(monkeypatch):
    """--data hub:ID loads the books from that dataset (configs forget / retain / holdout, 'text'
    rows) and cuts them like local books; the card names none (copyrighted text is never shipped)."""
    import datasets

    source = DataSource.parse("hub:someone/my-books", have_model=True)
    assert (source.kind, source.hub_id, source.describe()) == ("hub", "someone/my-books", "hub:someone/my-books")
    asked = []

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def to_list(self):
            return self.rows

    def load_dataset(hub_id, config, split):
        asked.append((hub_id, config, split))
        if config == "holdout":
            raise ValueError("no such config")
        return Rows([{"text": _book(500, config[0])}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = TASK.load_data(source, None, None, {})
    assert [a[1] for a in asked] == ["forget", "retain", "holdout"] and {a[0] for a in asked} == {"someone/my-books"}
    assert [len(r["text"].split()) for r in data["forget_text"]] == [400, 100] and data.source == "hub:someone/my-books"
    assert "holdout_text" not in data.sets  # optional: the privacy columns are then None
    monkeypatch.setattr(TASK.options["data"], "hub_configs", {"forget": "forget", "retain": "holdout"})
    with pytest.raises(UserError, match="cannot load someone/my-books from the hub"):
        TASK.load_data(source, None, None, {})  # a missing forget / retain book is an error
    with pytest.raises(UserError, match="needs a dataset id"):
        DataSource.parse("hub:", have_model=True)


@pytest.mark.parametrize("layout", ["byte_level", "llama2", "metaspace", "merging"])
def test_prompt_continuation_border_on_token_ids(layout):
    """The labels are the continuation's tokens *in context*, and generation starts from the very
    ids the labels follow (SentencePiece tokenizers included, whose words carry their space)."""
    rows = [{"id": "p", "text": "Mira walked to the old mill at Dunmere and said that the river was rising fast tonight."}]
    row = MODULE.completions(rows, [6], ["Continue this passage:"])[0]
    corpus = [row["prefix"] + row["continuation"]] * 8
    if layout == "byte_level":
        from soul_bench.models import train_tokenizer

        tokenizer = train_tokenizer(corpus, 300)
    else:
        tokenizer = sentencepiece_like(layout, corpus=corpus)
    ids, labels = encode_completion(tokenizer, row["prefix"], row["continuation"])
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    scored = tokenizer.decode(ids[start:-1], skip_special_tokens=True)
    assert ids[-1] == tokenizer.eos_token_id
    prompt = encode_prompt(tokenizer, PLAIN_TEXT, row["prefix"])
    if layout == "merging":  # a token spans the border: the whole continuation stays scored
        assert start < len(prompt) and row["continuation"].replace(" ", "") in scored.replace(" ", "")
    else:
        assert prompt == ids[:start]
        assert scored.strip() == row["continuation"].strip()


def test_micro_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "copyright", "--preset", "micro", "--methods", "ga,idk", "--optimizers", "adamw",
                            "--steps", "3", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = records_by_cell(out)
    assert set(records) == {("target", None), ("retain", None), ("unlearned", "ga"), ("unlearned", "idk")}
    target = records[("target", None)]
    assert target["baseline_label"] == "target (memorised the book)"
    for key in ("forget/rouge_l", "forget/bleu", "forget_seen/rouge_l", "retain/rouge_l", "retain/bleu", "retain/ppl",
                "forget/ppl", "mia/min_k_auc", "mia/privleak"):
        assert target["metrics"][key] is not None, key
    assert 0 <= target["metrics"]["forget/rouge_l"] <= 1 and 0 <= target["metrics"]["forget/bleu"] <= 100
    generations = target["per_item"]["generations"]["forget"]  # what the report can show, item by item
    assert len(generations["generation"]) == len(generations["rouge_l"]) == len(generations["id"]) > 0
    assert records[("retain", None)]["metrics"]["mia/reference_auc"] == pytest.approx(0.5)
    assert records[("unlearned", "ga")]["metrics"]["forget/ppl"] > target["metrics"]["forget/ppl"]
    board = (out / "leaderboard.md").read_text()
    assert "Forget ROUGE-L" in board and "target (memorised the book)" in board


def test_continuations_are_scored_against_the_truth_cut_to_the_budget(monkeypatch):
    """A model that continues every prompt with its true continuation scores ROUGE-L 1 / BLEU 100;
    the generation budget is the truth's token count, capped by evaluation.max_new_tokens."""
    from soul_bench.models import build_tiny_llama, train_tokenizer

    data = TASK.load_data(DataSource("synthetic"), None, 4, {"n_forget_passages": 4, "n_holdout_passages": 2,
                                                             "n_retain_passages": 4, "words_per_passage": 48})
    texts = [r["text"] for name in ("forget_text", "retain_text", "holdout_text") for r in data[name]]
    tokenizer = train_tokenizer(texts + [r["prefix"] for r in data["forget_probe"] + data["forget"]], 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2)
    cap = 40  # tokens of a 300-token vocabulary: a few words (BLEU needs 4-grams)
    monkeypatch.setattr(TASK.options["evaluation"], "max_new_tokens", cap)
    truth = {r["prefix"]: r["continuation"] for name in ("forget", "forget_probe", "retain_probe") for r in data[name]}
    asked = {}

    def perfect(model, tokenizer, fmt, prompts, budgets, batch_size):
        out = []
        for prompt, budget in zip(prompts, budgets):
            ids = tokenizer(truth[prompt], add_special_tokens=False)["input_ids"]
            asked[prompt] = (budget, len(ids))
            out.append(tokenizer.decode(ids[:budget]).strip())
        return out

    monkeypatch.setattr(MODULE, "generate_answers", perfect)
    metrics, per_item = TASK.evaluate(model, tokenizer, None, data)
    for name in ("forget", "forget_seen", "retain"):
        assert metrics[f"{name}/rouge_l"] == pytest.approx(1.0) and metrics[f"{name}/bleu"] == pytest.approx(100.0), per_item["generations"][name]
    assert all(budget == min(n, cap) for budget, n in asked.values()) and any(n > cap for _, n in asked.values())
    assert len(per_item["generations"]["forget"]["id"]) == len(data["forget_probe"])
    assert metrics["mia/min_k_auc"] is not None and metrics["holdout/ppl"] > 1  # the likelihood pass ran

    monkeypatch.setattr(MODULE, "generate_answers", lambda *args: [""] * len(args[3]))
    metrics, _ = TASK.evaluate(model, tokenizer, None, data)
    assert metrics["forget/rouge_l"] == 0.0 and metrics["forget/bleu"] == 0.0


def test_the_llama2_config_is_a_valid_run_configuration():
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    config = Path(__file__).parents[1] / "configs" / "llama2-7b.yaml"
    spec = build_spec(config, {"data": "synthetic"})  # the model and books come from the command line
    runner = Runner(spec)  # validates names and every cell's hyper-parameters; loads no model
    loop, _, optimizer_hp = cell_settings(runner.task, spec, "graddiff", "sophia", 0)
    assert optimizer_hp["lr"] == 5e-6 and optimizer_hp["rho"] == 0.04 and loop.epochs == 5 and loop.grad_accum == 4
    assert cell_settings(runner.task, spec, "po", "soul", 0)[2]["lr"] == 5e-6
