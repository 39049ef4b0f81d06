"""TOFU's privacy probes: the micro run end to end through the CLI, and the evaluation's
edge cases (no holdout set, GradNorm off, the retain model against itself)."""

import csv
import json
import math

import pytest

from cli_helpers import run_cli

MICRO = ["--preset", "micro", "--steps", "2", "--no-progress"]
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")
MIA_METRICS = [f"mia/{a}_auc" for a in ATTACKS] + ["mia/privleak"]


def test_micro_run_records_every_mia_metric(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "tofu", "--methods", "ga", "--optimizers", "adamw", "--out", out, *MICRO], capsys)
    assert code == 0, err
    records = {r["kind"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    assert set(records) == {"retain", "target", "unlearned"}
    for kind, record in records.items():
        metrics, probes = record["metrics"], record["per_item"]["mia"]
        for name in MIA_METRICS[:-1]:
            assert 0.0 <= metrics[name] <= 1.0, (kind, name)
        assert math.isfinite(metrics["mia/privleak"])
        assert 0.0 <= metrics["forget/exact_memorisation"] <= 1.0 and 0.0 <= metrics["forget/extraction_strength"] <= 1.0
        assert probes["members"] == "forget" and probes["nonmembers"] == "holdout" and probes["notes"] == []
        assert probes["include_eos"] is False  # the card's default: token-level scores leave EOS out
        n_forget, n_holdout = len(record["per_item"]["forget"]["avg_gt_loss"]), len(probes["avg_nll"]["holdout"])
        assert n_forget > 0 and n_holdout > 0
        for attack in ATTACKS:
            assert probes["auc"][attack] == metrics[f"mia/{attack}_auc"]
            assert len(probes["scores"][attack]["forget"]) == n_forget and len(probes["scores"][attack]["holdout"]) == n_holdout
            roc = probes["roc"][attack]
            assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 101
            assert (roc["fpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 1.0, 1.0)
        assert len(probes["exact_memorisation"]) == len(probes["extraction_strength"]) == n_forget
    # the retain model is its own reference: the reference attack is at chance, PrivLeak exactly 0
    assert records["retain"]["metrics"]["mia/reference_auc"] == pytest.approx(0.5)
    assert records["retain"]["metrics"]["mia/privleak"] == pytest.approx(0.0)
    # the others use the retain model's Min-K% AUC for PrivLeak
    retain_auc = records["retain"]["metrics"]["mia/min_k_auc"]
    assert records["target"]["per_item"]["mia"]["privleak_retain_auc"] == retain_auc
    # the new columns reach the leaderboard
    with (out / "leaderboard.csv").open() as handle:
        header = next(csv.reader(handle))
    assert {"mia/privleak", "mia/min_k_auc", "forget/exact_memorisation"} <= set(header)


@pytest.fixture(scope="module")
def tofu_and_model():
    from soul_bench import registry
    from soul_bench.models import build_tiny_llama, train_tokenizer
    from soul_bench.prepare import embedded_preset
    from soul_bench.task import DataSource

    task = registry.load_task("tofu", [])
    recipe = embedded_preset(task, "micro", {})
    data = task.load_data(DataSource("synthetic"), None, 4, recipe["generator"])  # 4 items a set: seconds
    texts = [r["question"] + " " + r["answer"] for r in data["full"] + data["holdout"] + data["background"]]
    tokenizer = train_tokenizer(texts, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2, seed=0)  # untrained: only the plumbing matters
    model.eval()
    return task, data, model, tokenizer, task.prompt_format()


def test_without_holdout_mia_metrics_are_none_with_a_note(tofu_and_model):
    from soul_bench.task import TaskData

    task, data, model, tokenizer, fmt = tofu_and_model
    no_holdout = TaskData({k: v for k, v in data.sets.items() if k != "holdout"}, "local:/somewhere", data.forget_split)
    metrics, per_item = task.evaluate(model, tokenizer, fmt, no_holdout, None)
    assert all(metrics[name] is None for name in MIA_METRICS)
    assert 0.0 <= metrics["forget/exact_memorisation"] <= 1.0  # memorisation needs no non-members
    assert per_item["mia"]["nonmembers"] is None and "no holdout set" in per_item["mia"]["notes"][0]
    json.dumps(per_item)
    again = task.reference_metrics(per_item, per_item)
    assert again["mia/reference_auc"] is None and again["mia/privleak"] is None


def test_gradnorm_off_and_reference_against_itself(tofu_and_model, monkeypatch):
    task, data, model, tokenizer, fmt = tofu_and_model
    monkeypatch.setattr(task.card.spec, "mia", task.card.spec.mia.model_copy(update={"gradnorm": False}))
    metrics, per_item = task.evaluate(model, tokenizer, fmt, data, None)
    assert metrics["mia/gradnorm_auc"] is None and any("gradnorm" in n for n in per_item["mia"]["notes"])
    assert metrics["mia/reference_auc"] is None  # no retain model …
    # … and PrivLeak falls back to A'_retain = 0.5
    assert metrics["mia/privleak"] == pytest.approx((1 - metrics["mia/min_k_auc"] - 0.5) / 0.5 * 100, abs=1e-6)
    own = task.reference_metrics(per_item, per_item)
    assert own["mia/reference_auc"] == pytest.approx(0.5) and own["mia/privleak"] == pytest.approx(0.0)
    assert own["forget_quality"] == pytest.approx(1.0)
    json.dumps(per_item)


def forget_and_holdout_stats(data, model, tokenizer, fmt):
    """answer_nll token statistics of the eval forget and holdout ground truths, in that order."""
    from soul_bench.evaluate.likelihood import answer_nll

    items = list(data["eval_forget"]) + list(data["holdout"])
    out = answer_nll(model, tokenizer, fmt, [(r["question"], r["answer"]) for r in items], keep_token_stats=True)
    return items, out


def test_include_eos_option_changes_token_level_scores(tofu_and_model, monkeypatch):
    from soul_bench.evaluate import mia

    task, data, model, tokenizer, fmt = tofu_and_model
    monkeypatch.setattr(task.card.spec, "mia", task.card.spec.mia.model_copy(update={"gradnorm": False}))
    default_metrics, default = task.evaluate(model, tokenizer, fmt, data, None)
    default = default["mia"]
    # include_eos: true, on the same likelihood numbers (the probes alone: no second evaluation)
    items, out = forget_and_holdout_stats(data, model, tokenizer, fmt)
    n = len(data["eval_forget"])
    monkeypatch.setattr(task.card.spec, "mia", task.card.spec.mia.model_copy(update={"include_eos": True}))
    _, kept = task._mia_probes(model, tokenizer, fmt, data, data["eval_forget"], data["holdout"], out,
                               list(range(n)), list(range(n, len(items))))
    assert default["include_eos"] is False and kept["include_eos"] is True

    # by hand from answer_nll's statistics: the default drops the final (EOS) position
    k, n_forget = default["k"], len(default["scores"]["min_k"]["forget"])
    for scores, drop in ((default, True), (kept, False)):
        flat = scores["scores"]["min_k"]["forget"] + scores["scores"]["min_k"]["holdout"]
        plus = scores["scores"]["min_k_plus_plus"]["forget"] + scores["scores"]["min_k_plus_plus"]["holdout"]
        for i, lp in enumerate(out["token_logprobs"]):
            assert out["token_is_eos"][i][-1] and not out["token_is_eos"][i][:-1].any()
            end = len(lp) - 1 if drop else len(lp)
            assert flat[i] == pytest.approx(mia.min_k_score(lp[:end], k), rel=1e-5)
            assert plus[i] == pytest.approx(mia.min_k_plus_plus_score(lp[:end], out["token_mu"][i][:end],
                                                                       out["token_sigma"][i][:end], k), rel=1e-5)
        em = [mia.exact_memorisation(out["argmax_match"][i][: len(out["argmax_match"][i]) - drop]) for i in range(n_forget)]
        assert scores["exact_memorisation"] == pytest.approx(em)
    # the option changes Min-K% (some item's score moves) but not LOSS / ZLib (answer + EOS always)
    assert default["scores"]["min_k"] != kept["scores"]["min_k"]
    for attack in ("loss", "zlib"):
        assert default["scores"][attack] == kept["scores"][attack]
    # ZLib = −avg NLL / zlib length of the answer
    import zlib

    for i, item in enumerate(items):
        expected = -out["avg_nll"][i] / len(zlib.compress(item["answer"].encode("utf-8")))
        assert (default["scores"]["zlib"]["forget"] + default["scores"]["zlib"]["holdout"])[i] == pytest.approx(expected, rel=1e-4)
    assert default_metrics["mia/min_k_auc"] == default["auc"]["min_k"]


def test_include_eos_reaches_gradnorm(tofu_and_model, monkeypatch):
    task, data, model, tokenizer, fmt = tofu_and_model
    from soul_bench.evaluate import mia

    pairs = [(r["question"], r["answer"]) for r in data["eval_forget"]]
    calls = []
    real = mia.gradnorm_scores
    monkeypatch.setattr(mia, "gradnorm_scores", lambda *a, **kw: calls.append(kw.get("include_eos")) or real(*a, **kw))
    _, per_item = task.evaluate(model, tokenizer, fmt, data, None)
    assert calls == [False, False]  # forget and holdout, EOS left out by default
    assert per_item["mia"]["scores"]["gradnorm"]["forget"] == pytest.approx(real(model, tokenizer, fmt, pairs).tolist(), rel=1e-5)
    from soul_bench.card import parse_card
    from soul_bench.errors import UserError

    with pytest.raises(UserError, match="mia.include_eos"):  # checked when the card is read, before anything is scored
        parse_card({**task.card.raw, "mia": {**task.card.raw["mia"], "include_eos": "yes"}}, "task.yaml")
