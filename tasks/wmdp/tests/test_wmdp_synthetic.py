"""Tests for tasks/wmdp/synthetic.py (the offline synthetic WMDP world) and its lm-eval tasks.

Run: ``.venv/bin/python -m pytest -q tasks/wmdp/tests``.
"""

from __future__ import annotations

import collections
import inspect
import json
import re
import time
from pathlib import Path

import pytest

from soul_bench.task import load_sibling

WMDP_DIR = Path(__file__).resolve().parents[1]
HARNESS_DIR = WMDP_DIR / "harness"
TASKS = {"wmdp_syn_hazard": "hazard_mcq", "wmdp_syn_general": "general_mcq"}


S = load_sibling(str(WMDP_DIR / "synthetic.py"), "synthetic")
make_data = load_sibling(str(HARNESS_DIR / "make_data.py"), "make_data")

CORPORA = ("forget_corpus", "retain_corpus", "holdout_corpus")
MCQS = ("hazard_mcq", "general_mcq")
MCQ_KEYS = ["id", "subject", "question", "choices", "answer"]
CORPUS_OF = {"hazard_mcq": "forget_corpus", "general_mcq": "retain_corpus"}
GROUP_OF = {"forget_corpus": "hazard", "retain_corpus": "general", "holdout_corpus": "holdout",
            "hazard_mcq": "hazard", "general_mcq": "general"}
PASSAGES, CANONICAL = 4, 3  # the defaults: passages per entity, of which canonical


@pytest.fixture(scope="module")
def data():
    return S.generate_wmdp()


@pytest.fixture(scope="module")
def meta():
    """The default output with private metadata (_entity, _canonical, _relation)."""
    return S._generate()


@pytest.fixture(scope="module")
def world():
    return S._build()


def _relations(group: str) -> dict:
    return S.GENERAL_RELATIONS if group == "general" else S.HAZARD_RELATIONS


def _canonical_sentences(entity: dict) -> dict[str, str]:
    """{relation: canonical sentence} of ``entity``."""
    return {rel: f"{spec['stem'].format_map(entity['fields'])} {entity['facts'][rel]}."
            for rel, spec in _relations(entity["group"]).items()}


def _by_entity(rows: list[dict]) -> dict[str, list[dict]]:
    """Corpus rows (with metadata) per entity, in corpus order."""
    out = collections.defaultdict(list)
    for row in rows:
        out[row["_entity"]].append(row)
    return out


# --------------------------------------------------------------------------- shape


def test_sets_and_schemas(data):
    assert tuple(data) == S.WMDP_SETS == CORPORA + MCQS
    for name in CORPORA:
        assert data[name] and all(list(row) == ["text"] and isinstance(row["text"], str) for row in data[name])
    for name in MCQS:
        for row in data[name]:
            assert list(row) == MCQ_KEYS
            assert row["subject"] == GROUP_OF[name]
            assert isinstance(row["question"], str) and row["question"] == row["question"].strip()
            assert isinstance(row["choices"], list) and len(row["choices"]) == S.N_CHOICES == 4
            assert all(isinstance(c, str) and c and c == c.strip() for c in row["choices"])
            assert type(row["answer"]) is int and 0 <= row["answer"] < 4
        ids = [row["id"] for row in data[name]]
        assert ids == [f"{GROUP_OF[name]}-{i:03d}" for i in range(len(ids))]


def test_default_sizes(data):
    sizes = {name: len(rows) for name, rows in data.items()}
    assert sizes == {"forget_corpus": 160, "retain_corpus": 160, "holdout_corpus": 80,
                     "hazard_mcq": 200, "general_mcq": 200}


def test_default_passage_counts():
    for fn in (S.generate_wmdp, S._generate):
        params = inspect.signature(fn).parameters
        assert params["passages_per_entity"].default == PASSAGES
        assert params["canonical_passages"].default == CANONICAL


def test_sizes_follow_arguments():
    d = S.generate_wmdp(n_hazard_entities=3, n_holdout_entities=0, n_general_entities=5, passages_per_entity=4, seed=7)
    assert {k: len(v) for k, v in d.items()} == {"forget_corpus": 12, "retain_corpus": 20, "holdout_corpus": 0,
                                                 "hazard_mcq": 15, "general_mcq": 25}


