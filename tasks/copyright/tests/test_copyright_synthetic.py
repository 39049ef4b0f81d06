"""Tests for tasks/copyright/synthetic.py (the offline synthetic books of the copyright task).

Run: ``.venv/bin/python -m pytest -q tasks/copyright/tests``. No torch.
"""

from __future__ import annotations

import collections
import json
import math
import random
import re
import time
from pathlib import Path

import pytest

from soul_bench.task import load_sibling

COPYRIGHT_DIR = Path(__file__).resolve().parents[1]


S = load_sibling(str(COPYRIGHT_DIR / "synthetic.py"), "synthetic")

BOOKS = ("forget_book", "holdout_book", "retain_book")
QAS = ("forget_qa", "retain_qa")
PREFIX = {"forget_book": "forget", "holdout_book": "holdout", "retain_book": "retain",
          "forget_qa": "forget-qa", "retain_qa": "retain-qa"}
BOOK_OF = {"forget_qa": "forget_book", "retain_qa": "retain_book"}
WORLD_OF = {"forget_book": "A", "holdout_book": "A", "retain_book": "B", "forget_qa": "A", "retain_qa": "B"}
QA_KEYS = ["id", "question", "answer", "passage_id"]
# a sentence ends at . ! ? (outside quotes), or at ." !" ?" followed by a new sentence; never
# inside '"Where is it?" asked Mira.'
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|(?<=[.!?]")\s+(?=["A-Z])')


@pytest.fixture(scope="module")
def data():
    return S.generate_books()


@pytest.fixture(scope="module")
def meta():
    """The default output with private metadata (_facts, _entity, _relation)."""
    return S._generate()


@pytest.fixture(scope="module")
def world():
    return S._build(0)


def _sentences(text: str) -> list[str]:
    return _SENTENCE_END.split(text)


def _names(world: dict, book: str) -> list[str]:
    return world[book]["cast"] + world[book]["towns"]


