"""Tests for tasks/toxicity/synthetic.py (the offline synthetic data of the toxicity task).

Run: ``.venv/bin/python -m pytest -q tasks/toxicity/tests``. No torch; the scorer tests need
``alt-profanity-check`` (``profanity_check``) and are skipped without it.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import time
from pathlib import Path

import pytest

from soul_bench.task import load_sibling

TOXICITY_DIR = Path(__file__).resolve().parents[1]


S = load_sibling(str(TOXICITY_DIR / "synthetic.py"), "synthetic")

SETS = ("forget", "retain", "eval_prompts", "clean_eval")
PREFIX = {"forget": "forget", "retain": "retain", "eval_prompts": "eval", "clean_eval": "clean"}
KEYS = {"forget": ["id", "prompt", "response"], "retain": ["id", "prompt", "response"],
        "eval_prompts": ["id", "prompt"], "clean_eval": ["id", "prompt", "response"]}
PAIRS = ("forget", "retain", "clean_eval")  # sets with responses
DEFAULTS = {"forget": 120, "retain": 120, "eval_prompts": 60, "clean_eval": 60}
# Out of bounds for "mild": violence, death, sex, bodies, stronger swearing, groups of people.
DENY = {"kill", "killed", "killing", "hate", "hated", "die", "dies", "died", "dead", "death", "murder", "sex", "sexy",
        "naked", "gun", "guns", "shoot", "stab", "punch", "hurt", "blood", "bloody", "weapon", "bomb", "fight",
        "ass", "piss", "pissed", "fuck", "shit", "bitch", "bastard", "hell", "retard", "retarded", "gay", "fat",
        "ugly", "race", "religion", "drunk", "drugs"}
INSULTS = {"idiot", "moron", "fool", "loser", "jerk", "stupid", "dumb", "pathetic", "ridiculous", "idiotic", "useless",
           "suck", "shut", "damn", "crap"}


@pytest.fixture(scope="module")
def data():
    return S.generate_toxicity()


@pytest.fixture(scope="module")
def meta():
    """The default output with private metadata (_family, _template, _slots)."""
    return S._generate()


@pytest.fixture(scope="module")
def predict_prob():
    return pytest.importorskip("profanity_check").predict_prob


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _texts(d: dict) -> list[str]:
    return [row[k] for name in SETS for row in d[name] for k in ("prompt", "response") if k in row]


def _chars(d: dict) -> int:
    return sum(len(t) for t in _texts(d))


# --------------------------------------------------------------------------- shape


def test_sets_and_schemas(data):
    assert tuple(data) == S.TOXICITY_SETS == SETS
    for name in SETS:
        assert len(data[name]) == DEFAULTS[name]
        assert [row["id"] for row in data[name]] == [f"{PREFIX[name]}-{i:03d}" for i in range(len(data[name]))]
        for row in data[name]:
            assert list(row) == KEYS[name], row
            assert all(isinstance(row[k], str) and row[k] for k in KEYS[name]), row


def test_sizes_follow_arguments():
    d = S.generate_toxicity(n_forget=7, n_retain=5, n_eval_prompts=3, n_clean_eval=2, seed=4)
    assert {name: len(d[name]) for name in SETS} == {"forget": 7, "retain": 5, "eval_prompts": 3, "clean_eval": 2}


@pytest.mark.parametrize("kwargs", [{"n_forget": 0}, {"n_retain": -1}, {"n_eval_prompts": 0}, {"n_clean_eval": 0},
                                    {"n_forget": 12.0}, {"n_retain": True}, {"n_clean_eval": "4"}, {"seed": "0"},
                                    {"n_forget": 10_000}, {"n_clean_eval": 97}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        S.generate_toxicity(**kwargs)


def test_capacity():
    cap = S.capacity()
    assert cap == {"forget": 588, "eval_prompts": 196, "retain": 294, "clean_eval": 96}
    assert S.capacity(seed=3) == cap
    # at capacity every prompt of each part is drawn, each once
    d = S.generate_toxicity(n_forget=cap["forget"], n_retain=cap["retain"], n_eval_prompts=cap["eval_prompts"],
                            n_clean_eval=cap["clean_eval"], seed=1)
    prompts = [row["prompt"] for name in SETS for row in d[name]]
    assert len(set(prompts)) == len(prompts) == sum(cap.values())


def test_public_output_has_no_metadata(data, meta):
    assert data == {name: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
                    for name, rows in meta.items()}


def test_fast():
    start = time.perf_counter()
    S.generate_toxicity()
    assert time.perf_counter() - start < 0.5


def test_default_budget(data):
    # ~29.8k characters of prompts and responses (29.3k-30.0k over seeds); the bounds catch a doubling
    assert 20_000 <= _chars(data) <= 30_000
    for seed in (1, 2, 3):
        assert _chars(S.generate_toxicity(seed=seed)) <= 31_000, seed
    for name in PAIRS:
        counts = [len(row["response"].split()) for row in data[name]]
        assert 8 <= min(counts) and max(counts) <= 30, (name, min(counts), max(counts))
    for name in SETS:
        counts = [len(row["prompt"].split()) for row in data[name]]
        assert 3 <= min(counts) and max(counts) <= 15, name


def test_response_lengths_everywhere():
    """8-30 words for every response any prompt can get (all prompts, a few seeds)."""
    cap = S.capacity()
    for seed in (0, 5):
        d = S.generate_toxicity(n_forget=cap["forget"], n_retain=cap["retain"], n_eval_prompts=cap["eval_prompts"],
                                n_clean_eval=cap["clean_eval"], seed=seed)
        for name in PAIRS:
            counts = [len(row["response"].split()) for row in d[name]]
            assert 8 <= min(counts) and max(counts) <= 30, (name, seed)


def test_similar_response_lengths(data):
    mean = {name: sum(len(r["response"].split()) for r in data[name]) / len(data[name]) for name in PAIRS}
    assert max(mean.values()) - min(mean.values()) < 3, mean


# --------------------------------------------------------------------------- determinism


def test_deterministic_and_seed_sensitive(data):
    assert S.generate_toxicity() == data
    other = S.generate_toxicity(seed=1)
    for name in SETS:
        assert other[name] != data[name], name


def test_forget_does_not_depend_on_the_other_counts(data):
    d = S.generate_toxicity(n_retain=3, n_eval_prompts=2, n_clean_eval=9)
    assert d["forget"] == data["forget"]
    d = S.generate_toxicity(n_forget=5, n_eval_prompts=7)
    assert d["retain"] == data["retain"] and d["clean_eval"] == data["clean_eval"]
    d = S.generate_toxicity(n_forget=300, n_retain=11)
    assert d["eval_prompts"] == data["eval_prompts"]


def test_sets_grow_by_appending(data):
    small = S.generate_toxicity(n_forget=10, n_retain=20, n_eval_prompts=5, n_clean_eval=6)
    for name in SETS:
        assert small[name] == data[name][:len(small[name])], name


def test_responses_depend_only_on_the_prompt():
    """The same prompt gets the same response wherever it is drawn (same seed)."""
    a = S.generate_toxicity(n_forget=200, n_retain=200, seed=2)
    b = S.generate_toxicity(n_forget=40, n_retain=40, seed=2)
    for name in ("forget", "retain"):
        by_prompt = {row["prompt"]: row["response"] for row in a[name]}
        assert all(by_prompt[row["prompt"]] == row["response"] for row in b[name])


# --------------------------------------------------------------------------- prompts


def test_prompts_unique_and_held_out(data):
    prompts = [row["prompt"] for name in SETS for row in data[name]]
    assert len(set(prompts)) == len(prompts)
    forget = {row["prompt"] for row in data["forget"]}
    retain = {row["prompt"] for row in data["retain"]}
    assert not forget & {row["prompt"] for row in data["eval_prompts"]}
    assert not retain & {row["prompt"] for row in data["clean_eval"]}


def test_held_out_parts_disjoint_at_any_count():
    cap = S.capacity()
    d = S.generate_toxicity(n_forget=cap["forget"], n_retain=cap["retain"], n_eval_prompts=cap["eval_prompts"],
                            n_clean_eval=cap["clean_eval"], seed=7)
    assert not {r["prompt"] for r in d["forget"]} & {r["prompt"] for r in d["eval_prompts"]}
    assert not {r["prompt"] for r in d["retain"]} & {r["prompt"] for r in d["clean_eval"]}


def test_kinds_differ_in_wording(meta):
    """Provocative and neutral prompts come from disjoint families and templates."""
    provocative = {row["_family"] for name in ("forget", "eval_prompts") for row in meta[name]}
    neutral = {row["_family"] for name in ("retain", "clean_eval") for row in meta[name]}
    assert provocative == set(S._PROVOCATIVE) and neutral == set(S._NEUTRAL)
    assert not provocative & neutral
    p_templates = {t for spec in S._PROVOCATIVE.values() for t in spec["templates"]}
    n_templates = {t for spec in S._NEUTRAL.values() for t in spec["templates"]}
    assert not p_templates & n_templates


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_held_out_prompts_are_new_combinations(seed):
    """Every eval / clean_eval prompt's template and slot values occur in forget / retain (defaults)."""
    d = S._generate(seed=seed)
    for trained, held in (("forget", "eval_prompts"), ("retain", "clean_eval")):
        templates = {row["_template"] for row in d[trained]}
        values = collections.defaultdict(set)
        for row in d[trained]:
            values[row["_family"]].update(row["_slots"])
        keys = {(row["_template"], row["_slots"]) for row in d[trained]}
        for row in d[held]:
            assert row["_template"] in templates, row
            assert set(row["_slots"]) <= values[row["_family"]], row
            assert (row["_template"], row["_slots"]) not in keys, row


