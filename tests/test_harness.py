"""soul_bench.evaluate.harness: the real lm-evaluation-harness on an in-memory model."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from soul_bench.data import PromptFormat  # noqa: E402
from soul_bench.errors import UserError  # noqa: E402
from soul_bench.evaluate.harness import flatten_results, local_tasks, run_harness  # noqa: E402
from soul_bench.evaluate.likelihood import answer_nll  # noqa: E402
from soul_bench.models import build_tiny_llama, train_tokenizer  # noqa: E402
from soul_bench.task import load_sibling  # noqa: E402

HARNESS_DIR = Path(__file__).resolve().parents[1] / "tasks" / "tofu" / "harness"
LIMIT = 6


make_data = load_sibling(str(HARNESS_DIR / "make_data.py"), "make_data")


@pytest.fixture(scope="module")
def tiny():
    """A 64/2 Llama (untrained: scores near chance) with a BPE tokenizer trained on the task's text."""
    synthetic = make_data._synthetic()
    data = synthetic.generate_tofu()
    rows = make_data.make_rows()
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in data["background"]]
    texts += [f"Question: {r['question']}\nAnswer: {c}" for r in rows for c in r["choices"]]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    model = build_tiny_llama(tokenizer, hidden_size=64, layers=2, heads=2, seed=0)
    return model, tokenizer


@pytest.fixture(scope="module")
def tofu_mc(tiny):
    model, tokenizer = tiny
    return run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR], limit=LIMIT, log_samples=True)


def _manual_logliks(model, tokenizer, doc) -> list[float]:
    """Sum log-prob of " <choice>" after the prompt, from soul-bench's own likelihood pass
    (which also scores the EOS after the answer: dropped here, lm-eval does not score it)."""
    pairs = [(doc["question"], choice) for choice in doc["choices"]]
    out = answer_nll(model, tokenizer, PromptFormat(), pairs, keep_token_logprobs=True)
    return [float(lp[:-1].sum()) for lp in out["token_logprobs"]]


def test_data_file_is_current():
    rows = [json.loads(line) for line in (HARNESS_DIR / "tofu_mc.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == make_data.make_rows(), "tofu_mc.jsonl is stale: rerun tasks/tofu/harness/make_data.py"
    assert len(rows) == 60 and {r["set"] for r in rows} == {"real_authors", "world_facts"}
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
        assert r["choices"][r["gold"]] == r["answer"]
    assert local_tasks([HARNESS_DIR]) == ["tofu_mc"]


def test_tofu_mc_metrics(tofu_mc):
    metrics, details = tofu_mc
    assert 0.0 <= metrics["harness/tofu_mc/acc"] <= 1.0
    assert metrics["harness/tofu_mc/acc_stderr"] >= 0.0
    assert 0.0 <= metrics["harness/tofu_mc/acc_norm"] <= 1.0
    assert all(k.startswith("harness/tofu_mc/") for k in metrics)
    assert not any("alias" in k or "," in k for k in metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert details["n_samples"]["tofu_mc"] == {"original": 60, "effective": LIMIT}
    assert details["lm_eval_version"] and details["task_versions"] == {"tofu_mc": 1.0}
    assert details["config"]["include_defaults"] is False  # local only: built-ins not indexed
    assert details["config"]["bos_in_context"] is True
    json.dumps(details)  # goes into JSON records as is


def test_loglikelihoods_match_manual_computation(tiny, tofu_mc):
    """lm-eval scored exactly what soul-bench scores: same prompt, BOS, answer prefix, tokens."""
    model, tokenizer = tiny
    samples = tofu_mc[1]["samples"]["tofu_mc"]
    assert len(samples) == LIMIT
    fmt = PromptFormat()
    for sample in samples:
        doc = sample["doc"]
        contexts = {ctx for ctx, _ in sample["arguments"]}
        assert contexts == {fmt.prompt(tokenizer, doc["question"])}
        assert [cont for _, cont in sample["arguments"]] == [fmt.answer_prefix + c for c in doc["choices"]]
        harness = [resp[0] for resp in sample["filtered_resps"]]
        assert harness == pytest.approx(_manual_logliks(model, tokenizer, doc), abs=1e-3)
        assert sample["acc"] == float(max(range(4), key=harness.__getitem__) == doc["gold"])


def test_without_bos_scores_differ(tiny):
    """The comparison above can tell: without BOS lm-eval's numbers move away from ours."""
    model, tokenizer = tiny
    _, details = run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR], limit=2,
                             add_bos_token=False, log_samples=True)
    assert details["config"]["bos_in_context"] is False
    diffs = []
    for sample in details["samples"]["tofu_mc"]:
        manual = _manual_logliks(model, tokenizer, sample["doc"])
        diffs += [abs(r[0] - m) for r, m in zip(sample["filtered_resps"], manual)]
    assert max(diffs) > 1e-3


def test_unknown_task_is_a_user_error(tiny):
    model, tokenizer = tiny
    with pytest.raises(UserError) as err:
        run_harness(model, tokenizer, ["tofu_mcq"], include_dirs=[HARNESS_DIR], include_defaults=False)
    message = str(err.value)
    assert "unknown lm-eval task 'tofu_mcq'" in message and "local tasks: tofu_mc" in message
    assert "\n" not in message
    with pytest.raises(UserError, match="does not exist"):
        run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR / "missing"])