def _tokens(text: str) -> list[str]:
    """As rouge_score's default tokenizer: lower case, runs of [a-z0-9]."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _rouge_l_recall(target: str, prediction: str) -> float:
    ref = _tokens(target)
    return _lcs(ref, _tokens(prediction)) / len(ref)


def _tail(text: str) -> str:
    """The last 75 % of a passage's words (what a model prompted with the first 25 % must produce)."""
    words = text.split()
    return " ".join(words[len(words) // 4:])


def _mean_tail_overlap(rows: list[dict], seed: int = 0) -> float:
    """Mean ROUGE-L recall of each passage's tail against the tail of another random passage."""
    rng = random.Random(seed)
    scores = []
    for i, row in enumerate(rows):
        j = rng.choice([k for k in range(len(rows)) if k != i])
        scores.append(_rouge_l_recall(_tail(row["text"]), _tail(rows[j]["text"])))
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- shape


def test_sets_and_schemas(data):
    assert tuple(data) == S.BOOK_SETS == BOOKS + QAS
    for name in BOOKS:
        assert data[name]
        for row in data[name]:
            assert list(row) == ["id", "text"] and isinstance(row["text"], str)
    for name in QAS:
        assert data[name]
        for row in data[name]:
            assert list(row) == QA_KEYS and all(isinstance(row[k], str) and row[k] for k in QA_KEYS)
    for name, rows in data.items():
        assert [row["id"] for row in rows] == [f"{PREFIX[name]}-{i:03d}" for i in range(len(rows))]


def test_default_sizes(data):
    assert {name: len(data[name]) for name in BOOKS} == {"forget_book": 40, "holdout_book": 40, "retain_book": 40}
    # one question per distinct fact stated in the set: 52 facts per book, nearly all stated
    for name in QAS:
        assert 40 <= len(data[name]) <= 52, name


def test_sizes_follow_arguments():
    d = S.generate_books(n_forget_passages=5, n_holdout_passages=0, n_retain_passages=7, words_per_passage=48, seed=3)
    assert {name: len(d[name]) for name in BOOKS} == {"forget_book": 5, "holdout_book": 0, "retain_book": 7}
    for name in QAS:
        assert 1 <= len(d[name]) <= 3 * len(d[BOOK_OF[name]])  # at most 3 facts a passage


@pytest.mark.parametrize("kwargs", [{"n_forget_passages": 0}, {"n_retain_passages": 0}, {"n_holdout_passages": -1},
                                    {"words_per_passage": 39}, {"words_per_passage": 64.0},
                                    {"n_forget_passages": True}, {"n_retain_passages": "4"}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        S.generate_books(**kwargs)


def test_public_output_has_no_metadata(data, meta):
    assert data == {name: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
                    for name, rows in meta.items()}


def test_fast():
    start = time.perf_counter()
    S.generate_books()
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- determinism


def test_deterministic_and_seed_sensitive(data):
    assert S.generate_books() == data
    other = S.generate_books(seed=1)
    for name in S.BOOK_SETS:
        assert other[name] != data[name]
    texts = {row["text"] for name in BOOKS for row in data[name]}
    assert not texts & {row["text"] for name in BOOKS for row in other[name]}


def test_book_a_does_not_depend_on_the_retain_count(data):
    small = S.generate_books(n_retain_passages=3)
    for name in ("forget_book", "holdout_book", "forget_qa"):
        assert small[name] == data[name]


def test_book_b_does_not_depend_on_the_book_a_counts(data):
    small = S.generate_books(n_forget_passages=5, n_holdout_passages=0)
    for name in ("retain_book", "retain_qa"):
        assert small[name] == data[name]


def test_forget_and_holdout_split_one_book(data):
    """forget + holdout are the passages of one 80-passage book, split by a shuffle, story order kept."""
    book = [row["text"] for row in S.generate_books(n_forget_passages=80, n_holdout_passages=0)["forget_book"]]
    position = {text: i for i, text in enumerate(book)}
    places = {name: [position[row["text"]] for row in data[name]] for name in ("forget_book", "holdout_book")}
    assert sorted(places["forget_book"] + places["holdout_book"]) == list(range(80))
    for name, where in places.items():
        assert where == sorted(where), name  # story order within each set
    assert places["forget_book"] != list(range(40))  # not simply the first half
    # both halves reach across the whole book
    assert min(places["holdout_book"]) < 10 and max(places["forget_book"]) >= 70


def test_holdout_has_the_style_of_forget(data, world):
    mean = {name: sum(len(r["text"].split()) for r in data[name]) / len(data[name]) for name in BOOKS}
    assert abs(mean["holdout_book"] - mean["forget_book"]) < 3
    for name in ("forget_book", "holdout_book"):
        text = " ".join(row["text"] for row in data[name])
        assert all(n in text for n in world["A"]["cast"]), name  # the same cast in both


# --------------------------------------------------------------------------- the prose


@pytest.mark.parametrize("words", [40, 41, 45, 48, 64, 100, 128])
def test_word_counts(words):
    d = S.generate_books(n_forget_passages=15, n_holdout_passages=10, n_retain_passages=15, words_per_passage=words,
                         seed=words)
    lo, hi = max(40, math.ceil(0.9 * words)), math.floor(1.1 * words)
    for name in BOOKS:
        counts = [len(row["text"].split()) for row in d[name]]
        assert 0.9 * words <= lo <= min(counts) and max(counts) <= hi <= 1.1 * words, (name, counts)
        assert min(counts) >= 40


def test_default_budget(data):
    # defaults: each book set ~2.5k words, ~14.9k characters; the bounds catch a doubling
    for name in BOOKS:
        texts = [row["text"] for row in data[name]]
        assert 2_300 <= sum(len(t.split()) for t in texts) <= 2_700, name
        assert 13_000 <= sum(len(t) for t in texts) <= 17_000, name


def test_token_budget_with_a_small_bpe(data):
    """A ~1500-token byte-level BPE trained on the books covers them at ~1.2-1.5 tokens a word."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=1500, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    texts = [row["text"] for name in BOOKS for row in data[name]]
    tok.train_from_iterator(texts, trainer=trainer)
    for name in BOOKS:
        tokens = sum(len(tok.encode(row["text"]).ids) for row in data[name])
        words = sum(len(row["text"].split()) for row in data[name])
        assert 1.1 <= tokens / words <= 1.5, (name, tokens / words)


def test_moderate_vocabulary(data, world):
    names = {n.lower() for book in "AB" for n in _names(world, book)}
    words = {w.lower() for name in BOOKS for row in data[name] for w in re.findall(r"[A-Za-z-]+", row["text"])}
    assert 200 <= len(words - names) <= 700


def test_plain_ascii_sentences_with_punctuation(data):
    for name in BOOKS:
        for row in data[name]:
            text = row["text"]
            assert text.isascii() and text.isprintable() and "  " not in text and text == text.strip(), text
            assert text.count('"') % 2 == 0, text
            for sentence in _sentences(text):
                assert re.fullmatch(r'["A-Z].*[.!?]"?', sentence), (sentence, text)


def test_every_passage_has_dialogue(data):
    for name in BOOKS:
        for row in data[name]:
            assert re.search(r'"[A-Z][^"]*[,.!?]"', row["text"]), row["text"]


def test_passages_are_distinct(data):
    for book in (("forget_book", "holdout_book"), ("retain_book",)):
        texts = [row["text"] for name in book for row in data[name]]
        assert len(set(texts)) == len(texts)


def test_sentences_rarely_repeat(data):
    """Fewer than 5 % of the sentences of a book occur in more than one of its passages."""
    for book in (("forget_book", "holdout_book"), ("retain_book",)):
        passages_with = collections.Counter(s for name in book for row in data[name]
                                            for s in set(_sentences(row["text"])))
        sentences = [s for name in book for row in data[name] for s in _sentences(row["text"])]
        repeated = sum(passages_with[s] > 1 for s in sentences)
        assert repeated < 0.05 * len(sentences), (book, repeated, len(sentences))


def test_rouge_l_recall_helper():
    assert _rouge_l_recall("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert _rouge_l_recall("the cat sat on the mat", "a dog ran") == 0.0
    assert _rouge_l_recall("a b c d", "x a y c z") == 0.5


def test_rouge_l_recall_helper_matches_rouge_score(data):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rows = data["forget_book"]
    for a, b in ((0, 1), (2, 7), (5, 5), (10, 30)):
        target, prediction = _tail(rows[a]["text"]), _tail(rows[b]["text"])
        assert _rouge_l_recall(target, prediction) == pytest.approx(scorer.score(target, prediction)["rougeL"].recall)


def test_continuations_are_not_predictable_from_other_passages(data):
    """The last 75 % of a passage is not guessable from another passage of the same book (~0.17)."""
    for name in BOOKS:
        rows = data[name]
        assert all(_rouge_l_recall(_tail(r["text"]), _tail(r["text"])) == 1.0 for r in rows)
        assert _mean_tail_overlap(rows) < 0.35, name
    # across forget and holdout too (the same book)
    assert _mean_tail_overlap(data["forget_book"] + data["holdout_book"], seed=1) < 0.35


def test_continuations_are_not_predictable_at_other_settings():
    d = S.generate_books(n_forget_passages=20, n_holdout_passages=0, n_retain_passages=20, words_per_passage=40, seed=5)
    for name in ("forget_book", "retain_book"):
        assert _mean_tail_overlap(d[name]) < 0.35, name


# --------------------------------------------------------------------------- the worlds


def test_casts_and_towns(world):
    for book in "AB":
        assert 6 <= len(world[book]["cast"]) <= 10 and len(world[book]["towns"]) >= 4
    names = [n.lower() for book in "AB" for n in _names(world, book)]
    assert len(set(names)) == len(names)
    assert all(len(n) >= 5 and n.isalpha() for n in names)
    assert not any(a in b for i, a in enumerate(names) for j, b in enumerate(names) if i != j)  # non-nested


def test_names_are_disjoint_across_books(data, world):
    for sets, own, other in ((("forget_book", "holdout_book", "forget_qa"), "A", "B"),
                             (("retain_book", "retain_qa"), "B", "A")):
        text = " ".join(v for name in sets for row in data[name] for k, v in row.items() if k != "id").lower()
        for n in _names(world, other):
            assert n.lower() not in text, (n, sets)
        for n in world[own]["cast"]:
            assert n.lower() in text, (n, sets)


def test_world_facts(world):
    for book in "AB":
        w = world[book]
        assert set(w["facts"]) == ({(c, rel) for c in w["cast"] for rel in S._CHARACTER_RELATIONS}
                                   | {(t, rel) for t in w["towns"] for rel in S._TOWN_RELATIONS})
        for c in w["cast"]:
            friend = w["facts"][c, "friend"]
            assert friend != c and w["facts"][friend, "friend"] == c
            assert w["facts"][c, "home"] in w["towns"]
        for rel in ("trade", "companion", "keepsake"):
            values = [w["facts"][c, rel] for c in w["cast"]]
            assert len(set(values)) == len(values), rel
    for rel in S._TOWN_RELATIONS:  # landmarks and goods: distinct within and across the books
        values = [world[book]["facts"][t, rel] for book in "AB" for t in world[book]["towns"]]
        assert len(set(values)) == len(values), rel


def test_every_passage_states_the_facts_it_records(meta, world):
    for name in BOOKS:
        for row in meta[name]:
            facts = world[WORLD_OF[name]]["facts"]
            assert 1 <= len(row["_facts"]) <= 3
            for entity, rel in row["_facts"]:
                assert entity in row["text"] and facts[entity, rel] in row["text"], (entity, rel, row["text"])


def test_facts_are_spread_over_the_passages(meta, world):
    """Each passage states its town's and its characters' least-stated facts: all facts get stated."""
    for sets, book in ((("forget_book", "holdout_book"), "A"), (("retain_book",), "B")):
        stated = collections.Counter(key for name in sets for row in meta[name] for key in row["_facts"])
        assert len(stated) >= 0.9 * len(world[book]["facts"]), book


# --------------------------------------------------------------------------- questions


def test_questions_answered_in_their_passages(data):
    for name in QAS:
        passages = {row["id"]: row["text"] for row in data[BOOK_OF[name]]}
        for row in data[name]:
            assert row["passage_id"] in passages, row
            assert row["answer"] in passages[row["passage_id"]], row
            assert row["answer"].lower() not in row["question"].lower(), row
            assert 1 <= len(row["answer"].split()) <= 4 and row["answer"] == row["answer"].strip(), row
            assert row["question"].endswith("?") and row["question"].isascii(), row


def test_one_question_per_fact_at_its_first_passage(meta, world):
    for name in QAS:
        book = BOOK_OF[name]
        first = {}
        for row in meta[book]:
            for key in row["_facts"]:
                first.setdefault(key, row["id"])
        keys = [(row["_entity"], row["_relation"]) for row in meta[name]]
        assert sorted(keys) == sorted(first)  # every stated fact once
        facts = world[WORLD_OF[name]]["facts"]
        for row, key in zip(meta[name], keys):
            assert row["answer"] == facts[key] and row["passage_id"] == first[key]
            assert key[0] in row["question"]
        questions = [row["question"] for row in meta[name]]
        assert len(set(questions)) == len(questions)
        order = [int(row["passage_id"].rsplit("-", 1)[1]) for row in meta[name]]
        assert order == sorted(order)  # in story order


def test_questions_cover_every_relation(data, meta):
    for name in QAS:
        assert {row["_relation"] for row in meta[name]} == set(S.FACT_RELATIONS)


# --------------------------------------------------------------------------- write_local


def test_write_local_round_trip(tmp_path):
    kwargs = {"n_forget_passages": 4, "n_holdout_passages": 3, "n_retain_passages": 5, "words_per_passage": 48,
              "seed": 2}
    paths = S.write_local(tmp_path / "books", **kwargs)
    files = {"forget": "forget_book", "holdout": "holdout_book", "retain": "retain_book",
             "forget_qa": "forget_qa", "retain_qa": "retain_qa"}
    assert set(paths) == set(files)
    expected = S.generate_books(**kwargs)
    for name, path in paths.items():
        assert path == tmp_path / "books" / f"{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert rows == expected[files[name]]
        if name in ("forget", "holdout", "retain"):
            assert all(isinstance(row["text"], str) for row in rows)
