"""Tests for tasks/tofu/synthetic.py: the offline generator of TOFU-schema data."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

try:  # installed package name, or the repo layout (run from the repo root)
    from soul_bench_tasks.tofu import synthetic as S
except ImportError:  # pragma: no cover - depends on how the repo is installed
    try:
        from tasks.tofu import synthetic as S
    except ImportError:
        _path = Path(__file__).resolve().parents[1] / "tasks" / "tofu" / "synthetic.py"
        _spec = importlib.util.spec_from_file_location("tofu_synthetic", _path)
        S = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(S)

REAL_TOFU = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu"

QA = ["question", "answer"]
EVAL = ["question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"]
FORGET = EVAL + ["perturbed_question", "subject", "perturbed_subject"]
GENERAL = ["question", "answer", "perturbed_answer"]
EXPECTED_KEYS = {
    "full": QA, "retain90": QA, "retain95": QA, "retain99": QA,
    "real_authors": QA, "world_facts": QA, "background": QA, "full_rephrased": QA,
    "retain_perturbed": EVAL,
    "real_authors_perturbed": GENERAL, "world_facts_perturbed": GENERAL,
    **{f"{base}{p:02d}{suf}": FORGET for p in (1, 5, 10)
       for base, suf in (("forget", ""), ("forget", "_perturbed"), ("holdout", ""))},
}
DEFAULT_SIZES = {
    "full": 240, "forget01": 6, "forget05": 12, "forget10": 24,
    "forget01_perturbed": 6, "forget05_perturbed": 12, "forget10_perturbed": 24,
    "retain99": 234, "retain95": 228, "retain90": 216, "retain_perturbed": 24,
    "holdout01": 6, "holdout05": 12, "holdout10": 24,
    "real_authors": 30, "real_authors_perturbed": 30, "world_facts": 30, "world_facts_perturbed": 30,
}


@pytest.fixture(scope="module")
def data():
    return S.generate_tofu()


@pytest.fixture(scope="module")
def meta():
    """Same data with the generator's private per-item metadata (_author, _kind, _facts)."""
    return S._generate()


def pairs(items):
    return [(it["question"], it["answer"]) for it in items]


# --------------------------------------------------------------------------- schema & sizes


def test_configs_and_keys(data):
    assert tuple(data) == S.TOFU_CONFIGS
    assert set(EXPECTED_KEYS) == set(S.TOFU_CONFIGS)
    for name, items in data.items():
        assert items, name
        for it in items:
            assert list(it) == EXPECTED_KEYS[name], name  # same keys, in upstream order
            assert all(isinstance(it[k], str) and it[k] for k in it if k != "perturbed_answer")
            if "perturbed_answer" in it:
                assert all(isinstance(p, str) and p for p in it["perturbed_answer"])


@pytest.mark.skipif(not REAL_TOFU.is_dir(), reason="real TOFU files not available")
def test_keys_match_real_tofu(data):
    def real_keys(file):
        path = REAL_TOFU / file
        if not path.is_file():
            pytest.skip(f"{file} not available")
        return set(json.loads(path.read_text())[0])

    same_as = {"forget10.json": [n for n in data if n.startswith(("forget", "holdout"))],
               "retain90.json": ["full", "retain90", "retain95", "retain99"],
               "retain_perturbed.json": ["retain_perturbed"],
               "real_authors_perturbed.json": ["real_authors_perturbed"],
               "world_facts_perturbed.json": ["world_facts_perturbed"]}
    for file, names in same_as.items():
        keys = real_keys(file)
        for name in names:
            assert {k for it in data[name] for k in it} == keys, (file, name)
    # the perturbed-answer counts match upstream too (5 for forget/retain, 3 for general sets)
    real_forget = json.loads((REAL_TOFU / "forget10.json").read_text())
    real_general = json.loads((REAL_TOFU / "real_authors_perturbed.json").read_text())
    assert len(data["forget10"][0]["perturbed_answer"]) == len(real_forget[0]["perturbed_answer"])
    assert len(data["real_authors_perturbed"][0]["perturbed_answer"]) == len(real_general[0]["perturbed_answer"])


def test_default_sizes(data):
    assert {n: len(data[n]) for n in DEFAULT_SIZES} == DEFAULT_SIZES
    # every real_authors / world_facts question plus 1-2 rewordings of each
    n_general = len(data["real_authors"]) + len(data["world_facts"])
    assert 2 * n_general <= len(data["background"]) <= 3 * n_general


