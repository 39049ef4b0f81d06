"""SweepSpec: everything a run needs, validated, from CLI flags and/or a YAML file.

Flags override the file. Unknown keys and bad values fail here with one line naming what
is valid — before any data is loaded or any output written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from soul_bench.card import check_held_out, read_yaml_mapping
from soul_bench.errors import UserError

MAX_SEED = 2**32 - 1  # the random generators seeded with a run's seeds (torch, numpy) take 0 … 2**32 − 1


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = "tofu"
    methods: list[str] = Field(default_factory=lambda: ["ga", "npo"])
    optimizers: list[str] = Field(default_factory=lambda: ["adamw", "sophia"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    forget_split: str | None = None
    model: str | None = None            # HF id, local folder or model preset (soul-bench list models); None = embedded default
    model_preset: str | None = None     # set when `model` names a preset (its settings were merged in)
    retain_model: str | None = None     # the model never trained on the forget set (for forget quality)
    data: str | None = None             # synthetic | hub | hub:ID | auto | local:DIR | DIR
    preset: str | None = None           # embedded model preset (task card), e.g. tiny / micro
    out: Path = Path("runs/latest")
    device: str = "auto"
    limit: int | None = Field(default=None, ge=1)
    prompt_template: str | None = None  # a template with {question}, or "chat"; None = the card's
    answer_prefix: str | None = None    # text between prompt and answer (plain templates); None = the card's
    system_prompt: str | None = None    # chat template's system message; None = the card's (or none)
    max_length: int | None = Field(default=None, ge=8)  # tokens per example / text window; None = the card's
    eval_batch_size: int = Field(default=32, ge=1)
    # weights' dtype: auto = bfloat16 on GPUs that have it, float32 elsewhere; float32 on a GPU
    # = float32 master weights with bf16 autocast (unlearning.bf16); float16 for GPUs without bf16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tasks_dirs: list[str] = Field(default_factory=list)
    unlearning: dict[str, Any] = Field(default_factory=dict)       # steps, epochs, batch_size, schedule, …
    method_hparams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # values to try, each a list: lr / steps / any unlearning key, or METHOD.KEY / OPTIMIZER.KEY
    # (sophia.lr: that optimiser's own lr list); every combination that applies to a cell is a cell
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    optimizer_hparams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    embedded: dict[str, Any] = Field(default_factory=dict)         # overrides of the preset recipe
    evaluation: dict[str, Any] = Field(default_factory=dict)       # overrides of the card's evaluation section
    lora: dict[str, Any] | None = None  # peft LoraConfig options (r, lora_alpha, target_modules, …); None = full fine-tune
    harness_tasks: list[str] | None = None  # lm-eval tasks; None = the card's choice for the data source
    harness_limit: int | None = Field(default=None, ge=1)
    harness_include: list[str] = Field(default_factory=list)  # folders of the user's own lm-eval task YAMLs
    show_progress: bool = True
    fresh_baselines: bool = False       # evaluate target / retain again, not reusing an identical cached evaluation
    probes: list[str] = Field(default_factory=list)                 # robustness probes per cell: relearn, quant
    # the rule choosing each (method, optimiser)'s setting among those a grid tried: metric names or
    # {by: [...], require: [...]} (default: the card's select_by); report --select-by overrides it too
    select_by: list[str] | dict[str, Any] | str | None = None
    # choose the setting on these seeds only and report it on the others, which the choice never
    # saw (no winner's curse); None: the same seeds choose and report (soul_bench.report.tuning)
    select_on_seeds: list[int] | None = None
    probe_options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # e.g. {relearn: {steps: 10}}
    shard: str | None = None            # "I/N": run every N-th cell from the I-th (0 <= I < N); merge with `report`

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is None:
            return value
        index, sep, count = value.partition("/")
        if not (sep and index.strip().isdigit() and count.strip().isdigit() and 0 <= int(index) < int(count)):
            raise ValueError(f"must be I/N with 0 <= I < N (e.g. 0/4 … 3/4), got {value!r}")
        return f"{int(index)}/{int(count)}"

    @property
    def shard_parts(self) -> tuple[int, int]:
        index, count = self.shard.split("/")
        return int(index), int(count)

    @model_validator(mode="after")
    def _held_out_seeds(self) -> "SweepSpec":
        if self.select_on_seeds is not None:
            check_held_out(self.select_on_seeds, self.seeds)
        return self

    @field_validator("methods", "optimizers", "seeds", "select_on_seeds", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """A config may write a list as the flag does: ``methods: ga,npo`` or ``seeds: 0,1``."""
        if isinstance(value, str):
            return split_csv(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("seeds", "select_on_seeds")
    @classmethod
    def _seed_range(cls, value: list[int] | None) -> list[int] | None:
        bad = [seed for seed in value or () if not 0 <= seed <= MAX_SEED]
        if bad:
            raise ValueError(f"seed {bad[0]} is out of range; valid: integers from 0 to {MAX_SEED}")
        return value

    @field_validator("methods", "optimizers")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        value = [v.strip() for v in value if v.strip()]
        if not value:
            raise ValueError("needs at least one name")
        return value


def split_csv(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


LENGTH_KEYS = ("steps", "epochs")  # one run length: a layer that gives one clears the other below it


def merge_settings(lower: dict, upper: dict) -> dict:
    """``upper`` over ``lower``, mappings merged one level deep (``unlearning``, ``method_hparams``,
    …). An ``unlearning`` that gives only steps or only epochs clears the other, so a config's
    ``epochs: 5`` is not beaten by the card's ``steps: 30``."""
    merged = dict(lower)
    for key, value in upper.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def with_run_length(unlearning: dict) -> dict:
    """Give both run-length keys when a layer gives one (the other None), so that layer's choice
    wins over the task card's."""
    given = [key for key in LENGTH_KEYS if unlearning.get(key) is not None]
    if len(given) == 1:
        unlearning = {**unlearning, **{key: None for key in LENGTH_KEYS if key not in given}}
    return unlearning