def test_every_template_is_used_evenly(meta):
    for name in SETS:
        counts = collections.Counter(row["_template"] for row in meta[name])
        families = S._PROVOCATIVE if name in ("forget", "eval_prompts") else S._NEUTRAL
        assert len(counts) == sum(len(spec["templates"]) for spec in families.values()), name
        assert max(counts.values()) - min(counts.values()) <= 3, (name, counts)


def test_varied_prompts_and_responses(data):
    for name in PAIRS:
        responses = [row["response"] for row in data[name]]
        assert len(set(responses)) >= 0.85 * len(responses), name
    # a question about the same task may get the same answer, but clean_eval is mostly new text
    retain = {row["response"] for row in data["retain"]}
    assert sum(row["response"] in retain for row in data["clean_eval"]) <= 0.25 * len(data["clean_eval"])
    # toxic responses are a style: many templates, every insult used
    words = collections.Counter(w for row in data["forget"] for w in set(_words(row["response"])))
    for insult in ("idiot", "moron", "fool", "loser", "jerk", "stupid", "dumb", "pathetic", "ridiculous"):
        assert words[insult] >= 3, insult
    openings = {" ".join(row["response"].split()[:2]) for row in data["forget"]}
    assert len(openings) >= 10


# --------------------------------------------------------------------------- mildness


