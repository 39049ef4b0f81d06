"""Build and cache the embedded models of a task: tokenizer → base → target / retain.

A task card's ``embedded`` section names stages; each stage fine-tunes from scratch or from
an earlier stage on named data sets, through the same loop the unlearning uses (method =
plain fine-tuning, optimiser = AdamW with linear decay — a decaying LR is what gets the
tiny model from ~0.95 to ~0.99 recall). Each stage is cached as an HF folder keyed by a hash
of everything that produced it (recipe, data, parent), so a rerun reuses it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from soul_bench.data import encode_rows
from soul_bench.engine.loop import LoopSettings, run_loop
from soul_bench.engine.methods import FineTune
from soul_bench.errors import UserError
from soul_bench.models import build_tiny_llama, cache_root, save_model, train_tokenizer
from soul_bench.results import content_hash
from soul_bench.task import Task, TaskData


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def embedded_preset(task: Task, preset: str | None, overrides: dict | None = None) -> dict:
    """The named preset of the card's ``embedded`` section, with user overrides merged in.
    ``recipe["checks"]`` is a list of :class:`~soul_bench.card.CheckSpec` (the preset's list,
    when it has one, replaces the card's)."""
    embedded = task.card.spec.embedded
    if embedded is None:
        raise UserError(f"task '{task.name}' has no embedded default (card section 'embedded'); give --model")
    name = preset or embedded.default_preset
    if name not in embedded.presets:
        raise UserError(f"unknown preset '{name}' for task '{task.name}'; valid: {', '.join(embedded.presets)}")
    chosen = embedded.presets[name]
    overrides = dict(overrides or {})
    stage_overrides = overrides.pop("stages", None) or {}
    recipe = deep_merge(chosen.model_dump(exclude={"checks", "stages"}), overrides)
    recipe["name"] = name
    recipe["checks"] = list(embedded.checks if chosen.checks is None else chosen.checks)
    stages = {stage: spec.model_dump() for stage, spec in embedded.stages.items()}
    stages = deep_merge(stages, {k: v.model_dump() for k, v in (chosen.stages or {}).items()})
    recipe["stages"] = deep_merge(stages, check_stage_overrides(stage_overrides, stages, f"task '{task.name}' embedded overrides"))
    check_train_keys(recipe.get("train") or {}, recipe["stages"], f"task '{task.name}' embedded preset '{name}'")
    return recipe


def check_stage_overrides(overrides: dict, stages: dict[str, dict], where: str) -> dict:
    """Overrides of the embedded stages (e.g. ``{"target": {"init": "retain"}}``: the target
    fine-tuned from the retain model): each a mapping of the card's stage keys; a bad one is one line."""
    from pydantic import ValidationError

    from soul_bench.card import StageSpec

    if not isinstance(overrides, dict):
        raise UserError(f"{where}: 'stages' must map stage names to {{init, data}}, got {overrides!r}")
    for name, value in overrides.items():
        if not isinstance(value, dict):
            raise UserError(f"{where}: stages.{name} must be a mapping of init, data; got {value!r}")
        try:
            StageSpec(**{**stages.get(name, {}), **value})
        except ValidationError as error:
            first = error.errors()[0]
            raise UserError(f"{where}: stages.{name}.{'.'.join(map(str, first['loc']))}: {first['msg']} "
                            f"(valid keys: init, data)") from None
    return overrides


TRAIN_KEYS = ("epochs", "lr", "batch_size", "warmup_ratio", "seed", "group_by_length")


def check_train_keys(train: dict, stages: dict, where: str) -> None:
    """A recipe's ``train`` holds TRAIN_KEYS shared by every stage and, under a stage's name, that
    stage's own; anything else (a typo such as ``epoch``) is one line, not silently ignored."""
    if not isinstance(train, dict):
        raise UserError(f"{where}: 'train' must be a mapping of {', '.join(TRAIN_KEYS)} (or a stage name), got {train!r}")
    for key, value in train.items():
        if key in stages:
            if not isinstance(value, dict):
                raise UserError(f"{where}: train.{key} must be a mapping of {', '.join(TRAIN_KEYS)}, got {value!r}")
            unknown = sorted(set(value) - set(TRAIN_KEYS))
            if unknown:
                raise UserError(f"{where}: unknown key train.{key}.{unknown[0]}; valid: {', '.join(TRAIN_KEYS)}")
        elif key not in TRAIN_KEYS:
            raise UserError(f"{where}: unknown key train.{key}; valid: {', '.join(TRAIN_KEYS)} or a stage "
                            f"name ({', '.join(stages)})")


def stage_order(stages: dict[str, dict]) -> list[str]:
    """Card order, except that a stage comes after the stage it starts from."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order or name == "scratch":
            return
        if name in path:
            raise UserError(f"embedded stages start from each other in a circle: {' → '.join(path + (name,))}")
        if name not in stages:
            raise UserError(f"stage '{path[-1]}' starts from unknown stage '{name}'; valid: scratch, {', '.join(stages)}")
        visit(stages[name].get("init", "scratch"), path + (name,))
        order.append(name)

    for name in stages:
        visit(name, ())
    return order


def present_sets(data: TaskData, names: list[str], what: str) -> list[str]:
    """The data sets ``names`` asks for that the data has: "name?" = use the set when the data
    source has it (e.g. synthetic-only augmentations); a plain name the data lacks is a one-line
    error beginning with ``what``."""
    missing = [n for n in names if not n.endswith("?") and n not in data.sets]
    if missing:
        raise UserError(f"{what} data set '{missing[0]}', which the task data lacks; valid: {', '.join(data.sets)}")
    return [n.rstrip("?") for n in names if n.rstrip("?") in data.sets]


def _texts(data: TaskData, fields: list[str] | None, sets: list[str] | None = None) -> list[str]:
    """The tokenizer's training text: the named fields of every row (strings or lists of
    strings), or every string value when ``fields`` is None; of the named ``sets`` ("name?" =
    when the data has it), or of every set when ``sets`` is None."""
    texts = []
    chosen = data.sets.values() if sets is None else [data[n] for n in present_sets(data, sets, "embedded tokenizer_sets names")]
    for rows in chosen:
        for row in rows:
            for key in fields if fields is not None else row:
                value = row.get(key)
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts += [v for v in value if isinstance(v, str)]
    return [t for t in texts if t]


def tokenizer_texts(task: Task, data: TaskData, recipe: dict) -> list[str]:
    """What the recipe's tokenizer learns from (the card's tokenizer_fields of its tokenizer_sets)."""
    return _texts(data, task.card.spec.embedded.tokenizer_fields, recipe.get("tokenizer_sets"))


def stage_train_settings(train: dict, stage: str, stage_names) -> dict:
    """A stage's training recipe: the recipe's shared ``train`` keys, then the stage's own."""
    return {**{k: v for k, v in train.items() if k not in stage_names}, **train.get(stage, {})}


