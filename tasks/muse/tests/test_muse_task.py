"""The muse task: a local copy in muse_bench's layout (the hub schema), MUSE's prompts and
scores, bad input, and a micro end-to-end run."""

import json
import sys
from pathlib import Path

import pytest

from soul_bench.errors import UserError
from soul_bench.registry import load_task
from soul_bench.task import DataSource

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from cli_helpers import records_by_cell, run_cli  # noqa: E402

TASK = load_task("muse")
MODULE = sys.modules[type(TASK).__module__]
SMALL_BOOKS = {"n_forget_passages": 6, "n_holdout_passages": 4, "n_retain_passages": 6, "words_per_passage": 48}


def write_upstream(folder: Path, old_names: bool = False) -> None:
    """What muse_bench's load_data.py writes for one corpus: JSON lists of texts (raw, privleak),
    prompt/gt objects (verbmem), question/answer objects (knowmem). ``old_names``: the hub's
    earlier split names (retain2_qa, privleak retain2)."""
    texts = [f"Article {i}: the council of Varnholm met on day {i} and voted {i % 3} times." for i in range(6)]
    qa = [{"question": f"How often did the council vote on day {i}?", "answer": f"{i % 3} times"} for i in range(5)]
    retain_qa = "retain2_qa" if old_names else "retain_qa"
    files = {
        "raw/forget.json": texts[:3], "raw/retain1.json": texts[3:], "raw/retain2.json": texts[3:], "raw/holdout.json": texts,
        "verbmem/forget.json": [{"prompt": t[:30], "gt": t[30:]} for t in texts[:3]],
        "knowmem/forget_qa.json": qa[2:], "knowmem/forget_qa_icl.json": qa[:2],
        f"knowmem/{retain_qa}.json": qa[2:], f"knowmem/{retain_qa}_icl.json": qa[:2],
        "privleak/forget.json": texts[:3], f"privleak/{'retain2' if old_names else 'retain'}.json": texts[3:],
        "privleak/holdout.json": texts[3:],
    }
    for name, records in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(records))


@pytest.mark.parametrize("old_names", [False, True])
def test_local_copy_in_the_upstream_layout(tmp_path, old_names):
    folder = tmp_path / "news"
    write_upstream(folder, old_names)
    data = TASK.load_data(DataSource("local", path=folder), None, None, {})
    assert data.forget_split == "news"
    assert [len(data[name]) for name in ("forget", "retain", "verbmem", "knowmem_forget", "knowmem_retain_icl",
                                          "privleak_forget", "privleak_retain", "privleak_holdout")] == [3, 3, 3, 3, 2, 3, 3, 3]
    assert data["forget"][0] == {"text": "Article 0: the council of Varnholm met on day 0 and voted 0 times."}
    assert set(data["verbmem"][0]) == {"prompt", "gt"} and set(data["knowmem_forget"][0]) == {"question", "answer"}