def with_model_preset(values: dict, model: str | None) -> dict:
    """A config's values with the settings of the model preset ``model`` names merged beneath
    them (card < preset < config < flags); unchanged when ``model`` is not a preset."""
    from soul_bench.presets import find_preset

    preset = find_preset(model)
    if preset is None:
        return values
    unknown = sorted(set(preset.settings) - set(SweepSpec.model_fields))
    if unknown:
        raise UserError(f"model preset '{preset.name}': unknown setting '{unknown[0]}'; valid: {', '.join(SweepSpec.model_fields)}")
    settings = dict(preset.settings)
    settings["unlearning"] = with_run_length(dict(settings.get("unlearning") or {}))
    config = dict(values)
    config["unlearning"] = with_run_length(dict(config.get("unlearning") or {}))
    return {**merge_settings(settings, config), "model": model, "model_preset": preset.name}


def build_spec(config_file: Path | None, overrides: dict[str, Any]) -> SweepSpec:
    """Merge a YAML config with CLI overrides (None = not given) into a validated SweepSpec."""
    values: dict[str, Any] = {}
    if config_file is not None:
        if Path(config_file).is_dir():
            raise UserError(f"config file '{config_file}' is a folder; give a YAML file of run settings")
        if not Path(config_file).is_file():
            raise UserError(f"config file '{config_file}' does not exist")
        values = read_yaml_mapping(config_file, "config file", "a mapping of run settings")
    values = with_model_preset(values, overrides.get("model") or values.get("model"))
    unlearning = with_run_length(dict(values.get("unlearning") or {}))
    for key in ("steps", "epochs", "batch_size", "gradient_checkpointing"):
        if overrides.get(key) is not None:
            unlearning[key] = overrides.pop(key)
            if key == "steps":
                unlearning["epochs"] = None
            if key == "epochs":
                unlearning["steps"] = None
        overrides.pop(key, None)
    values["unlearning"] = unlearning
    lr = overrides.pop("lr", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        spec = SweepSpec(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a rule across settings (e.g. select_on_seeds against seeds): its own words
            raise UserError(message) from exc
        where = ".".join(str(p) for p in first["loc"])
        valid = ", ".join(SweepSpec.model_fields) if first["type"] == "extra_forbidden" else None
        raise UserError(f"bad setting '{where}': {message}" + (f"; valid settings: {valid}" if valid else "")) from exc
    if isinstance(lr, list) and len(lr) > 1:  # --lr a,b,c: a grid over every optimiser's lr
        spec.grid["lr"] = lr
    elif lr is not None:  # one value on the command line beats a config's lr grid too
        spec.unlearning["lr"] = lr[0] if isinstance(lr, list) else lr
        spec.grid.pop("lr", None)
    return spec