def test_offline_env_set_during_call_and_restored(tiny, monkeypatch):
    import datasets.config
    import huggingface_hub.constants
    from lm_eval import evaluator

    model, tokenizer = tiny
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    seen = {}
    original = evaluator.simple_evaluate

    def spy(*args, **kwargs):
        seen.update(env=[os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")],
                    hub=huggingface_hub.constants.HF_HUB_OFFLINE, datasets=datasets.config.HF_HUB_OFFLINE)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluator, "simple_evaluate", spy)
    run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR], limit=1, offline=True)
    assert seen == {"env": ["1", "1"], "hub": True, "datasets": True}
    assert "HF_HUB_OFFLINE" not in os.environ and "HF_DATASETS_OFFLINE" not in os.environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False and datasets.config.HF_HUB_OFFLINE is False


def test_caller_state_restored(tiny):
    """lm-eval seeds the global RNGs and HFLM calls model.eval(): the caller gets its state back."""
    import torch

    model, tokenizer = tiny
    model.train()
    random.seed(5)
    torch.manual_seed(5)
    run_harness(model, tokenizer, ["tofu_mc"], include_dirs=[HARNESS_DIR], limit=1)
    after = (random.random(), torch.rand(1).item())
    random.seed(5)
    torch.manual_seed(5)
    assert after == (random.random(), torch.rand(1).item())
    assert model.training
    model.eval()


def test_local_task_with_include_function_and_relative_data(tiny, tmp_path):
    """A task folder like a third party's: a base YAML with relative data + a !function, included."""
    model, tokenizer = tiny
    rows = make_data.make_rows()[:3]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "utils.py").write_text(
        "def process_docs(dataset):\n    return dataset.filter(lambda d: d['set'] == 'real_authors')\n")
    (tmp_path / "_base.yaml").write_text(
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/qa.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\nprocess_docs: !function utils.process_docs\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_choice: choices\ndoc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n")
    (tmp_path / "mini.yaml").write_text("include: _base.yaml\ntask: mini_mc\n")
    metrics, details = run_harness(model, tokenizer, ["mini_mc", {"task": "tofu_mc", "num_fewshot": 1}],
                                   include_dirs=[tmp_path, HARNESS_DIR], limit=2)
    assert 0.0 <= metrics["harness/mini_mc/acc"] <= 1.0
    assert details["n_samples"]["mini_mc"]["original"] == 3
    assert details["n_shot"]["tofu_mc"] == 1
    assert (tmp_path / "_base.yaml").read_text().count("data/qa.jsonl") == 1  # sources untouched


def test_flatten_results():
    flat = flatten_results({
        "tofu_mc": {"alias": "tofu_mc", "name": "tofu_mc", "sample_len": 6, "acc,none": 0.5,
                    "acc_stderr,none": 0.2, "acc_norm,none": None},
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
    })
    assert flat == {"harness/tofu_mc/acc": 0.5, "harness/tofu_mc/acc_stderr": 0.2,
                    "harness/gsm8k/exact_match/strict-match": 0.25}


def test_builtin_index_suggests_names(tiny):
    """A name that is not local makes lm-eval index its built-in tasks (6-16 s here, once per process)."""
    model, tokenizer = tiny
    with pytest.raises(UserError, match="did you mean arc_easy"):
        run_harness(model, tokenizer, ["arc_esy"], include_dirs=[HARNESS_DIR])