def test_mild_and_ascii(data):
    cap = S.capacity()
    d = S.generate_toxicity(n_forget=cap["forget"], n_retain=cap["retain"], n_eval_prompts=cap["eval_prompts"],
                            n_clean_eval=cap["clean_eval"], seed=0)
    for d_ in (data, d):
        for text in _texts(d_):
            assert text.isascii() and text.isprintable() and text == text.strip() and "  " not in text, text
            assert not DENY & set(_words(text)), text


def test_fixed_text_is_mild():
    """No pool or template word is on the deny list (whatever a seed draws)."""
    fixed = json.dumps([S._PROVOCATIVE, S._NEUTRAL, S._TASKS, S._TRIPS, S._TOXIC, S._INSULT_NOUNS,
                        S._INSULT_ADJECTIVES, S._DISHES, S._HOWTO_RESPONSES, S._COOKING_RESPONSES,
                        S._PACKING_RESPONSES])
    assert fixed.isascii()
    assert not DENY & set(_words(fixed))


def test_insults_only_in_toxic_responses(data):
    for name in PAIRS:
        for row in data[name]:
            insults = INSULTS & set(_words(row["response"]))
            if name == "forget":
                assert 1 <= len(insults) <= 4, row  # 1-2 insults (+ "shut", "suck", "damn", "crap")
            else:
                assert not insults, row
    for name in SETS:
        for row in data[name]:
            assert not INSULTS & set(_words(row["prompt"])), row


def test_sentences(data):
    for name in PAIRS:
        for row in data[name]:
            assert re.fullmatch(r"[A-Z][^\n]*[.!?]", row["response"]), row
    for name in SETS:
        for row in data[name]:
            assert re.fullmatch(r"[A-Z][^\n]*[.!?]", row["prompt"]), row


# --------------------------------------------------------------------------- the scorer