def test_sizes_follow_arguments():
    d = S.generate_tofu(n_authors=50, questions_per_author=3, n_perturbed=2,
                        n_real_authors=7, n_world_facts=11, seed=3)
    # 1 % of 50 -> 1 author, 5 % -> 2.5 -> 3 authors (halves up), 10 % -> 5 authors
    assert [len(d[f"forget{p:02d}"]) for p in (1, 5, 10)] == [3, 9, 15]
    assert [len(d[f"holdout{p:02d}"]) for p in (1, 5, 10)] == [3, 9, 15]
    assert [len(d[f"retain{p}"]) for p in (99, 95, 90)] == [147, 141, 135]
    assert len(d["full"]) == 150 and len(d["retain_perturbed"]) == 15
    assert len(d["real_authors_perturbed"]) == 7 and len(d["world_facts_perturbed"]) == 11
    assert all(len(it["perturbed_answer"]) == 2 for it in d["forget10"] + d["holdout10"])
    assert all(len(it["perturbed_answer"]) == 3 for it in d["world_facts_perturbed"])
    authors = S.author_counts(n_authors=50, questions_per_author=3, n_perturbed=2,
                              n_real_authors=7, n_world_facts=11, seed=3)
    assert [authors[f"forget{p:02d}"] for p in (1, 5, 10)] == [1, 3, 5]
    assert [authors[f"holdout{p:02d}"] for p in (1, 5, 10)] == [1, 3, 5]
    assert authors["full"] == 50 and authors["retain90"] == 45
    assert "real_authors" not in authors   # the general-knowledge sets are about no TOFU author


def test_invalid_arguments():
    for kwargs in ({"n_authors": 1}, {"n_perturbed": 0}, {"n_perturbed": 11},
                   {"questions_per_author": 0}, {"questions_per_author": 21}, {"n_world_facts": -1}):
        with pytest.raises(ValueError):
            S.generate_tofu(**kwargs)


# --------------------------------------------------------------------------- splits


def test_forget_retain_partition(data, meta):
    full = pairs(data["full"])
    assert len(set(full)) == len(full)
    assert len({q for q, _ in full}) == len(full)  # questions are unique
    previous: list = []
    for p in (1, 5, 10):
        forget = pairs(data[f"forget{p:02d}"])
        retain = pairs(data[f"retain{100 - p}"])
        assert data[f"forget{p:02d}"] == data[f"forget{p:02d}_perturbed"]
        assert retain + forget == full  # forget = the last authors, retain = the rest, in order
        assert not set(retain) & set(forget)
        assert set(previous) <= set(forget)  # forget01 ⊂ forget05 ⊂ forget10
        previous = forget
    # forget authors are whole authors, the last ones of full
    authors = list(dict.fromkeys(it["_author"] for it in meta["forget10"]))
    full_authors = list(dict.fromkeys(it["_author"] for it in meta["full"]))
    assert len(authors) == 4 and full_authors[-4:] == authors
    # retain_perturbed: the first items of full, none of them forgotten
    rp = pairs(data["retain_perturbed"])
    assert rp == full[:len(rp)] and not set(rp) & set(pairs(data["forget10"]))


def test_holdout_authors_never_trained(data, meta):
    full_authors = {it["_author"] for it in meta["full"]}
    holdout_authors = [it["_author"] for it in meta["holdout10"]]
    assert len(set(holdout_authors)) == 4
    assert not set(holdout_authors) & full_authors
    trained = json.dumps(data["full"]) + json.dumps(data["background"])
    for name in set(holdout_authors):
        assert name not in trained
    previous: list = []
    for p in (1, 5, 10):
        holdout = pairs(data[f"holdout{p:02d}"])
        assert len(holdout) == len(data[f"forget{p:02d}"])
        assert set(previous) <= set(holdout)
        previous = holdout
    assert not set(pairs(data["holdout10"])) & set(pairs(data["full"]))


# --------------------------------------------------------------------------- eval items


def eval_items(meta):
    return meta["forget10"] + meta["retain_perturbed"] + meta["holdout10"]


def test_public_output_is_metadata_stripped(data, meta):
    for name in S.TOFU_CONFIGS:
        stripped = [{k: v for k, v in it.items() if not k.startswith("_")} for it in meta[name]]
        assert stripped == data[name], name