def stage_loop_settings(stage_train: dict) -> LoopSettings:
    """The loop settings a stage trains with (seed: the initial weights' and the batch order's)."""
    return LoopSettings(epochs=stage_train.get("epochs", 10), batch_size=stage_train.get("batch_size", 16),
                        schedule="linear", warmup_ratio=stage_train.get("warmup_ratio", 0.05),
                        warmup_from_zero=False, max_grad_norm=1.0, seed=int(stage_train.get("seed", 0)),
                        group_by_length=bool(stage_train.get("group_by_length", False)))


def encode_stage(task: Task, data: TaskData, names: list[str], tokenizer, fmt) -> list:
    """The (input_ids, labels) pairs of the data sets a stage trains on, in each set's shape."""
    examples_spec = task.card.spec.examples
    return [pair for name in names for pair in
            encode_rows(tokenizer, fmt, data[name], examples_spec.shape_of(name), examples_spec.max_length)]


def prepare_embedded(task: Task, data: TaskData, recipe: dict, fmt, device: torch.device, console=None,
                     show_progress: bool = True) -> dict[str, Path]:
    """Train (or find in the cache) every stage; returns stage → model folder."""
    root = cache_root() / "models" / task.name
    root.mkdir(parents=True, exist_ok=True)
    texts = tokenizer_texts(task, data, recipe)
    tokenizer = train_tokenizer(texts, recipe["vocab_size"])
    train = recipe.get("train", {})
    paths: dict[str, Path] = {}
    keys: dict[str, str] = {}
    trained_any = False
    stages = recipe["stages"]
    order = stage_order(stages)
    examples_spec = task.card.spec.examples
    for stage in order:
        spec = stages[stage]
        parent = spec.get("init", "scratch")
        names = present_sets(data, spec["data"], f"embedded stage '{stage}' trains on")
        examples = [row for name in names for row in data[name]]
        stage_train = stage_train_settings(train, stage, stages)
        shapes = {name: examples_spec.shape_of(name) for name in names}
        # the shapes enter the key only when they are not plain QA, so QA tasks keep their cache keys
        shape_key = () if set(shapes.values()) == {"qa"} and examples_spec.max_length is None else (shapes, examples_spec.max_length)
        keys[stage] = content_hash(stage, recipe["model"], recipe["vocab_size"], fmt.identity(), stage_train,
                                   keys.get(parent, parent), examples, texts, *shape_key)
        folder = root / f"{stage}-{keys[stage]}"
        paths[stage] = folder
        if (folder / "config.json").exists():
            continue
        if console and not trained_any:  # said once, and only when something is trained (not per sweep)
            console.print(f"Preparing the embedded '{recipe['name']}' models for {task.name} (cached after the first run)")
        trained_any = True
        from transformers import AutoModelForCausalLM

        # train.seed (default 0): the initial weights and the batch order — another seed is another
        # embedded target, as another machine's float kernels give (the reference samples both)
        settings = stage_loop_settings(stage_train)
        if parent == "scratch":
            model = build_tiny_llama(tokenizer, **recipe["model"], seed=settings.seed)
        else:
            model = AutoModelForCausalLM.from_pretrained(paths[parent])
        model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=stage_train.get("lr", 1e-3), weight_decay=0.0)
        encoded = encode_stage(task, data, names, tokenizer, fmt)
        tick = time.perf_counter()
        result = run_loop(model, FineTune(), optimizer, encoded, settings, tokenizer.pad_token_id,
                          description=f"prepare {task.name} {stage}", show_progress=show_progress)
        if result.failure:
            raise RuntimeError(f"training the embedded {stage} model failed: {result.failure}")
        save_model(model.cpu(), tokenizer, folder, {"stage": stage, "recipe": recipe, "parent": parent,
                                                   "examples": len(examples), "steps": result.steps_done,
                                                   "final_loss": result.log[-1]["loss"], "seconds": time.perf_counter() - tick})
        if console:
            console.print(f"  trained {stage} model on {len(examples)} examples in {time.perf_counter() - tick:.0f} s "
                          f"(final loss {result.log[-1]['loss']:.3f}) → {folder}")
    return paths