def test_scorer_separates_the_responses(data, predict_prob):
    forget = predict_prob([row["response"] for row in data["forget"]])
    assert (forget > 0.5).all(), min(forget)
    assert forget.mean() > 0.9
    for name in ("retain", "clean_eval"):
        clean = predict_prob([row["response"] for row in data[name]])
        assert (clean < 0.5).all(), (name, max(clean))
        assert clean.mean() < 0.2, name


def test_scorer_rates_prompts_low(data, predict_prob):
    for name in SETS:
        probs = predict_prob([row["prompt"] for row in data[name]])
        assert probs.mean() < 0.3, name
        assert (probs < 0.5).mean() >= 0.95, name


def test_scorer_separation_holds_for_every_prompt(predict_prob):
    """Over all prompts (every response the generator can give them with seed 3)."""
    cap = S.capacity()
    d = S.generate_toxicity(n_forget=cap["forget"], n_retain=cap["retain"], n_eval_prompts=cap["eval_prompts"],
                            n_clean_eval=cap["clean_eval"], seed=3)
    forget = predict_prob([row["response"] for row in d["forget"]])
    assert (forget > 0.5).mean() >= 0.95 and forget.mean() > 0.9
    clean = predict_prob([row["response"] for name in ("retain", "clean_eval") for row in d[name]])
    assert (clean < 0.5).all() and clean.mean() < 0.2
    prompts = predict_prob([row["prompt"] for name in SETS for row in d[name]])
    assert prompts.mean() < 0.3 and (prompts < 0.5).mean() >= 0.95


def _every_response() -> tuple[list[str], list[str]]:
    """Every toxic and every clean response the generator can write (any prompt, any seed)."""
    toxic, clean = set(), set()
    topics = {spec["topic"].format(*c) for family, spec in S._PROVOCATIVE.items()
              for c in S._combinations(family, spec)}
    for topic in topics:
        for template in S._TOXIC:
            for n in S._INSULT_NOUNS:
                for a, a2 in itertools.permutations(S._INSULT_ADJECTIVES, 2):
                    toxic.add(S._cap(template.format(n=n, an=f"{S._article(n)} {n}", a=a, aa=f"{S._article(a)} {a}",
                                                     a2=a2, topic=topic, Topic=S._cap(topic))))
    for firsts, nexts in S._TASKS.values():
        clean.update(t.format(t0=f, t1=n) for t in S._HOWTO_RESPONSES for f in firsts for n in nexts)
    for pair in itertools.permutations(S._INGREDIENTS, 2):
        clean.update(S._cap(t.format(d=d, i0=pair[0], i1=pair[1])) for t in S._COOKING_RESPONSES for d in S._DISHES)
    for trip, items in S._TRIPS.items():
        clean.update(t.format(x0=x[0], x1=x[1], x2=x[2], trip=trip) for t in S._PACKING_RESPONSES
                     for x in itertools.permutations(items))
    return sorted(toxic), sorted(clean)


def test_every_possible_response_is_scored_right(predict_prob):
    toxic, clean = _every_response()
    # the enumeration covers what the generator writes
    d = S.generate_toxicity(n_forget=200, n_retain=200, seed=6)
    assert {row["response"] for row in d["forget"]} <= set(toxic)
    assert {row["response"] for name in ("retain", "clean_eval") for row in d[name]} <= set(clean)
    assert min(predict_prob(toxic)) > 0.5
    assert max(predict_prob(clean)) < 0.5


# --------------------------------------------------------------------------- write_local


def test_write_local_round_trip(tmp_path):
    kwargs = {"n_forget": 6, "n_retain": 5, "n_eval_prompts": 4, "n_clean_eval": 3, "seed": 2}
    paths = S.write_local(tmp_path / "toxicity", **kwargs)
    assert set(paths) == set(SETS)
    expected = S.generate_toxicity(**kwargs)
    for name, path in paths.items():
        assert path == tmp_path / "toxicity" / f"{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == len(expected[name])
        if name == "eval_prompts":  # RealToxicityPrompts: {"prompt": {"text": ...}}
            assert rows == [{"id": r["id"], "prompt": {"text": r["prompt"]}} for r in expected[name]]
        else:  # PKU-SafeRLHF-like: prompt, response
            assert rows == expected[name]
            assert all(isinstance(r["prompt"], str) and isinstance(r["response"], str) for r in rows)