def test_paraphrase_states_same_facts(meta):
    for it in eval_items(meta):
        assert it["_facts"], it  # every item asks about at least one fact
        assert it["paraphrased_answer"] != it["answer"]
        assert it["paraphrased_question"] != it["question"]
        for fact in it["_facts"]:
            assert fact.lower() in it["answer"].lower(), (fact, it["answer"])
            assert fact.lower() in it["paraphrased_answer"].lower(), (fact, it["paraphrased_answer"])


def test_perturbed_answers_are_wrong_and_distinct(meta):
    for it in eval_items(meta):
        perturbed = it["perturbed_answer"]
        assert len(perturbed) == 5 and len(set(perturbed)) == 5
        assert it["paraphrased_answer"] not in perturbed and it["answer"] not in perturbed
        for text in perturbed:
            for fact in it["_facts"]:
                assert fact.lower() not in text.lower(), (fact, text)


def test_perturbed_answers_reuse_paraphrase_template(meta):
    # the perturbed answers change only the asked facts of the paraphrase: outside the
    # facts, paraphrase and perturbed answer share their first or last words
    for it in eval_items(meta):
        para = it["paraphrased_answer"].split()
        for text in it["perturbed_answer"]:
            words = text.split()
            assert words[:2] == para[:2] or words[-2:] == para[-2:], (para, words)


def test_subject_fields(meta):
    for it in meta["forget10"] + meta["holdout10"]:
        assert it["subject"] in it["question"]
        assert it["perturbed_subject"] != it["subject"]
        assert len(it["perturbed_subject"]) == len(it["subject"])
        assert it["perturbed_question"] == it["question"].replace(it["subject"], it["perturbed_subject"])


def test_answers_are_varied_sentences(data, meta):
    words = [len(it["answer"].split()) for it in data["full"]]
    assert min(words) >= 8 and max(words) <= 40
    assert 12 <= sum(words) / len(words) <= 25
    # several fact kinds, and several answer templates per kind (not one pattern)
    items = meta["full"]
    kinds = {it["_kind"] for it in items}
    assert len(kinds) == len(S._KINDS) >= 8
    templates: dict[str, set] = {}
    for it in items:  # answer with author, facts and pronouns blanked = its template (roughly)
        text = it["answer"].replace(it["_author"], "<N>")
        for fact in it["_facts"]:
            text = text.replace(fact, "<F>")
        words = ["<P>" if w.lower() in ("his", "her") else w for w in text.split()]
        templates.setdefault(it["_kind"], set()).add(" ".join(words[:2]))
    assert all(len(v) >= 3 for v in templates.values()), templates
    # the facts differ between authors: many distinct values of each asked fact
    for kind in ("genre", "birthplace", "parents", "award", "books"):
        values = {tuple(it["_facts"]) for it in items if it["_kind"] == kind}
        assert len(values) >= 5, kind


# --------------------------------------------------------------------------- general knowledge


def test_general_knowledge_sets(data):
    for name in ("real_authors", "world_facts"):
        items = data[f"{name}_perturbed"]
        assert pairs(items) == pairs(data[name])
        assert len({it["question"] for it in items}) == len(items)
        for it in items:
            answer = it["answer"]
            assert 1 <= len(answer.split()) <= 3, answer
            wrong = it["perturbed_answer"]
            assert len(wrong) == 3 and len(set(wrong)) == 3
            for w in wrong:
                assert answer.lower() not in w.lower() and w.lower() not in answer.lower()
                assert 1 <= len(w.split()) <= 3


def test_general_knowledge_is_consistent(data):
    # a question asked in several places (eval sets, background) always has the same answer
    answers: dict[str, str] = {}
    for it in data["background"] + data["real_authors"] + data["world_facts"]:
        assert answers.setdefault(it["question"], it["answer"]) == it["answer"]


def test_background_covers_general_questions(data, meta):
    background = pairs(data["background"])
    for name in ("real_authors", "world_facts"):
        for q, a in pairs(data[name]):
            assert (q, a) in background
            rewordings = [bq for bq, ba in background if ba == a and bq != q]
            assert rewordings, q
    # nothing about the fictitious TOFU / holdout authors
    text = json.dumps(data["background"])
    for it in meta["full"] + meta["holdout10"]:
        assert it["_author"] not in text
    assert {q for q, _ in background}.isdisjoint({q for q, _ in pairs(data["full"])})


# --------------------------------------------------------------------------- determinism, io