def test_bad_local_copies_are_one_line_errors(tmp_path):
    folder = tmp_path / "books"
    write_upstream(folder)
    (folder / "knowmem" / "forget_qa.json").unlink()  # optional (MUSE-Books had no KnowMem at first)
    data = TASK.load_data(DataSource("local", path=folder), None, None, {})
    assert "knowmem_forget" not in data.sets
    (folder / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(UserError, match="row 0 has no 'gt' string"):
        TASK.load_data(DataSource("local", path=folder), None, None, {})
    (folder / "verbmem" / "forget.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed JSON"):
        TASK.load_data(DataSource("local", path=folder), None, None, {})
    (folder / "verbmem" / "forget.json").unlink()
    with pytest.raises(UserError, match="lacks verbmem/forget.json"):
        TASK.load_data(DataSource("local", path=folder), None, None, {})
    with pytest.raises(UserError, match="unknown forget split 'film'; valid: news, books, synthetic"):
        TASK.load_data(DataSource("synthetic"), "film", None, {})


def test_embedded_books_in_muse_sets():
    data = TASK.load_data(DataSource("synthetic"), None, None, SMALL_BOOKS)
    assert len(data["forget"]) == 6 and len(data["privleak_holdout"]) == 4
    first = data["forget"][0]["text"].split()
    assert data["verbmem"][0] == {"prompt": " ".join(first[:32]), "gt": " ".join(first[32:])}
    assert data["knowmem_forget_icl"] == [] and len(data["knowmem_forget"]) > 0  # the card: no few-shot examples offline
    forget_text = " ".join(r["text"] for r in data["forget"])
    assert all(q["answer"] in forget_text for q in data["knowmem_forget"])  # answerable from the forget book


def test_the_embedded_stages_train_on_part_of_the_asked_questions():
    """data.synthetic_qa_trained (the card: 0.8): KnowMem asks every question, the stages train on a
    fixed random 80 % of them, so the tiny model's KnowMem is not pinned at 100."""
    data = TASK.load_data(DataSource("synthetic"), None, None, {})
    for book in ("forget", "retain"):
        asked, trained = data[f"knowmem_{book}"], data[f"knowmem_{book}_trained"]
        assert len(trained) == round(0.8 * len(asked)) and len(asked) >= 40
        assert all(row in asked for row in trained) and len(trained) < len(asked)
    again = TASK.load_data(DataSource("synthetic"), None, None, {})
    assert again["knowmem_retain_trained"] == data["knowmem_retain_trained"]   # the same questions every run
    card = TASK.card.spec.embedded
    trained_on = {name.rstrip("?") for stage in card.stages.values() for name in stage.data}
    assert {"knowmem_forget_trained", "knowmem_retain_trained"} <= trained_on
    assert not {"knowmem_forget", "knowmem_retain"} & trained_on   # the untrained questions stay untrained


def test_knowmem_answer_is_cut_where_muse_cuts_it():
    assert MODULE._cut(" the mill\n\nQuestion: next?") == "the mill"
    assert MODULE._cut("blue scarf\nQuestion: x") == "blue scarf"
    assert MODULE._cut("a copper dome") == "a copper dome"


def test_scores_are_muse_rouge_l_f1_times_100(monkeypatch):
    """A model that returns the truth scores 100 on VerbMem and KnowMem, the empty string 0; the
    KnowMem prompt is the few-shot examples then "Question: q\\nAnswer:"."""
    from soul_bench.models import build_tiny_llama, train_tokenizer

    monkeypatch.setattr(TASK.options["data"], "synthetic_icl", 2)  # few-shot examples, as on the real path
    data = TASK.load_data(DataSource("synthetic"), None, None, SMALL_BOOKS)
    assert len(data["knowmem_forget_icl"]) == 2
    texts = [r["text"] for r in data["forget"] + data["retain"] + data["privleak_holdout"]]
    tokenizer = train_tokenizer(texts + [q["question"] for q in data["knowmem_forget"]], 400)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2)
    truth = {r["prompt"]: r["gt"] for r in data["verbmem"]}
    answers = {q["question"]: q["answer"] for name in ("knowmem_forget", "knowmem_retain") for q in data[name]}
    prompts = []

    def perfect(model, tokenizer, fmt, batch, budgets, batch_size):
        prompts.extend(batch)
        return [truth[p] if p in truth else " " + answers[p.rsplit("Question: ", 1)[1][:-len("\nAnswer:")]] + "\n\nQuestion:"
                for p in batch]

    monkeypatch.setattr(MODULE, "generate_answers", perfect)
    metrics, _ = TASK.evaluate(model, tokenizer, None, data)
    assert metrics["forget/verbmem"] == pytest.approx(100.0)
    assert metrics["forget/knowmem"] == pytest.approx(100.0) and metrics["retain/knowmem"] == pytest.approx(100.0)
    icl = data["knowmem_forget_icl"][0]
    asked = next(p for p in prompts if p.endswith(data["knowmem_forget"][0]["question"] + "\nAnswer:"))
    assert asked.startswith(f"Question: {icl['question']}\nAnswer: {icl['answer']}\n\n")
    assert metrics["mia/min_k_auc"] is not None

    monkeypatch.setattr(MODULE, "generate_answers", lambda model, tok, fmt, batch, *args: [""] * len(batch))
    metrics, _ = TASK.evaluate(model, tokenizer, None, data)
    assert metrics["forget/verbmem"] == 0.0 and metrics["retain/knowmem"] == 0.0


def test_micro_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "muse", "--preset", "micro", "--methods", "ga,npo", "--optimizers", "adamw",
                            "--steps", "3", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = records_by_cell(out)
    assert set(records) == {("target", None), ("retain", None), ("unlearned", "ga"), ("unlearned", "npo")}
    target = records[("target", None)]
    for key in ("forget/verbmem", "forget/knowmem", "retain/knowmem", "mia/privleak", "retain/ppl"):
        assert target["metrics"][key] is not None, key
    assert records[("retain", None)]["metrics"]["mia/privleak"] == pytest.approx(0.0)
    assert records[("unlearned", "ga")]["metrics"]["forget/ppl"] > target["metrics"]["forget/ppl"]
    assert "VerbMem forget" in (out / "leaderboard.md").read_text()


def test_the_muse_news_config_is_a_valid_run_configuration():
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    spec = build_spec(Path(__file__).parents[1] / "configs" / "muse-news-llama2-7b.yaml", {})
    runner = Runner(spec)  # validates names and every cell's hyper-parameters; loads no model
    loop, _, optimizer_hp = cell_settings(runner.task, spec, "npo", "adamw", 0)
    assert optimizer_hp["lr"] == 1e-5 and loop.epochs == 10 and loop.batch_size * loop.grad_accum == 32
    assert runner.task.card.spec.examples.max_length == 2048  # MUSE's windows, over the card's 512
    assert (spec.model, spec.retain_model, spec.forget_split) == ("muse-bench/MUSE-news_target",
                                                                   "muse-bench/MUSE-news_retrain", "news")