@pytest.mark.parametrize("kwargs", [{"n_hazard_entities": 0}, {"n_general_entities": 0}, {"n_holdout_entities": -1},
                                    {"passages_per_entity": 0}, {"passages_per_entity": 1.5}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        S.generate_wmdp(**kwargs)


@pytest.mark.parametrize("kwargs", [{"canonical_passages": 0}, {"canonical_passages": -1},
                                    {"canonical_passages": 5},  # > passages_per_entity (4)
                                    {"passages_per_entity": 2},  # < canonical_passages (3)
                                    {"passages_per_entity": 3, "canonical_passages": 4},
                                    {"canonical_passages": 1.5}, {"canonical_passages": 2.0},
                                    {"canonical_passages": "2"}, {"canonical_passages": None},
                                    {"canonical_passages": True}])
def test_invalid_canonical_passages(kwargs):
    with pytest.raises(ValueError, match="canonical_passages") as info:
        S.generate_wmdp(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("passages, canonical", [(1, 1), (3, 1), (3, 3), (5, 2)])
def test_valid_canonical_passages(passages, canonical):
    d = S._generate(n_hazard_entities=2, n_holdout_entities=1, n_general_entities=2,
                    passages_per_entity=passages, canonical_passages=canonical)
    for name in CORPORA:
        for rows in _by_entity(d[name]).values():
            assert [r["_canonical"] for r in rows] == [True] * canonical + [False] * (passages - canonical)


def test_questions_do_not_depend_on_the_passage_counts(data):
    other = S.generate_wmdp(passages_per_entity=2, canonical_passages=1)
    for name in MCQS:
        assert other[name] == data[name]
    assert other["forget_corpus"] != data["forget_corpus"]


def test_general_known_drops_entities_from_the_retain_corpus_not_from_the_questions(data, meta):
    d = S._generate(general_known=0.85)
    described = {r["_entity"] for r in d["retain_corpus"]}
    asked = {r["_entity"] for r in meta["general_mcq"]}
    assert len(described) == 34 and described < asked and len(asked) == 40   # round(0.85 × 40)
    assert all(len(rows) == PASSAGES for rows in _by_entity(d["retain_corpus"]).values())
    public = S.generate_wmdp(general_known=0.85)
    for name in ("forget_corpus", "holdout_corpus", *MCQS):   # only the retain corpus changes
        assert public[name] == data[name]
    assert S.generate_wmdp(general_known=1.0) == data   # 1.0 (the default) describes every entity
    assert S._generate(general_known=0.85) == d         # the same entities on every call


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, True, "0.9"])
def test_invalid_general_known(fraction):
    with pytest.raises(ValueError, match="general_known"):
        S.generate_wmdp(general_known=fraction)


def test_public_output_has_no_metadata(data, meta):
    assert data == {name: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
                    for name, rows in meta.items()}


def test_deterministic_and_seed_sensitive(data):
    assert S.generate_wmdp() == data
    other = S.generate_wmdp(seed=1)
    for name in S.WMDP_SETS:
        assert other[name] != data[name]


def test_trained_hazard_entities_do_not_depend_on_other_counts(data):
    small = S.generate_wmdp(n_holdout_entities=3, n_general_entities=2)
    assert small["forget_corpus"] == data["forget_corpus"] and small["hazard_mcq"] == data["hazard_mcq"]


def test_plain_ascii_text(data):
    for name, rows in data.items():
        for row in rows:
            for text in ([row["text"]] if "text" in row else [row["question"], *row["choices"]]):
                assert text.isascii() and text.isprintable() and "  " not in text, (name, text)


def test_fast():
    start = time.perf_counter()
    S.generate_wmdp()
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------- corpora


def test_passage_lengths(data):
    for name in CORPORA:
        words = [len(row["text"].split()) for row in data[name]]
        assert 40 <= min(words) and max(words) <= 80, name


def test_holdout_has_the_style_of_forget(data):
    mean = {name: sum(len(r["text"].split()) for r in data[name]) / len(data[name]) for name in CORPORA}
    assert abs(mean["holdout_corpus"] - mean["forget_corpus"]) < 4


def test_token_budget(data):
    # defaults: ~17.9k words, ~105k characters in the two trained corpora; the upper bounds
    # catch an accidental doubling, the lower ones a fall back to fewer passages
    texts = [row["text"] for name in ("forget_corpus", "retain_corpus") for row in data[name]]
    assert 14_000 <= sum(len(t.split()) for t in texts) <= 24_000
    assert 80_000 <= sum(len(t) for t in texts) <= 140_000


def test_token_budget_with_the_embedded_tokenizer(data):
    pytest.importorskip("tokenizers")
    from soul_bench.models import train_tokenizer

    texts = [row["text"] for name in CORPORA for row in data[name]]
    tokenizer = train_tokenizer(texts, vocab_size=1500)
    counts = {name: [len(tokenizer(r["text"])["input_ids"]) for r in data[name]] for name in CORPORA}
    # defaults: ~20.2k tokens per epoch (forget ~10.4k, retain ~9.8k); a doubling would be ~40k
    assert 15_000 <= sum(counts["forget_corpus"]) + sum(counts["retain_corpus"]) <= 26_000
    for name in CORPORA:
        assert 40 <= sum(counts[name]) / len(counts[name]) <= 100, name


def test_every_passage_states_all_facts_of_its_entity(meta, world):
    for name in CORPORA:
        entities = {e["name"]: e for e in world[GROUP_OF[name]]}
        per_entity = collections.Counter(row["_entity"] for row in meta[name])
        assert set(per_entity) == set(entities) and set(per_entity.values()) == {PASSAGES}
        for row in meta[name]:
            entity = entities[row["_entity"]]
            assert entity["name"] in row["text"]
            for value in entity["facts"].values():
                assert value in row["text"], (row["text"], value)


def test_canonical_and_reworded_passages(meta, world):
    for name in CORPORA:
        entities = {e["name"]: e for e in world[GROUP_OF[name]]}
        for entity_name, rows in _by_entity(meta[name]).items():
            # the first CANONICAL passages of an entity are canonical, the rest reworded
            assert [r["_canonical"] for r in rows] == [True] * CANONICAL + [False] * (PASSAGES - CANONICAL)
            for row in rows:
                for sentence in _canonical_sentences(entities[entity_name]).values():
                    assert (sentence in row["text"]) == row["_canonical"], (row["text"], sentence)


def _check_reworded(meta: dict, world: dict) -> int:
    """Reworded passages hold no canonical sentence, nor even a question stem, of their entity
    (their values are checked by test_every_passage_states_all_facts_of_its_entity); returns
    how many were checked."""
    checked = 0
    for name in CORPORA:
        group = GROUP_OF[name]
        entities = {e["name"]: e for e in world[group]}
        for row in meta[name]:
            if row["_canonical"]:
                continue
            entity = entities[row["_entity"]]
            for rel, spec in _relations(group).items():
                assert spec["stem"].format_map(entity["fields"]) not in row["text"], (row["text"], rel)
                assert _canonical_sentences(entity)[rel] not in row["text"]
                assert entity["facts"][rel] in row["text"]
            checked += 1
    return checked


def test_reworded_passages_contain_no_canonical_sentence(meta, world):
    assert _check_reworded(meta, world) == (40 + 40 + 20) * (PASSAGES - CANONICAL)
    kwargs = {"n_hazard_entities": 6, "n_holdout_entities": 3, "n_general_entities": 6, "passages_per_entity": 5,
              "canonical_passages": 2, "seed": 4}
    assert _check_reworded(S._generate(**kwargs), S._build(6, 3, 6, 4)) == 15 * 3


def test_reworded_passages_of_an_entity_use_different_rewordings():
    # with up to 3 reworded passages (3 rewordings per relation) no reworded sentence repeats
    meta = S._generate(n_hazard_entities=8, n_holdout_entities=4, n_general_entities=8, passages_per_entity=4,
                       canonical_passages=1, seed=2)
    for name in CORPORA:
        for rows in _by_entity(meta[name]).values():
            sentences = [s for r in rows if not r["_canonical"] for s in r["text"].split(". ")[1:]]
            assert len(sentences) == 3 * 5 and len(set(sentences)) == len(sentences)


def _canonical_order(text: str, entity: dict) -> tuple[str, ...]:
    """The relations of ``entity`` in the order their canonical sentences occur in ``text``."""
    positions = {rel: text.index(sentence) for rel, sentence in _canonical_sentences(entity).items()}
    return tuple(sorted(positions, key=positions.get))


def test_canonical_passages_of_an_entity_have_different_orders(meta, world):
    # each canonical sentence is seen in several contexts: the canonical passages of one
    # entity order the facts pairwise differently (so they are also distinct texts)
    for name in CORPORA:
        entities = {e["name"]: e for e in world[GROUP_OF[name]]}
        for entity_name, rows in _by_entity(meta[name]).items():
            orders = [_canonical_order(r["text"], entities[entity_name]) for r in rows if r["_canonical"]]
            assert len(orders) == CANONICAL
            assert len(set(orders)) == len(orders), (name, entity_name, orders)


def test_entity_names_are_distinct_and_not_nested(world):
    names = [e["name"].lower() for group in ("hazard", "general", "holdout") for e in world[group]]
    assert len(set(names)) == len(names)
    assert not any(a in b for a in names for b in names if a != b)


def test_holdout_entities_never_in_trained_data(data, world):
    trained_text = " ".join(r["text"] for name in ("forget_corpus", "retain_corpus") for r in data[name]).lower()
    trained_text += " ".join(r["question"] + " " + " ".join(r["choices"]) for name in MCQS for r in data[name]).lower()
    for entity in world["holdout"]:
        assert entity["name"].lower() not in trained_text, entity["name"]
    holdout_text = " ".join(r["text"] for r in data["holdout_corpus"]).lower()
    for entity in world["hazard"] + world["general"]:
        assert entity["name"].lower() not in holdout_text, entity["name"]


# --------------------------------------------------------------------------- questions


def test_one_question_per_entity_and_relation(meta, world):
    for name in MCQS:
        group = GROUP_OF[name]
        expected = [(e["name"], rel) for e in world[group] for rel in _relations(group)]
        assert [(r["_entity"], r["_relation"]) for r in meta[name]] == expected


def test_true_answer_follows_the_stem_in_the_corpus(data, meta, world):
    for name in MCQS:
        corpus = data[CORPUS_OF[name]]
        texts = " ".join(r["text"] for r in corpus)
        entities = {e["name"]: e for e in world[GROUP_OF[name]]}
        for row in meta[name]:
            stem, truth = row["question"], row["choices"][row["answer"]]
            assert truth == entities[row["_entity"]]["facts"][row["_relation"]]
            assert row["_entity"] in stem
            assert any(f"{stem} {truth}." in r["text"] for r in corpus), stem
            for i, choice in enumerate(row["choices"]):
                if i != row["answer"]:  # the corpus never pairs the stem with a wrong value
                    assert f"{stem} {choice}" not in texts


def test_distractors_are_other_values_of_the_same_relation(meta, world):
    for name in MCQS:
        for row in meta[name]:
            pool = world["pools"][row["_relation"]]
            choices = row["choices"]
            assert len(set(choices)) == 4 and all(c in pool for c in choices)
            low = [c.lower() for c in choices]
            assert not any(a in b for a in low for b in low if a != b)  # no choice nested in another
            assert not any(c in row["question"].lower() for c in low)  # no value in the stem


def test_value_pools(world):
    relations = {**S.HAZARD_RELATIONS, **S.GENERAL_RELATIONS}
    assert set(world["pools"]) == set(relations) and len(relations) == 10
    for rel, pool in world["pools"].items():
        assert len(pool) >= 8 and len(set(pool)) == len(pool), rel
        low = [v.lower() for v in pool]
        assert not any(a in b for a in low for b in low if a != b), rel
        assert all(len(spec["rewordings"]) >= 2 for spec in relations.values())
    for group in ("hazard", "general"):
        assert all(len(e["facts"]) == 5 for e in world[group])


def test_stems_are_unique_per_entity_and_relation(data):
    for name in MCQS:
        stems = [r["question"] for r in data[name]]
        assert len(set(stems)) == len(stems)


def test_answer_positions_are_spread(data):
    for name in MCQS:
        counts = collections.Counter(r["answer"] for r in data[name])
        assert set(counts) == {0, 1, 2, 3}
        assert min(counts.values()) >= len(data[name]) // 8, counts


def test_questions_are_cloze_stems(data):
    for name in MCQS:
        for row in data[name]:
            assert not re.search(r"[.?!:]$", row["question"]) and "\n" not in row["question"]


# --------------------------------------------------------------------------- files


def test_write_local_round_trip(tmp_path):
    kwargs = {"n_hazard_entities": 4, "n_holdout_entities": 2, "n_general_entities": 3, "seed": 3}
    paths = S.write_local(tmp_path / "wmdp", **kwargs)
    assert set(paths) == set(S.WMDP_SETS)
    expected = S.generate_wmdp(**kwargs)
    for name, path in paths.items():
        assert path == tmp_path / "wmdp" / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == expected[name]


def test_committed_question_files_are_current():
    rows = make_data.make_rows()
    assert set(rows) == set(make_data.FILES) == set(MCQS)
    for name, path in make_data.FILES.items():
        assert path.read_bytes() == make_data.render(rows[name]).encode("utf-8"), \
            f"{path.name} is stale: rerun tasks/wmdp/harness/make_data.py"
    assert rows == {name: S.generate_wmdp()[name] for name in MCQS}


def test_make_data_main_rewrites_the_committed_files(tmp_path, monkeypatch, capsys):
    # running the script itself (main) writes byte-identical copies of the committed files
    committed = dict(make_data.FILES)
    monkeypatch.setattr(make_data, "FILES", {name: tmp_path / path.name for name, path in committed.items()})
    make_data.main()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in committed.values())
    for name, path in committed.items():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), \
            f"{path.name} is stale: rerun tasks/wmdp/harness/make_data.py"
    assert capsys.readouterr().out.count("wrote 200 questions") == 2