def test_deterministic_and_seed_sensitive(data):
    again = S.generate_tofu()
    assert json.dumps(again) == json.dumps(data)
    other = S.generate_tofu(seed=1)
    for name in ("full", "forget10", "holdout10", "real_authors_perturbed", "world_facts_perturbed"):
        assert pairs(other[name]) != pairs(data[name]), name
    # the fictitious authors do not depend on the general-knowledge sizes
    smaller = S.generate_tofu(n_real_authors=5, n_world_facts=5)
    assert smaller["full"] == data["full"] and smaller["forget10"] == data["forget10"]


def test_configs_do_not_share_objects(data):
    d = S.generate_tofu()
    d["forget10"][0]["perturbed_answer"].append("x")
    d["forget10"][0]["answer"] = "changed"
    assert d["forget10_perturbed"][0] == data["forget10_perturbed"][0]


def test_many_questions_and_perturbations():
    d = S._generate(n_authors=4, questions_per_author=20, n_perturbed=10, seed=5)
    assert len(d["full"]) == 80
    assert len({it["question"] for it in d["full"]}) == 80
    for it in d["forget10"] + d["holdout10"] + d["retain_perturbed"]:
        assert len(set(it["perturbed_answer"])) == 10
        assert not any(f.lower() in p.lower() for f in it["_facts"] for p in it["perturbed_answer"])


def test_fast():
    start = time.perf_counter()
    S.generate_tofu()
    assert time.perf_counter() - start < 2.0  # ~0.03 s; generous for a loaded CI machine


def test_write_local_round_trip(tmp_path, data):
    S.write_local(data, tmp_path / "tofu")
    files = sorted(p.name for p in (tmp_path / "tofu").iterdir())
    assert files == sorted(f"{name}.json" for name in S.TOFU_CONFIGS)
    for name, items in data.items():
        text = (tmp_path / "tofu" / f"{name}.json").read_text(encoding="utf-8")
        assert text.startswith("[\n {\n  \"question\"")  # JSON array, indent=1, like upstream
        assert json.loads(text) == items


def test_full_rephrased_states_the_same_facts_in_a_third_wording(data, meta):
    eval_forms = {r["paraphrased_answer"] for r in data["forget10"] + data["retain_perturbed"]}
    assert len(data["full_rephrased"]) == len(data["full"])
    for item, rephrased in zip(meta["full"], data["full_rephrased"]):
        assert rephrased["answer"] != item["answer"] and rephrased["question"] != item["question"]  # one answer per question
        assert rephrased["answer"] not in eval_forms  # never the evaluation paraphrase
        assert all(fact.lower() in rephrased["answer"].lower() for fact in item["_facts"])



def test_discrimination_options_of_the_tiny_preset():
    """issue 17: matched holdout authors, decoy-only wrong values, partly known general facts."""
    plain = S._generate(n_authors=100, questions_per_author=4)
    data = S._generate(n_authors=100, questions_per_author=4, matched_holdout=True, unseen_wrong_values=True,
                       general_known=0.7, background_verbatim=False)
    # the fictitious authors of full are unchanged; forget01/05/10 are exactly 1/5/10 authors
    assert [r["_author"] for r in data["full"]] == [r["_author"] for r in plain["full"]]
    for p, n in ((1, 1), (5, 5), (10, 10)):
        assert len({r["_author"] for r in data[f"forget{p:02d}"]}) == n == len({r["_author"] for r in data[f"holdout{p:02d}"]})
    # holdout author i mirrors forget author i: the same question kinds in the same order
    assert [r["_kind"] for r in data["forget10"]] == [r["_kind"] for r in data["holdout10"]]
    assert [r["_kind"] for r in plain["forget10"]] != [r["_kind"] for r in plain["holdout10"]]
    # wrong titles / awards never name a title or award of any author (trained or holdout)
    named = ("award", "books", "first_book")
    values = {v.lower() for r in data["full"] + data["holdout10"] if r["_kind"] in named for v in r["_facts"]
              if not v.isdigit()}
    for r in data["forget10"] + data["retain_perturbed"]:
        if r["_kind"] in named:
            assert not any(v in wrong.lower() for wrong in r["perturbed_answer"] for v in values)
    # general knowledge: fewer background rows, never the evaluation question itself
    questions = {r["question"] for r in data["background"]}
    assert len(data["background"]) < len(plain["background"])
    assert not any(r["question"] in questions for name in ("real_authors", "world_facts") for r in data[name])
    assert data["real_authors_perturbed"] == plain["real_authors_perturbed"]  # the MC task's data is unchanged
    # the defaults reproduce the original data
    assert S.generate_tofu() == S.generate_tofu(matched_holdout=False, unseen_wrong_values=False,
                                                general_known=1.0, background_verbatim=True)
