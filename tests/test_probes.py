"""Robustness probes (--probes relearn,quant): the attacks, checked by hand, and their columns."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_cli
from soul_bench.engine.probes import QuantSettings, RelearnSettings, quantise_rtn, quantised, relearned

MICRO = ["--preset", "micro", "--steps", "2", "--no-progress", "--harness-tasks", ""]


def test_round_to_nearest_by_hand():
    """4 bits → qmax 7; groups of 2 input weights per row, the last one short ([w3]).
    Row 1: [0.1, -0.3] → scale 0.3/7, 0.1 → round(2.33) = 2 → 0.6/7, -0.3 → -7 → -0.3; [0.25] → 0.25.
    Row 2: [0.9, -2] → scale 2/7, 0.9 → round(3.15) = 3 → 6/7; [0.5] → 0.5."""
    weight = torch.tensor([[0.1, -0.3, 0.25], [0.9, -2.0, 0.5]])
    got = quantise_rtn(weight, bits=4, group_size=2)
    expected = torch.tensor([[0.6 / 7, -0.3, 0.25], [6 / 7, -2.0, 0.5]])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(quantise_rtn(weight, bits=8, group_size=128), weight, atol=2.0 / 127 / 2 + 1e-7)


def _tiny_llama():
    from soul_bench.models import build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(["Question: who wrote it?\nAnswer: Ada Lovelace wrote it in Lisbon."] * 8, 300)
    return build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0), tokenizer


def test_quantised_copy_leaves_the_head_and_the_original_alone():
    model, _ = _tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attacked = quantised(model, QuantSettings(bits=4, group_size=16))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy
    state = attacked.state_dict()
    assert torch.equal(state["lm_head.weight"], before["lm_head.weight"])  # tied to the embeddings: untouched
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[q_proj], before[q_proj])
    assert torch.equal(state[q_proj], quantise_rtn(before[q_proj], 4, 16))


def test_relearning_lowers_the_held_items_loss_on_a_copy():
    from soul_bench.data import PromptFormat, collate, encode_qa
    from soul_bench.lm import mean_token_nll

    model, tokenizer = _tiny_llama()
    encoded = [encode_qa(tokenizer, PromptFormat(), "who wrote it?", "Ada Lovelace wrote it in Lisbon.")] * 4
    batch = collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        before = mean_token_nll(model, batch).item()
    attacked = relearned(model, encoded, tokenizer.pad_token_id, RelearnSettings(steps=5, fraction=0.5), lr=1e-2, seed=0)
    with torch.no_grad():
        assert mean_token_nll(attacked, batch).item() < before
        assert mean_token_nll(model, batch).item() == pytest.approx(before)  # the original is untouched


def test_relearning_trains_every_weight_even_of_a_frozen_model():
    """RMU leaves all but three MLPs frozen and a merged LoRA model is frozen whole: the attack
    fine-tunes the copy's every weight all the same, and the original keeps its flags."""
    from soul_bench.data import PromptFormat, encode_qa

    model, tokenizer = _tiny_llama()
    model.requires_grad_(False)
    encoded = [encode_qa(tokenizer, PromptFormat(), "who wrote it?", "Ada Lovelace wrote it in Lisbon.")] * 4
    attacked = relearned(model, encoded, tokenizer.pad_token_id, RelearnSettings(steps=2, fraction=0.5), lr=1e-2, seed=0)
    before, after = dict(model.named_parameters()), dict(attacked.named_parameters())
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed
    assert not any(p.requires_grad for p in model.parameters())


def test_probes_reach_the_records_and_the_leaderboard(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--methods", "ga", "--optimizers", "adamw", "--probes", "relearn,quant",
                            "--out", out, *MICRO], capsys)
    assert code == 0, err
    record = json.loads(next((out / "records").glob("*ga-adamw*.json")).read_text())
    for probe in ("relearn", "quant"):
        assert 0.0 <= record["metrics"][f"{probe}/forget_quality"] <= 1.0 and record["timings"][f"probe_{probe}_s"] > 0
    assert record["spec"]["probes"]["quant"] == {"bits": 4, "group_size": 128}
    target = json.loads(next((out / "records").glob("*-target-*.json")).read_text())
    assert 0.0 <= target["metrics"]["quant/forget_quality"] <= 1.0  # how far quantisation alone moves it
    assert not any(key.startswith("relearn/") for key in target["metrics"])
    header = next(line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("|"))
    assert "(relearn)" in header and "(quant)" in header
    assert (out / "robustness.png").stat().st_size > 0 and (out / "robustness.pdf").stat().st_size > 0


@pytest.mark.parametrize("flags, message", [(["--probes", "jailbreak"], "unknown probe 'jailbreak'"),
                                            (["--config", "BAD"], "relearn.steps must be an integer >= 1")])
def test_bad_probe_input_is_one_line(tmp_path, capsys, flags, message):
    config = tmp_path / "run.yaml"
    config.write_text("probes: [relearn]\nprobe_options: {relearn: {steps: 0}}\n")
    flags = [str(config) if f == "BAD" else f for f in flags]
    code, _, err = run_cli(["run", *flags, "--out", tmp_path / "out", *MICRO], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_cell_stopped_while_its_probes_run_is_not_finished_and_reruns(tmp_path, capsys, monkeypatch):
    """The record is written after the evaluation, before the probes: stopped there, it says which
    probes are pending, and a resume redoes the cell instead of skipping it without them."""
    import soul_bench.runner

    calls = []

    def broken(model, settings):  # the target's quantisation passes, the unlearned cell's stops the run
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("stopped while probing")
        return quantised(model, settings)

    out = tmp_path / "out"
    args = ["run", "--methods", "ga", "--optimizers", "adamw", "--probes", "quant", "--out", out, *MICRO]
    monkeypatch.setattr(soul_bench.runner, "quantised", broken)
    with pytest.raises(RuntimeError, match="stopped while probing"):  # (the target evaluated here, not reused)
        run_cli([*args, "--fresh-baselines"], capsys)
    written = {r["kind"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    assert written["unlearned"]["probes_pending"] == ["quant"] and written["unlearned"]["status"] == "ok"
    assert "probes_pending" not in written["target"]
    monkeypatch.undo()
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "finished before, skipped" not in stdout
    for record in (json.loads(p.read_text()) for p in (out / "records").glob("*.json")):
        assert "probes_pending" not in record
        assert ("quant/forget_quality" in record["metrics"]) == (record["kind"] != "retain")
