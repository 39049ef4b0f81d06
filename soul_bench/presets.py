"""Model presets: ``--model NAME`` for the models people unlearn, with the prompt format, dtype,
batch sizes and learning rate each was trained or unlearned with (``soul_bench/model_presets/``,
one YAML file per model; ``soul-bench list models``).

A preset's ``settings`` are run settings, as in a ``--config`` file, and sit between the task card
and the user: card < preset < config file < flags. ``retain_models`` names the published retain
model of a task's forget split (open-unlearning's TOFU models), used unless ``--retain-model`` is
given. A preset names a hub model (``model``) or a gguf file shipped in a Python package
(``gguf``), which is converted once into an ordinary Hugging Face folder in soul-bench's cache.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from soul_bench.errors import UserError

PRESET_DIR = Path(__file__).with_name("model_presets")


class GgufSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str   # importable name of the package that ships the file
    file: str      # the gguf file inside the package folder
    install: str   # the command that installs the package (shown when it is missing)


class ModelPreset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str
    model: str | None = None
    gguf: GgufSource | None = None
    retain_models: dict[str, dict[str, str]] = Field(default_factory=dict)  # task → forget split → model
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> "ModelPreset":
        if (self.model is None) == (self.gguf is None):
            raise ValueError("a preset names either 'model' (hub id or folder) or 'gguf' (a file in a package)")
        return self

    def retain_model(self, task: str, forget_split: str | None) -> str | None:
        return self.retain_models.get(task, {}).get(forget_split or "")


def model_presets() -> dict[str, ModelPreset]:
    """Every shipped preset by name (the file's stem); a malformed file is one clear line."""
    from soul_bench.card import read_yaml_mapping

    presets = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        try:
            presets[path.stem] = ModelPreset(name=path.stem, **read_yaml_mapping(path, "model preset", "a mapping"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "preset"
            raise UserError(f"model preset {path}: '{where}': {first['msg']}") from exc
    return presets


def find_preset(model: str | None) -> ModelPreset | None:
    """The preset ``--model`` names, if it names one (a local folder of that name wins)."""
    if model is None or Path(model).exists():
        return None
    return model_presets().get(model)


def resolve_model(preset: ModelPreset, cache: Path, console=None) -> str:
    """What ``AutoModelForCausalLM.from_pretrained`` loads for the preset: its hub id, or the
    folder its gguf file was converted into (converted on first use)."""
    if preset.gguf is None:
        return str(preset.model)
    source = preset.gguf
    spec = importlib.util.find_spec(source.package)  # located, not imported: it may need other packages
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model preset '{preset.name}' needs the Python package '{source.package}': {source.install}")
    gguf_path = Path(list(spec.submodule_search_locations)[0]) / source.file
    if not gguf_path.is_file():
        raise UserError(f"model preset '{preset.name}': {gguf_path} is missing; reinstall: {source.install}")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model preset '{preset.name}' reads a gguf file and needs the package 'gguf': {source.install}")
    from soul_bench.results import content_hash

    folder = cache / "models" / f"{preset.name}-{content_hash(source.file, gguf_path.stat().st_size)}"
    if not (folder / "config.json").is_file():
        if console is not None:
            console.print(f"Converting {source.file} into a Hugging Face folder (once): {folder}", soft_wrap=True,
                          highlight=False)
        convert_gguf(gguf_path, folder)
    return str(folder)


def convert_gguf(gguf_path: Path, folder: Path) -> None:
    """A gguf checkpoint → an ordinary float32 HF folder. transformers dequantises gguf weights on
    load but will not ``save_pretrained`` a model loaded from a quantised file, so the same
    architecture is rebuilt from its config and given the dequantised weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soul_bench.models import save_model

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, tokenizer, folder, {"converted_from": str(gguf_path)})
