"""The toxicity task: RealToxicityPrompts' measures by hand, the scorer ranks toxic above clean
text, seeded sampling, local files in the upstream schemas, and a micro end-to-end run."""

import json
import sys
from pathlib import Path

import pytest

from soul_bench.errors import UserError
from soul_bench.registry import load_task
from soul_bench.task import DataSource, load_sibling

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from cli_helpers import records_by_cell, run_cli  # noqa: E402

TASK = load_task("toxicity")
TASK_FILE = str(Path(__file__).resolve().parents[1] / "task.py")
METRICS = load_sibling(TASK_FILE, "metrics")
SCORERS = load_sibling(TASK_FILE, "scorers")


def test_toxicity_summary_by_hand():
    scores = [[0.1, 0.7, 0.2],   # max 0.7: toxic
              [0.3, 0.4, 0.5],   # max 0.5: not above the threshold
              [0.0, 0.0, 0.9]]   # max 0.9: toxic
    out = METRICS.toxicity_summary(scores)
    assert out["expected_max"] == pytest.approx((0.7 + 0.5 + 0.9) / 3)
    assert out["probability"] == pytest.approx(2 / 3)
    assert out["mean"] == pytest.approx(3.1 / 9)
    with pytest.raises(ValueError, match="matrix"):
        METRICS.toxicity_summary([0.1, 0.2])


def test_the_offline_scorer_ranks_toxic_text_above_clean_text():
    pytest.importorskip("profanity_check")
    score = SCORERS.load_scorer("profanity-check")
    toxic = ["Shut up, you pathetic loser.", "You are a stupid idiot and your idea is crap.", "You suck, moron."]
    clean = ["Thank you, that was a lovely dinner.", "Preheat the oven and slice the onions.", "The train leaves at noon."]
    scores = score(toxic + clean)
    assert scores.shape == (6,) and ((0 <= scores) & (scores <= 1)).all()
    assert scores[:3].min() > 0.5 > scores[3:].max()
    assert score([]).shape == (0,)


def test_a_classifier_model_folder_is_a_scorer(tmp_path):
    """Any text-classification model (as unitary/toxic-bert) scores through transformers: the
    sigmoid probability of the toxic label; a missing label is one clear error."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "idiot", "hello"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2, id2label={0: "toxic", 1: "insult"},
                        label2id={"toxic": 0, "insult": 1}, problem_type="multi_label_classification")
    BertForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    scores = SCORERS.load_scorer(str(tmp_path / "clf"))(["you idiot", "hello"])
    assert scores.shape == (2,) and ((0 < scores) & (scores < 1)).all()
    with pytest.raises(UserError, match="has no label 'toxicity'; its labels: insult, toxic"):
        SCORERS.load_scorer(str(tmp_path / "clf"), toxic_label="toxicity")


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    import torch

    from soul_bench.data import PromptFormat
    from soul_bench.evaluate.likelihood import sample_continuations
    from soul_bench.models import build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(["User: hello there\nAssistant: hi, you fool"] * 10, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2)
    fmt = PromptFormat("User: {question}\nAssistant:", " ")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sample_continuations(model, tokenizer, fmt, ["hello", "hello there"], k=4, max_new_tokens=6, seed=7)
    assert torch.rand(1) == before  # the caller's RNG stream did not move
    b = sample_continuations(model, tokenizer, fmt, ["hello", "hello there"], k=4, max_new_tokens=6, seed=7)
    c = sample_continuations(model, tokenizer, fmt, ["hello", "hello there"], k=4, max_new_tokens=6, seed=8)
    assert a == b and a != c and [len(x) for x in a] == [4, 4]
    assert len(set(a[0])) > 1  # samples, not one greedy answer repeated


def test_local_files_in_the_upstream_schemas(tmp_path):
    """forget.jsonl as PKU-SafeRLHF rows (unsafe responses → forget, safe → retain) and
    eval_prompts.jsonl as RealToxicityPrompts rows (prompt.text)."""
    pku = [{"prompt": f"q{i}", "response_0": f"bad {i}", "response_1": f"good {i}",
            "is_response_0_safe": False, "is_response_1_safe": True} for i in range(3)]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pku))
    (tmp_path / "eval_prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": {"text": f"So I told him {i}", "toxicity": 0.1}}) + "\n" for i in range(4)))
    data = TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    assert data["forget"][0] == {"question": "q0", "answer": "bad 0"}
    assert data["retain"][2] == {"question": "q2", "answer": "good 2"}
    assert data["eval_prompts"][3] == {"prompt": "So I told him 3"} and "clean_eval" not in data.sets
    (tmp_path / "eval_prompts.jsonl").write_text(json.dumps({"prompt": 3}) + "\n")
    with pytest.raises(UserError, match="row 0 has no 'prompt' string"):
        TASK.load_data(DataSource("local", path=tmp_path), None, None, {})
    (tmp_path / "eval_prompts.jsonl").unlink()
    with pytest.raises(UserError, match="lacks eval_prompts.jsonl"):
        TASK.load_data(DataSource("local", path=tmp_path), None, None, {})


def test_micro_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("profanity_check")
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--task", "toxicity", "--preset", "micro", "--methods", "po,npo", "--optimizers", "adamw",
                            "--steps", "3", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    records = records_by_cell(out)
    assert set(records) == {("target", None), ("retain", None), ("unlearned", "po"), ("unlearned", "npo")}
    target = records[("target", None)]["metrics"]
    for key in ("toxicity/expected_max", "toxicity/probability", "toxicity/mean", "forget/toxicity", "clean/ppl"):
        assert target[key] is not None, key
    assert 0 <= target["toxicity/probability"] <= 1 and target["toxicity/mean"] <= target["toxicity/expected_max"]
    assert "Exp. max toxicity" in (out / "leaderboard.md").read_text()


@pytest.mark.parametrize("name, epochs, lr, gamma", [("opt-1.3b", 5, 2e-5, 0.1), ("llama2-7b", 10, 1e-5, 1.0)])
def test_soul_configs_are_valid_run_configurations(name, epochs, lr, gamma):
    """SOUL's toxicity settings: the card's per-method PO step of the tiny model does not leak in."""
    from soul_bench.runner import Runner, cell_settings
    from soul_bench.spec import build_spec

    spec = build_spec(Path(__file__).parents[1] / "configs" / f"{name}.yaml", {})
    runner = Runner(spec)  # validates names and every cell's hyper-parameters; loads no model
    for optimizer in ("adamw", "soul"):
        loop, method_hp, optimizer_hp = cell_settings(runner.task, spec, "po", optimizer, 0)
        assert optimizer_hp["lr"] == lr and loop.epochs == epochs and loop.grad_accum == 4 and loop.batch_size == 1
        assert method_hp["retain_weight"] == gamma
    import torch

    from soul_bench.engine.optimizers import build_optimizer

    built = build_optimizer("soul", [torch.nn.Parameter(torch.zeros(1))], **cell_settings(runner.task, spec, "po", "soul", 0)[2])
    assert built.defaults["rho"] == 0.04 and tuple(built.defaults["betas"]) == (0.9, 0.95)  # SOUL's Sophia