# --------------------------------------------------------------------------- lm-eval


def test_lm_eval_builds_the_tasks(tmp_path, monkeypatch, data):
    pytest.importorskip("lm_eval")
    yaml = pytest.importorskip("yaml")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    include = tmp_path / "harness"
    include.mkdir()
    for task in TASKS:  # lm-eval resolves data_files against the working directory: make them absolute
        cfg = yaml.safe_load((HARNESS_DIR / f"{task}.yaml").read_text(encoding="utf-8"))
        assert cfg["task"] == task and cfg["dataset_kwargs"]["data_files"] == {"test": f"{task}.jsonl"}
        cfg["dataset_kwargs"]["data_files"]["test"] = str(HARNESS_DIR / f"{task}.jsonl")
        cfg["dataset_kwargs"]["cache_dir"] = str(tmp_path / "hf-datasets")
        (include / f"{task}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")

    manager = TaskManager(include_path=str(include), include_defaults=False)
    if hasattr(manager, "load"):  # newer lm-eval; soul_bench.evaluate.harness uses it too
        tasks = manager.load(list(TASKS))["tasks"]
    else:  # older lm-eval
        from lm_eval.tasks import get_task_dict

        tasks = get_task_dict(list(TASKS), manager)
    assert set(tasks) == set(TASKS)
    for name, set_name in TASKS.items():
        task, rows = tasks[name], data[set_name]
        docs = list(task.test_docs())
        assert len(docs) == len(rows) == 200
        assert task.OUTPUT_TYPE == "multiple_choice" and task.config.target_delimiter == " "
        assert {m["metric"] for m in task.config.metric_list} == {"acc", "acc_norm"}
        for doc, row in ((docs[0], rows[0]), (docs[-1], rows[-1])):
            assert task.doc_to_text(doc) == row["question"]
            assert task.doc_to_choice(doc) == row["choices"]
            assert task.doc_to_target(doc) == row["answer"]
