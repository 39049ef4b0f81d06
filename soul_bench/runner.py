"""Run a sweep: task data + target/retain models → every (method × optimiser × seed) cell
→ one record each → the report from the records.

    spec → task → data → models (embedded: prepare) → baselines (retain, target) evaluated
         → for each unfinished cell: load target, unlearn, evaluate, write record
         → report.build: leaderboards, FO-vs-SO table, figures — from the records only
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import itertools
import time
from pathlib import Path

import torch
from rich.console import Console

from soul_bench import registry
from soul_bench.data import IGNORE_INDEX, encode_rows
from soul_bench.engine.loop import LoopSettings, reference_nll_table, run_loop, run_one_shot, uses_autocast
from soul_bench.engine.lora import AdaptersDisabled, apply_lora, check_lora_fits, lora_config
from soul_bench.engine.refusals import with_refusals
from soul_bench.engine.optimizers import build_optimizer, optimizer_defaults, weight_decay_groups
from soul_bench.engine.parallel import Processes
from soul_bench.engine.probes import PROBES, probe_settings, quantised, relearned
from soul_bench.errors import UserError
from soul_bench.evaluate.sharing import shared_among
from soul_bench.models import cache_root, load_model, quiet_transformers, resolve_device, weights_fingerprint
from soul_bench.prepare import embedded_preset, prepare_embedded, stage_train_settings
from soul_bench.presets import model_presets, resolve_model
from soul_bench.report.build import build_report
from soul_bench.report.leaderboard import leaderboard_rows, summary_table
from soul_bench.results import (EvaluationCache, content_hash, environment, files_fingerprint, finished_record,
                                lock_run_folder, record_path, recorded_tasks, write_json_atomic)
from soul_bench.spec import LENGTH_KEYS, SweepSpec
from soul_bench.task import DataSource, Task

LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopSettings)} - {"seed"}
PER_METHOD = "per_method"  # optimizers.<name>.per_method.<method>: that method's own values (card or config)


def cell_settings(task: Task, spec: SweepSpec, method: str, optimizer: str, seed: int, point: dict | None = None,
                  model_methods: dict | None = None):
    """Loop settings and hyper-parameters of one cell: card defaults ← the embedded model's
    ``model_methods`` (its preset's ``methods``) ← config ← flags ← the cell's grid ``point``
    (``{"lr": 3e-4, "npo.beta": 0.1}``, see :func:`grid_points`). An optimiser's ``per_method``
    entry overrides its values for one method (a tuned lr per cell)."""
    point = point or {}
    unlearning = {**task.card.section("unlearning"), **spec.unlearning}
    for key, value in point.items():
        if "." not in key:  # an unlearning setting; a grid over steps (epochs) clears epochs (steps)
            unlearning.update({other: None for other in LENGTH_KEYS if key in LENGTH_KEYS and other != key})
            unlearning[key] = value
    lr = unlearning.pop("lr", None)
    unknown = set(unlearning) - LOOP_FIELDS
    if unknown:
        raise UserError(f"unknown unlearning setting '{sorted(unknown)[0]}'; valid: lr, {', '.join(sorted(LOOP_FIELDS))}")
    try:
        loop = LoopSettings(**unlearning, seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    method_hp = {**task.card.section("methods").get(method, {}), **(model_methods or {}).get(method, {}),
                 **spec.method_hparams.get(method, {}), **point_values(point, method)}
    optimizer_hp = {}
    for source in (task.card.section("optimizers").get(optimizer, {}), spec.optimizer_hparams.get(optimizer, {})):
        optimizer_hp.update({k: v for k, v in source.items() if k != PER_METHOD})
        # e.g. RMU's representation loss needs a larger step than the likelihood losses
        optimizer_hp.update((source.get(PER_METHOD) or {}).get(method, {}))
    if lr is not None and "lr" in optimizer_defaults(optimizer):  # one-shot updaters (IU) have no LR
        optimizer_hp["lr"] = lr
    optimizer_hp.update(point_values(point, optimizer))  # e.g. sophia.lr: that optimiser's own lr list
    return loop, method_hp, optimizer_hp


def point_values(point: dict, owner: str) -> dict:
    """``{"beta": 0.1}`` from ``{"npo.beta": 0.1, "lr": …}`` for owner ``npo``."""
    return {key.split(".", 1)[1]: value for key, value in point.items() if key.split(".", 1)[0] == owner and "." in key}


def grid_points(grid: dict[str, list], method: str, optimizer: str) -> list[dict]:
    """Every combination of the grid values that apply to a (method, optimiser) cell: the
    unlearning keys (``lr`` only for an optimiser with one, and not when the grid gives the
    optimiser's own ``<optimizer>.lr``), ``<method>.*`` and ``<optimizer>.*``. ``[{}]`` without a grid."""
    has_lr = "lr" in optimizer_defaults(optimizer)
    keys = [key for key in grid if ("." not in key and (key != "lr" or (has_lr and f"{optimizer}.lr" not in grid)))
            or key.split(".", 1)[0] in (method, optimizer)]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def point_of_setting(grid: dict[str, list], method: str, optimizer: str, setting: dict) -> dict:
    """The grid point of a (method, optimiser) cell whose values ``setting`` holds (a record's
    hyper-parameters, flat: ``{"optimizer.lr": 3e-4, "method.beta": 0.1, "loop.steps": 30}``, see
    :func:`soul_bench.report.tuning.setting_of`): how a chosen setting is run again on more seeds."""
    def flat_key(key: str) -> str:
        owner, dot, name = key.partition(".")
        if not dot:
            return "optimizer.lr" if key == "lr" else f"loop.{key}"
        return f"{'method' if owner == method else 'optimizer'}.{name}"
    for point in grid_points(grid, method, optimizer):
        if all(setting.get(flat_key(key)) == value for key, value in point.items()):
            return point
    raise ValueError(f"no point of the grid {grid} for {method} × {optimizer} gives the setting {setting}")


def point_label(point: dict) -> str:
    """'lr=0.0003, npo.beta=0.1'."""
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in point.items())


def check_grid(grid: dict[str, list], methods: dict, optimizers: dict) -> None:
    """Every grid key names an unlearning setting or a method's / optimiser's hyper-parameter, and
    lists distinct values — before any work."""
    for key, values in grid.items():
        owner, dot, name = key.partition(".")
        if dot and (owner not in methods and owner not in optimizers or not name):
            raise UserError(f"grid '{key}': '{owner}' is neither a method nor an optimiser; give lr, an unlearning "
                            f"setting ({', '.join(sorted(LOOP_FIELDS))}) or NAME.KEY, e.g. npo.beta")
        if not dot and key != "lr" and key not in LOOP_FIELDS:
            raise UserError(f"grid '{key}': unknown setting; valid: lr, {', '.join(sorted(LOOP_FIELDS))} or NAME.KEY "
                            "(a method's or optimiser's hyper-parameter, e.g. npo.beta)")
        if not isinstance(values, list) or not values:
            raise UserError(f"grid '{key}' must list at least one value, e.g. [1.0e-4, 3.0e-4], got {values!r}")
        texts = [repr(value) for value in values]
        if len(set(texts)) < len(texts):
            raise UserError(f"grid '{key}' lists a value twice: {values}")


# loop settings added after records were first written, with the value that reproduces the
# older behaviour: left out of a record's identity at that value, so earlier records keep their
# cell ids (and a resumed sweep or a merged report sees them as the same cells and settings)
LATER_LOOP_DEFAULTS = {"group_by_length": False}


def loop_identity(loop: LoopSettings) -> dict:
    """A cell's loop settings as its record names them (see LATER_LOOP_DEFAULTS)."""
    values = dataclasses.asdict(loop)
    for key, default in LATER_LOOP_DEFAULTS.items():
        if values.get(key) == default:
            del values[key]
    return values


def looks_like_a_path(name: str) -> bool:
    """A model name that cannot be a hub id (``org/name``): it starts like a path or has more
    than one part."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def check_model_path(flag: str, path: str | None) -> None:
    """A local path given as a model must be a folder written by ``save_pretrained``; a name that
    is a path but does not exist fails now, not later with the hub's "Repo id must be in the
    form …" (a hub id, which does not exist locally, is left to the loader)."""
    if path is None:
        return
    if not Path(path).exists():
        if looks_like_a_path(path):
            raise UserError(f"{flag} '{path}': no such folder; give a model preset (soul-bench list models), a "
                            "Hugging Face id (org/name) or a folder written by save_pretrained")
        return
    if not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
        raise UserError(f"{flag} '{path}' is not a model folder (no config.json); give a Hugging Face model id "
                        "or a folder written by save_pretrained")


class Runner:
    def __init__(self, spec: SweepSpec, console: Console | None = None, write_report: bool = True):
        self.spec = spec
        self.write_report = write_report  # False: the caller builds one report over several sweeps
        quiet_transformers()
        # launched as several processes (accelerate launch / torchrun): the main one leads and
        # writes, the others train along (soul_bench.engine.parallel) and print nothing
        self.processes = Processes.from_environment(cpu=spec.device == "cpu")
        self.console = console or Console()
        if not self.processes.is_main:
            self.console = Console(quiet=True)
        self.task = registry.load_task(spec.task, spec.tasks_dirs)
        if spec.max_length is not None:  # every reader of the card (stages, unlearning, evaluation) sees it
            card = self.task.card.spec
            card.examples = card.examples.model_copy(update={"max_length": spec.max_length})
        if spec.evaluation:
            self.task.override_section("evaluation", spec.evaluation, "run setting 'evaluation'")
        self.methods = registry.methods()  # built-ins + entry-point plugins, looked up once
        registry.check_names("method", spec.methods, self.methods)
        registry.check_names("optimizer", spec.optimizers, registry.optimizers())
        for where, sections in (("task card", self.task.card.section("optimizers")), ("config", spec.optimizer_hparams)):
            for name, values in sections.items():
                unknown = sorted(set((values or {}).get(PER_METHOD) or {}) - set(self.methods))
                if unknown:
                    raise UserError(f"{where}: optimizers.{name}.{PER_METHOD} names unknown method '{unknown[0]}'; "
                                    f"valid: {', '.join(sorted(self.methods))}")
        check_grid(spec.grid, self.methods, registry.optimizers())
        # the embedded recipe (no --model), resolved once: its data generator and stages, and the
        # embedded model's own method settings (a model preset's are already in spec)
        self.recipe = embedded_preset(self.task, spec.preset, spec.embedded) if spec.model is None else None
        self.model_methods: dict = (self.recipe or {}).get("methods") or {}
        unknown = sorted(set(self.model_methods) - set(self.methods))
        if unknown:
            raise UserError(f"task '{self.task.name}' embedded preset: methods names unknown method '{unknown[0]}'; "
                            f"valid: {', '.join(sorted(self.methods))}")
        for key in spec.grid:  # e.g. a config's npo.beta list in a sweep without npo: say so, do not fail
            if not any(key in point for m in spec.methods for o in spec.optimizers for point in grid_points(spec.grid, m, o)):
                self.console.print(f"[yellow]note:[/] grid '{key}' applies to no cell of this sweep", highlight=False)
        self.one_shot: dict[str, bool] = {}  # optimiser → is a one-shot updater (IU), learnt while validating
        self.hessian_vector_products: set[str] = set()  # optimisers that need a double backward (Hutchinson)
        for method in spec.methods:  # fail on bad hyper-parameters before any work, for every grid point
            for optimizer in spec.optimizers:
                for point in grid_points(spec.grid, method, optimizer):
                    _, method_hp, optimizer_hp = cell_settings(self.task, spec, method, optimizer, spec.seeds[0], point, self.model_methods)
                    registry.build_method(method, method_hp)
                    if optimizer_hp.get("lr") == 0:  # torch takes it; the cell would be the target again
                        raise UserError(f"optimizer '{optimizer}': lr 0 changes no weight; give a positive learning rate")
                    try:
                        built = build_optimizer(optimizer, [torch.nn.Parameter(torch.zeros(1))], **optimizer_hp)
                    except ValueError as exc:  # torch's own words (e.g. 'Invalid learning rate: -0.0001'): say whose
                        message = str(exc)
                        raise UserError(message if message.startswith(optimizer) else f"optimizer '{optimizer}': {message}") from exc
                    self.one_shot[optimizer] = getattr(built, "one_shot", False)
                    if getattr(built, "estimator", None) == "hutchinson":
                        self.hessian_vector_products.add(optimizer)
        if not any(not self.one_shot[o] or getattr(self.methods[m], "influence_compatible", False)
                   for m in spec.methods for o in spec.optimizers):  # every cell would be recorded as skipped
            raise UserError(f"no cell of this sweep can run: {', '.join(sorted(o for o in spec.optimizers if self.one_shot[o]))} "
                            "is a one-shot influence update of the forget cross-entropy, which only ga and graddiff "
                            "have; add one of them or another optimizer")
        self.check_methods_fit_shape()
        self.probe_settings = self.check_probes()
        self.select_by = self.task.card.selection_rule(spec.select_by)  # checked now, used by the report
        self.device = resolve_device(spec.device)
        if self.processes.parallel and spec.device == "auto":
            self.device = self.processes.device  # this process's own GPU (cuda:LOCAL_RANK), or the CPU
        if spec.lora:
            lora_config(spec.lora)  # a bad setting is one line now, not after the baselines are written
        if self.processes.fsdp:
            if spec.lora:
                raise UserError("LoRA adapters are not trained under FSDP yet; launch with DDP (accelerate launch "
                                "--multi_gpu): adapters are small, every GPU holds the frozen base")
            hutchinson = sorted(self.hessian_vector_products)
            if hutchinson:
                raise UserError(f"optimizer '{hutchinson[0]}' needs Hessian-vector products (double backward), which "
                                "FSDP cannot give; under FSDP use sophia (Gauss-Newton-Bartlett), soul, adamw or sgd")
            if self.processes.sharding.activation_checkpointing and spec.unlearning.get("gradient_checkpointing") is None:
                # accelerate's --fsdp_activation_checkpointing is the loop's own activation checkpointing
                spec.unlearning["gradient_checkpointing"] = True
        self.fmt = self.task.prompt_format(spec.prompt_template, spec.answer_prefix, spec.system_prompt)
        self.preset = model_presets()[spec.model_preset] if spec.model_preset else None
        for flag, path in (("--model", None if self.preset else spec.model), ("--retain-model", spec.retain_model)):
            check_model_path(flag, path)
        self.out = Path(spec.out)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out '{self.out}' is an existing file; give a folder (new, or one of an earlier run to resume)")
        blocking = next((p for p in self.out.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise UserError(f"--out '{self.out}': '{blocking}' is a file, not a folder; give a folder path")
        others = sorted(recorded_tasks(self.out) - {self.task.name})  # (none in a folder not there yet)
        if others:
            raise UserError(f"--out '{self.out}' holds records of task '{others[0]}'; a run folder holds one task's "
                            f"runs (its report reads them together): give a new folder for task '{self.task.name}'")
        self.cell_ids: list[str] = []  # the records this sweep owns (an out dir may hold older ones)
        self.prompt_example: dict | None = None  # set from the first tokenizer loaded (render_example)
        self.shown_notes: set[str] = set()

    # ------------------------------------------------------------ setup
    def load_data_and_models(self):
        spec = self.spec
        recipe = self.recipe
        source = DataSource.parse(spec.data, have_model=spec.model is not None)
        self.data = self.task.load_data(source, spec.forget_split, spec.limit, (recipe or {}).get("generator", {}))
        for note in self.data.notes:
            self.console.print(f"[yellow]note:[/] {note}")
        self.check_harness_tasks()  # an unknown lm-eval name fails now, not after the baselines
        baselines = self.task.card.spec.baselines
        if recipe is not None:
            paths = prepare_embedded(self.task, self.data, recipe, self.fmt, self.device, self.console, spec.show_progress)
            self.baseline_paths = {kind: str(paths[b.stage]) for kind, b in baselines.items() if b.stage in paths}
        else:
            given = {"model": spec.model, "retain_model": spec.retain_model}
            if self.preset is not None:  # the preset's model (converted once if need be) and published retain model
                given["model"] = resolve_model(self.preset, cache_root(), self.console)
                given["retain_model"] = spec.retain_model or self.preset.retain_model(self.task.name, self.data.forget_split)
            self.baseline_paths = {kind: given[b.flag] for kind, b in baselines.items() if b.flag and given[b.flag]}
        if "target" not in self.baseline_paths:
            raise UserError(f"task '{self.task.name}': no target model (baseline 'target' has no embedded stage or flag)")
        self.target_path, self.retain_path = self.baseline_paths["target"], self.baseline_paths.get("retain")
        if self.spec.lora:
            check_lora_fits(self.target_path, self.spec.lora)
        # which weights, not only which path: records of other weights are other cells
        if self.processes.is_main:
            self.weights = {kind: weights_fingerprint(path) for kind, path in self.baseline_paths.items()}
        self.check_data_fits_methods()

    def check_methods_fit_shape(self) -> None:
        """Refuse, in one line, a method that cannot work on the task's example shape (e.g. IDK
        needs questions to refuse; a raw-text task has none) — from the card alone, before any work."""
        shape = self.task.card.spec.examples.shape_of("forget")
        fitting = sorted(name for name, cls in self.methods.items() if shape in cls.shapes)
        for name in self.spec.methods:
            method = self.methods[name]
            if shape not in method.shapes:
                raise UserError(f"method '{name}' needs {' or '.join(method.shapes)} examples; task '{self.task.name}' "
                                f"unlearns {shape} examples (methods that fit: {', '.join(fitting)})")

    def check_probes(self) -> dict:
        """Known probe names and valid probe settings, before any work."""
        registry.check_names("probe", self.spec.probes, PROBES)
        unknown = sorted(set(self.spec.probe_options) - set(PROBES))
        if unknown:
            raise UserError(f"probe_options names unknown probe '{unknown[0]}'; valid: {', '.join(PROBES)}")
        try:
            return {name: probe_settings(name, self.spec.probe_options.get(name)) for name in self.spec.probes}
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc)) from exc

    def check_data_fits_methods(self) -> None:
        """Refuse, in one line, a method whose data this task's data cannot give (before any unlearning)."""
        one_shot = any(self.one_shot.values())
        for name in self.spec.methods:
            method = self.methods[name]
            if (method.needs_retain or one_shot) and not self.data.sets.get("retain"):
                raise UserError(f"method '{name}' needs a retain set and task '{self.task.name}' has none in {self.data.source}")

    def encode(self, tokenizer, set_name: str):
        """A data set as (input_ids, labels) pairs, in the shape the card gives it."""
        examples = self.task.card.spec.examples
        return encode_rows(tokenizer, self.fmt, self.data[set_name], examples.shape_of(set_name), examples.max_length)

    def encode_refusals(self, tokenizer, seed: int):
        """The forget set with refusals in place of its answers (QA) or continuations (completions)."""
        examples = self.task.card.spec.examples
        shape = examples.shape_of("forget")
        field, lead = ("answer", "") if shape == "qa" else ("continuation", " ")
        rows = with_refusals(self.data["forget"], seed, field, lead)
        return encode_rows(tokenizer, self.fmt, rows, shape, examples.max_length)

    def load(self, path: str):
        dtype = None if self.spec.dtype == "auto" else getattr(torch, self.spec.dtype)
        model, tokenizer = load_model(path, self.device, dtype)
        model.eval()
        if self.prompt_example is None:
            self.prompt_example = self.render_example(tokenizer)
        return model, tokenizer

    def render_example(self, tokenizer) -> dict | None:
        """The first forget example as the model sees it — the rendered prompt (a chat template's
        system prompt and date included) and the labelled text after it — kept in every record,
        so what was asked is never a guess."""
        rows = self.data["forget"]
        if not rows:
            return None
        examples = self.task.card.spec.examples
        ids, labels = encode_rows(tokenizer, self.fmt, rows[:1], examples.shape_of("forget"), examples.max_length)[0]
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        example = {"prompt": tokenizer.decode(ids[:start]), "labelled": tokenizer.decode(ids[start:])}
        if self.fmt.is_chat:
            self.console.print(f"chat prompt of the first forget item: {example['prompt']!r}", soft_wrap=True,
                               highlight=False)
        return example

    # ------------------------------------------------------------ records
    def base_record(self, kind: str, method=None, optimizer=None, seed=None, extra=None) -> dict:
        identity = {"task": self.task.name, "forget_split": self.data.forget_split, "data": self.data.source,
                    "limit": self.spec.limit, "model": self.target_path, "retain_model": self.retain_path,
                    "prompt": self.fmt.identity(), "evaluation": self.task.card.section("evaluation"),
                    "harness": {"tasks": self.harness_tasks(), "limit": self.spec.harness_limit,
                                **({"include": self.spec.harness_include} if self.spec.harness_include else {})},
                    "kind": kind, "method": method, "optimizer": optimizer, "seed": seed, **(extra or {})}
        if self.spec.max_length is not None:  # only when set, so the records of earlier runs keep their ids
            identity["max_length"] = self.spec.max_length
        if self.spec.dtype != "auto":
            identity["dtype"] = self.spec.dtype
        if self.spec.model_preset:
            identity["model_preset"] = self.spec.model_preset
        identity["weights"] = self.weights
        probes = self.probes_of(kind)
        if probes:  # only then: records of runs without probes keep their ids
            identity["probes"] = {name: dataclasses.asdict(self.probe_settings[name]) for name in probes}
        parts = [self.task.name, self.data.forget_split, kind] + [str(p) for p in (method, optimizer) if p]
        if seed is not None:
            parts.append(f"s{seed}")
        cell_id = "-".join(parts + [content_hash(identity)[:8]])
        record = {"schema": 1, "cell_id": cell_id, "kind": kind, "task": self.task.name, "method": method,
                  "optimizer": optimizer, "seed": seed, "spec": identity}
        if self.recipe is not None:
            # which embedded recipe made the models, outside the identity (the weights' fingerprints
            # identify them already): a report pooling several targets orders them by prepare seed
            record["embedded"] = {"preset": self.recipe["name"], "prepare_seed": self.prepare_seed()}
        return record

    def prepare_seed(self) -> int:
        """The seed the embedded target was trained with: its stage's own ``train.<stage>.seed``
        when the recipe sets one, else the recipe's shared ``train.seed`` (default 0)."""
        train, stages = self.recipe.get("train", {}), self.recipe["stages"]
        target = self.task.card.spec.baselines["target"].stage if "target" in self.task.card.spec.baselines else None
        settings = stage_train_settings(train, target, stages) if target in stages else train
        return int(settings.get("seed", 0))

    def harness_tasks(self) -> list[str]:
        if self.spec.harness_tasks is not None:
            return self.spec.harness_tasks
        by_source = self.task.card.section("harness").get("tasks_by_source", {})
        return list(by_source.get(self.data.source_kind, []))

    def harness_include_dirs(self) -> list[Path]:
        """The card's own lm-eval task folders, then the user's (--harness-include)."""
        card = [self.task.card.folder / folder for folder in self.task.card.section("harness").get("include", [])]
        return card + [Path(folder) for folder in self.spec.harness_include]

    def harness_offline(self) -> bool:
        """The card's harness tasks for offline data are local task files: run them with the hub
        switched off. Tasks the user named (or hub data) may need the hub: the environment
        (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) decides."""
        return self.spec.harness_tasks is None and self.data.source_kind != "hub"

    def check_harness_tasks(self) -> None:
        tasks = self.harness_tasks()
        if tasks:
            from soul_bench.evaluate.harness import check_task_names

            check_task_names(tasks, self.harness_include_dirs())

    def run_harness(self, model, tokenizer) -> tuple[dict, dict]:
        """lm-eval utility tasks on the in-memory model → ``harness/<task>/<metric>``."""
        tasks = self.harness_tasks()
        if not tasks:
            return {}, {}
        from soul_bench.evaluate.harness import run_harness

        options = self.task.card.section("harness")
        return run_harness(model, tokenizer, tasks, include_dirs=self.harness_include_dirs(), batch_size=options.get("batch_size", 16),
                           limit=self.spec.harness_limit or options.get("limit"), offline=self.harness_offline())

    @property
    def evaluation_shared(self) -> bool:
        """Whether the processes evaluate each model together: several processes, each ending a cell
        with the whole model (DDP's replica, or FSDP's weights gathered and broadcast)."""
        return self.processes.parallel

    def sharing(self, together: bool):
        """``together``: within the block every process runs the same evaluation calls on its copy
        of the model, each its share of the batches (``soul_bench.evaluate.sharing``)."""
        return shared_among(self.processes.rank, self.processes.world_size) if together else contextlib.nullcontext()

    def evaluate_along(self, model, tokenizer, reference, probes: list[str]) -> None:
        """A follower's part of :meth:`evaluate_into` and :meth:`run_probes` (together): the same
        task evaluation, harness and probe calls, in the same order; the main process keeps the results."""
        with self.sharing(True):
            self.task.evaluate(model, tokenizer, self.fmt, self.data, reference, self.spec.eval_batch_size)
            self.run_harness(model, tokenizer)
        for _ in self.probe_metrics(model, tokenizer, None, None, 0, reference, probes, together=True):
            pass  # (the relearning attack, which needs the forget set, lr and seed, runs in the main process)

    def evaluate_into(self, record: dict, model, tokenizer, reference, own_reference: bool = False,
                      together: bool = False) -> dict:
        """Evaluate, run the harness, write the record. ``own_reference``: the model is the retain
        model, its own reference (forget quality = 1 by definition). ``together``: the followers
        evaluate along (:meth:`evaluate_along`)."""
        tick = time.perf_counter()
        with self.sharing(together):
            metrics, per_item = self.task.evaluate(model, tokenizer, self.fmt, self.data, reference,
                                                   self.spec.eval_batch_size)
        if own_reference:
            metrics.update(self.task.reference_metrics(per_item, per_item))
        self.show_notes(per_item)
        timings = record.setdefault("timings", {})
        timings["evaluate_s"] = time.perf_counter() - tick
        timings.update(per_item.pop("timings", {}))  # a task may report its own breakdown
        tick = time.perf_counter()
        with self.sharing(together):
            harness_metrics, harness_details = self.run_harness(model, tokenizer)
        metrics.update(harness_metrics)
        metrics.update(self.task.summarise_harness(harness_metrics))
        timings["harness_s"] = time.perf_counter() - tick
        if harness_details:
            record["harness"] = harness_details
        record.update(status="ok", error=None, metrics=metrics, per_item=per_item, environment=self.environment(),
                      prompt_example=self.prompt_example)
        write_json_atomic(record_path(self.out, record["cell_id"]), record)
        return record

    def environment(self) -> dict:
        """Where a record was made, with how many data-parallel processes trained it."""
        return {**environment(), "processes": self.processes.world_size}

    def show_notes(self, per_item: dict) -> None:
        """Say once on the console why metrics are None (e.g. no holdout set: no MIA columns),
        not only inside the records."""
        probes = per_item.get("mia")
        for note in (probes.get("notes") or []) if isinstance(probes, dict) else []:
            if note not in self.shown_notes:
                self.shown_notes.add(note)
                self.console.print(f"[yellow]note:[/] {note}", soft_wrap=True, highlight=False)

    def baseline(self, kind: str, path: str | None, reference) -> dict | None:
        if path is None:
            return None
        record = self.base_record(kind)
        label = self.task.card.spec.baselines[kind].label
        if label:
            record["baseline_label"] = label
        self.cell_ids.append(record["cell_id"])
        done = finished_record(self.out, record["cell_id"])
        if done:
            return done
        cache = None if self.spec.fresh_baselines else self.evaluation_cache(path)
        reused = cache.get(record["cell_id"]) if cache else None
        if reused:
            when = (reused.get("environment") or {}).get("created", "an earlier run")
            self.console.print(f"Reusing the {kind} model's evaluation of {when} (same weights, data, code and "
                               "settings; --fresh-baselines evaluates again)", highlight=False)
            reused["reused_from"] = str(cache.path(record["cell_id"]))
            if "embedded" in record:  # evaluations cached before records carried it
                reused["embedded"] = record["embedded"]
            write_json_atomic(record_path(self.out, record["cell_id"]), reused)
            return reused
        self.console.print(f"Evaluating the {kind} model")
        if self.evaluation_shared:  # the followers load it too and evaluate (and probe) along
            self.processes.send({"baseline": path, "reference": reference, "probes": self.probes_of(kind)})
        model, tokenizer = self.load(path)
        if self.probes_of(kind):  # until they are in, the record is not finished (a resume redoes it)
            record["probes_pending"] = self.probes_of(kind)
        record = self.evaluate_into(record, model, tokenizer, reference, own_reference=kind == "retain",
                                    together=self.evaluation_shared)
        if self.probes_of(kind):
            self.run_probes(record, model, tokenizer, None, None, 0, reference, self.probes_of(kind),
                            together=self.evaluation_shared)
        if cache:
            cache.put(record)
        return record

    def evaluation_cache(self, path: str) -> EvaluationCache:
        """Where the evaluation of the baseline at ``path`` is kept for later sweeps, keyed by everything
        besides its record identity that could change its numbers."""
        model_files = files_fingerprint(Path(path), suffixes=(".json", ".model", ".txt", ".jinja")) if Path(path).is_dir() else None
        return EvaluationCache(cache_root() / "evaluations", {**self.evaluation_context, "model_files": model_files})

    @functools.cached_property
    def evaluation_context(self) -> dict:
        """The part of the evaluation cache's key that every baseline of this sweep shares: code, task
        folder, data, library versions and evaluation settings. Computed once: on real TOFU the data hash
        alone reads thousands of items."""
        import soul_bench

        versions = {}
        for package in ("torch", "transformers", "lm_eval", "rouge_score", "numpy", "scipy", "scikit-learn"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = None
        return {"code": files_fingerprint(Path(soul_bench.__file__).parent),
                "task": files_fingerprint(self.task.card.folder),
                "harness_include": [files_fingerprint(Path(d)) for d in self.spec.harness_include],
                "data": content_hash(self.data.sets), "versions": versions,
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type,
                "eval_batch_size": self.spec.eval_batch_size, "dtype": self.spec.dtype}

    def probes_of(self, kind: str) -> list[str]:
        """The probes a record of ``kind`` gets: every one for an unlearned model; quantisation for
        the target too, the reference for how far quantisation alone moves each metric."""
        if kind == "unlearned":
            return list(self.spec.probes)
        return [name for name in self.spec.probes if name == "quant"] if kind == "target" else []

    # ------------------------------------------------------------ cells
    def run_cell(self, method_name: str, optimizer_name: str, seed: int, reference_items, point: dict | None = None) -> dict:
        loop, method_hp, optimizer_hp = cell_settings(self.task, self.spec, method_name, optimizer_name, seed, point, self.model_methods)
        method = registry.build_method(method_name, method_hp)
        hparams = {"loop": loop_identity(loop), "method": method.hparams(), "lora": self.spec.lora,
                   "optimizer": {**optimizer_defaults(optimizer_name), **optimizer_hp}}
        record = self.base_record("unlearned", method_name, optimizer_name, seed, {"hparams": hparams})
        self.cell_ids.append(record["cell_id"])
        done = finished_record(self.out, record["cell_id"])
        if done:
            self.console.print(f"  {method_name} × {optimizer_name} seed {seed}: finished before, skipped")
            return done
        one_shot = self.one_shot[optimizer_name]
        if one_shot and not getattr(method, "influence_compatible", False):
            reason = f"{optimizer_name} is a one-shot influence update of the forget CE; '{method_name}' has no such objective"
            record.update(status="skipped", error=reason, metrics={}, environment=self.environment())
            write_json_atomic(record_path(self.out, record["cell_id"]), record)
            return record
        if not one_shot:  # a one-shot update runs in the main process alone
            self.processes.send({"cell": (method_name, optimizer_name, seed, point)})  # the followers train along
        model, tokenizer, forget, result = self.unlearn(method_name, optimizer_name, seed, point)
        together = self.evaluation_shared and not one_shot
        if together:  # the followers evaluate along, unless there is nothing to evaluate
            self.processes.send(result.failure is None)
        record["timings"] = {"unlearn_s": result.seconds, "hessian_s": result.hessian_seconds, "steps": result.steps_done}
        record["train_log"] = result.log
        record["stopped_early"] = result.stopped_early
        if result.failure:
            record.update(status="failed", error=result.failure, metrics={}, environment=self.environment())
            write_json_atomic(record_path(self.out, record["cell_id"]), record)
            return record
        if self.spec.probes:  # until they are in, the record is not finished (a resume redoes the cell)
            record["probes_pending"] = list(self.spec.probes)
        record = self.evaluate_into(record, model, tokenizer, reference_items, together=together)
        if self.spec.probes:
            self.run_probes(record, model, tokenizer, forget, optimizer_hp.get("lr"), seed, reference_items,
                            together=together)
        return record

    def unlearn(self, method_name: str, optimizer_name: str, seed: int, point: dict | None):
        """Load the target and unlearn one cell; (model, tokenizer, encoded forget set, LoopResult).
        Every data-parallel process runs this for the cells the main process sends."""
        loop, method_hp, optimizer_hp = cell_settings(self.task, self.spec, method_name, optimizer_name, seed, point, self.model_methods)
        method = registry.build_method(method_name, method_hp)
        one_shot = self.one_shot[optimizer_name]
        model, tokenizer = self.load(self.target_path)
        if self.spec.lora:
            # the frozen base (adapters off) is the reference: no second copy of the weights
            model = apply_lora(model, self.spec.lora)
            reference = AdaptersDisabled(model) if method.wants_reference else None
        else:
            reference = self.load(self.target_path)[0] if method.wants_reference else None
            if reference is not None:
                reference.requires_grad_(False)
        method.setup(model, reference)
        # FSDP: shard the model (and a separate reference) before the optimiser sees the parameters;
        # a one-shot update runs in the main process alone, on the whole model
        if not one_shot:
            model = self.processes.shard(model)
            if reference is not None and not self.spec.lora:
                reference = self.processes.shard(reference)
        forget = self.encode(tokenizer, "forget")
        # IU's Hessian is of the retain loss, so it needs retain data whatever the method
        retain = self.encode(tokenizer, "retain") if method.needs_retain or one_shot else None
        refusal = self.encode_refusals(tokenizer, seed) if method.needs_refusal else None
        reference_nll = None
        if method.reference_nll_of and not one_shot:
            # each forget row's reference likelihood, once; a method reading nothing else of the
            # reference (NPO, DPO) then trains without the second copy of the weights in memory
            trainable = [p for p in model.parameters() if p.requires_grad]
            reference_nll = reference_nll_table(reference, method, forget, loop, tokenizer.pad_token_id, refusal,
                                                uses_autocast(loop, trainable))
            if not method.needs_reference:
                reference = None
        if "weight_decay" in optimizer_defaults(optimizer_name):
            params = weight_decay_groups(model, decay_biases_and_norms=loop.decay_biases_and_norms)
        else:  # no weight decay to exempt anything from (IU, plugin optimisers without the hyper-parameter)
            params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(optimizer_name, params, **optimizer_hp)
        if one_shot:
            result = run_one_shot(model, optimizer, forget, retain, loop, tokenizer.pad_token_id)
        else:
            result = run_loop(model, method, optimizer, forget, loop, tokenizer.pad_token_id, retain, reference, refusal,
                              description=f"{method_name} × {optimizer_name} s{seed}",
                              show_progress=self.spec.show_progress and self.processes.is_main, processes=self.processes,
                              reference_nll=reference_nll)
        if self.processes.fsdp and not one_shot:  # every process evaluates a whole copy of the trained weights
            del reference, optimizer
            weights = self.processes.gather_weights(model)  # on the main process's CPU
            model = None  # the shards go before the whole copy comes
            model = self.load(self.target_path)[0]
            if self.processes.is_main:
                model.load_state_dict(weights)
            del weights
            self.processes.broadcast_weights(model)  # the followers' copies take them from the main process
        return model, tokenizer, forget, result

    def run_probes(self, record: dict, model, tokenizer, forget, lr: float | None, seed: int, reference_items,
                   names: list[str] | None = None, together: bool = False) -> None:
        """Attack the model with each probe (default: all of the run's), evaluate the attacked
        copy with the task's own evaluation, add its metrics as ``<probe>/<metric>`` and rewrite
        the record. ``together``: the followers attack and evaluate along (:meth:`probe_metrics`)."""
        for name, metrics, seconds in self.probe_metrics(model, tokenizer, forget, lr, seed, reference_items,
                                                         names if names is not None else self.spec.probes, together):
            record["metrics"].update({f"{name}/{key}": value for key, value in metrics.items()})
            record["timings"][f"probe_{name}_s"] = seconds
        record.pop("probes_pending", None)
        write_json_atomic(record_path(self.out, record["cell_id"]), record)

    def probe_metrics(self, model, tokenizer, forget, lr: float | None, seed: int, reference_items, names: list[str],
                      together: bool = False):
        """(probe, the attacked copy's metrics, seconds) for each probe in ``names``. ``together``:
        every process runs this on its copy of the model and evaluates its share; the relearning
        attack trains in the main process alone (a few steps, the one process's numbers), whose
        weights then go to the others' copies."""
        if isinstance(model, torch.nn.Module) and hasattr(model, "merge_and_unload") and self.spec.lora:
            model = model.merge_and_unload()  # probes act on the plain weights
        for name in names:
            settings = self.probe_settings[name]
            tick = time.perf_counter()
            if name == "relearn":
                if self.processes.is_main:
                    attacked = relearned(model, forget, tokenizer.pad_token_id, settings, lr or 1e-5, seed)
                else:
                    attacked = copy.deepcopy(model)
                if together:
                    self.processes.broadcast_weights(attacked)
            else:
                attacked = quantised(model, settings)  # the same rounding in every process
            with self.sharing(together):
                metrics, _ = self.task.evaluate(attacked, tokenizer, self.fmt, self.data, reference_items,
                                                self.spec.eval_batch_size)
            del attacked
            yield name, metrics, time.perf_counter() - tick

    # ------------------------------------------------------------ whole sweep
    def run(self) -> Path:
        if not self.processes.is_main:
            return self.follow()
        try:
            return self.lead()
        finally:
            self.processes.send(None)  # the followers stop (also when the main process failed)

    def follow(self) -> Path:
        """A follower process: once the main process has the models ready, load them and do what
        it sends — train a cell, or load a baseline, and evaluate and probe it along; it writes
        nothing (the main process keeps every result)."""
        if self.processes.receive() is None:
            return self.out
        self.load_data_and_models()  # the main process prepared (cached) the embedded models already
        reference = None  # the retain model's per-item values, which the task's metrics compare with
        while (order := self.processes.receive()) is not None:
            if "baseline" in order:
                model, tokenizer = self.load(order["baseline"])
                self.evaluate_along(model, tokenizer, order["reference"], order["probes"])
            elif "reference" in order:
                reference = order["reference"]
            else:
                model, tokenizer, _, _ = self.unlearn(*order["cell"])
                if self.processes.receive():  # False: the cell failed, nothing to evaluate
                    self.evaluate_along(model, tokenizer, reference, self.spec.probes)
            model = None  # (the next model loads only once this one has gone)
        return self.out

    def lead(self) -> Path:
        """The main (or only) process: the whole sweep."""
        self.started = time.perf_counter()
        self.load_data_and_models()
        self.processes.send("loaded")
        fresh = not self.out.exists()
        (self.out / "records").mkdir(parents=True, exist_ok=True)
        try:
            self.lock = lock_run_folder(self.out)
        except RuntimeError as exc:
            raise UserError(str(exc)) from exc
        try:
            return self._sweep()
        except UserError:
            # bad input found late: leave nothing half written
            if fresh and not any((self.out / "records").iterdir()):
                import shutil

                self.lock.close()
                shutil.rmtree(self.out)
            raise
        finally:
            self.lock.close()  # (the OS releases it on any exit too; this is for runs inside one process)

    def _sweep(self) -> Path:
        spec = self.spec
        # the retain model first: every other model's reference metrics compare with it
        retain = self.baseline("retain", self.retain_path, None)
        reference_items = retain["per_item"] if retain else None
        if reference_items is None and "retain" in self.task.card.spec.baselines:
            self.console.print("[yellow]note:[/] no retain model given (--retain-model): metrics that compare with it "
                               "(e.g. forget quality) are None")
        evaluated = {"retain": retain} if retain else {}
        for kind, path in self.baseline_paths.items():
            if kind != "retain":
                evaluated[kind] = self.baseline(kind, path, reference_items)
        if self.recipe is not None and spec.limit is not None and self.recipe["checks"]:
            self.console.print("[yellow]note:[/] the embedded models' checks are skipped: --limit makes the sets too "
                               "small for them (e.g. forget quality cannot reach its bound)", highlight=False)
        elif self.recipe is not None:
            self.task.check_models({kind: record["metrics"] for kind, record in evaluated.items()}, self.recipe["checks"])
        if self.evaluation_shared:
            self.processes.send({"reference": reference_items})
        cells = [(m, o, s, point) for s in spec.seeds for m in spec.methods for o in spec.optimizers
                 for point in grid_points(spec.grid, m, o)]
        if spec.shard is not None:  # every N-th cell from the I-th; the baselines run in every shard
            index, count = spec.shard_parts
            cells = cells[index::count]
            self.console.print(f"shard {index}/{count}: {len(cells)} cell(s) of this sweep")
        for i, (method, optimizer, seed, point) in enumerate(cells, 1):
            setting = f" ({point_label(point)})" if point else ""
            self.console.print(f"[bold]cell {i}/{len(cells)}[/]: {method} × {optimizer}{setting}, seed {seed}",
                               highlight=False)
            record = self.run_cell(method, optimizer, seed, reference_items, point)
            if record["status"] in ("failed", "skipped"):
                self.console.print(f"[red]  {record['status']}:[/] {record['error']}")
        if self.write_report:
            self.report()
        self.console.print(f"Done in {time.perf_counter() - self.started:.0f} s → {self.out}")
        return self.out

    def report(self) -> None:
        """The same report code as ``soul-bench report``, on this run's folder (records only)."""
        card = self.task.card
        title = f"{self.task.name} ({self.data.forget_split}, data: {self.data.source})"
        paths = build_report([self.out], self.out, card.metrics, card.rank_by, title, tradeoff=card.tradeoff,
                             select_by=self.select_by, card_harness_tasks=card.harness_tasks,
                             select_on_seeds=self.spec.select_on_seeds)
        records = [r for r in paths.records if r.get("cell_id") in self.cell_ids]
        rows = leaderboard_rows(records, card.metrics, card.rank_by, select_by=self.select_by,
                                select_on_seeds=self.spec.select_on_seeds)
        self.console.print(summary_table(rows, card.metrics, title))
        for conflict in paths.conflicts:
            self.console.print(f"[yellow]conflict:[/] {conflict.describe()} (see conflicts.md)")
