"""The ``soul-bench`` command line: run, list, prepare, report.

User errors (unknown names, missing or malformed files) print one line and exit with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from soul_bench.card import check_held_out
from soul_bench.errors import ModelCheckError, UserError
from soul_bench.spec import MAX_SEED, build_spec, split_csv

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="soul-bench: benchmark LLM unlearning methods × optimisers (first vs second order).")
console = Console()

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)
TASKS_DIR_HELP = "extra folder of task plugins (each sub-folder with a task.yaml); also $SOUL_BENCH_TASKS_PATH"
SELECT_ON_SEEDS_HELP = ("choose each (method, optimiser)'s setting on these seeds only, e.g. 0, and report it on the "
                        "other seeds, which the choice never saw (default: the same seeds choose and report)")


@app.command()
def run(
    task: Optional[str] = typer.Option(None, help="task name (see `soul-bench list tasks`); default tofu"),
    methods: Optional[str] = typer.Option(None, help="comma-separated unlearning methods, e.g. ga,npo"),
    optimizers: Optional[str] = typer.Option(None, help="comma-separated optimisers, e.g. adamw,sophia"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
    select_on_seeds: Optional[str] = typer.Option(None, help=SELECT_ON_SEEDS_HELP),
    forget_split: Optional[str] = typer.Option(None, help="e.g. forget01 / forget05 / forget10 (TOFU)"),
    model: Optional[str] = typer.Option(None, help="target model: a preset (soul-bench list models), HF id or local folder (default: the embedded tiny Llama)"),
    retain_model: Optional[str] = typer.Option(None, help="retain model (never saw the forget set): HF id or folder"),
    data: Optional[str] = typer.Option(None, help="synthetic | hub | hub:ID | auto | local:DIR | DIR"),
    preset: Optional[str] = typer.Option(None, help="embedded model preset from the task card (e.g. tiny, micro)"),
    out: Optional[Path] = typer.Option(None, help="output folder for records, leaderboard and figures"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    config: Optional[Path] = typer.Option(None, help="YAML file with any of these settings plus per-method/optimiser hyper-parameters"),
    lr: Optional[str] = typer.Option(None, help="learning rate for every optimiser (overrides the card); a list, e.g. 1e-5,3e-5,1e-4, tunes over it (one cell per value; the report picks each optimiser's best)"),
    steps: Optional[int] = typer.Option(None, help="unlearning steps per cell"),
    epochs: Optional[float] = typer.Option(None, help="unlearning epochs over the forget set per cell"),
    batch_size: Optional[int] = typer.Option(None, help="forget (and retain) batch size"),
    limit: Optional[int] = typer.Option(None, help="cap every data set at this many items (quick runs on real data)"),
    prompt_template: Optional[str] = typer.Option(None, help="prompt with a {question} field, or 'chat' (\\n, \\t are read as newline, tab)"),
    answer_prefix: Optional[str] = typer.Option(None, help="text between a plain template's prompt and the answer (default: the card's, ' ')"),
    system_prompt: Optional[str] = typer.Option(None, help="system message for --prompt-template chat (default: none, so the template's own)"),
    max_length: Optional[int] = typer.Option(None, help="tokens per example / text window (default: the task card's examples.max_length)"),
    dtype: Optional[str] = typer.Option(None, help="weights: auto (bf16 on GPUs that have it, else float32) | float32 (with bf16 autocast on GPUs: fp32 master weights) | bfloat16 | float16"),
    eval_batch_size: Optional[int] = typer.Option(None, help="sequences per evaluation batch (default 32; sets evaluation's peak memory)"),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing", help="recompute activations in the backward pass (less memory, ~30 % slower)"),
    probes: Optional[str] = typer.Option(None, help="robustness probes of every unlearned model, e.g. relearn,quant (relearning attack; 4-bit quantisation)"),
    eval_option: Optional[list[str]] = typer.Option(None, help="KEY=VALUE over the task card's evaluation section, e.g. max_items=300 or max_new_tokens=200 (repeatable)"),
    hparam: Optional[list[str]] = typer.Option(None, help="NAME.KEY=VALUE hyper-parameter of a method or optimiser, e.g. npo.beta=0.2 or sophia.rho=0.03; NAME.KEY=A,B,… tunes over the values (repeatable)"),
    harness_tasks: Optional[str] = typer.Option(None, help="comma-separated lm-eval tasks for utility ('' = none); default: the task card's"),
    harness_limit: Optional[int] = typer.Option(None, help="documents per lm-eval task (quick runs)"),
    harness_include: Optional[list[str]] = typer.Option(None, help="folder of your own lm-eval task YAMLs, for --harness-tasks (repeatable)"),
    tasks_dir: Optional[list[str]] = typer.Option(None, help=TASKS_DIR_HELP),
    shard: Optional[str] = typer.Option(None, help="I/N: run every N-th cell from the I-th (0-based; e.g. a Slurm array), merge the folders with `report`"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
    fresh_baselines: bool = typer.Option(False, "--fresh-baselines", help="evaluate the target and retain models again instead of reusing an earlier identical evaluation (same weights, data, code, settings) from the cache"),
):
    """Unlearn with every (method × optimiser × seed) cell, evaluate, write the leaderboard."""
    from soul_bench.runner import Runner

    overrides = dict(task=task, methods=split_csv(methods), optimizers=split_csv(optimizers),
                     seeds=_seed_list(seeds, "--seeds"), forget_split=forget_split,
                     model=model, retain_model=retain_model, data=data, preset=preset, out=out, device=device,
                     lr=_numbers(lr, "--lr", "1e-4 or 1e-5,3e-5,1e-4"), steps=steps, epochs=epochs, batch_size=batch_size, limit=limit, prompt_template=unescape(prompt_template),
                     answer_prefix=unescape(answer_prefix), system_prompt=unescape(system_prompt),
                     max_length=max_length, dtype=dtype, eval_batch_size=eval_batch_size,
                     gradient_checkpointing=gradient_checkpointing, tasks_dirs=tasks_dir or None, show_progress=False if no_progress else None,
                     harness_tasks=split_csv(harness_tasks), harness_limit=harness_limit, harness_include=harness_include or None, shard=shard,
                     probes=split_csv(probes), fresh_baselines=fresh_baselines or None,
                     select_on_seeds=_seed_list(select_on_seeds, "--select-on-seeds"))
    spec = build_spec(config, overrides)
    for target, name, key, value in _parse_hparams(hparam or []):
        if isinstance(value, GridValues):  # NAME.KEY=A,B: one cell per value
            spec.grid[f"{name}.{key}"] = list(value)
        else:  # one value beats a config's grid of that key
            getattr(spec, target).setdefault(name, {})[key] = value
            spec.grid.pop(f"{name}.{key}", None)
    spec.evaluation.update(_parse_options(eval_option or [], "--eval-option", "max_items=300"))
    Runner(spec, console).run()


def unescape(text: str | None) -> str | None:
    r"""A shell does not turn a typed \n into a newline: read \n, \t and \\ in a prompt flag as the
    characters they name (a YAML config writes real ones)."""
    if text is None:
        return None
    import re

    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _parse_options(items: list[str], flag: str, example: str) -> dict:
    """["max_items=300"] → {"max_items": 300}; values are typed as YAML reads them."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            raise UserError(f"{flag} '{item}' must look like KEY=VALUE, e.g. {example}")
        if not value.strip():
            raise UserError(f"{flag} '{item}' gives no value after '='; e.g. {example}")
        parsed[key.strip()] = _yaml_value(value, flag, item)
    return parsed


class GridValues(list):
    """The values of ``--hparam NAME.KEY=A,B,…``: tried one per cell (a tuning grid)."""


def _numbers(text: str | None, flag: str, example: str) -> list[float] | None:
    """"1e-5,3e-5" → [1e-05, 3e-05]; a value that is not a number is one line naming the flag."""
    if text is None:
        return None
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(float(part))
        except ValueError:
            raise UserError(f"{flag} '{text}': '{part}' is not a number; give one or a comma-separated list, e.g. {example}") from None
    if not values:
        raise UserError(f"{flag} needs a number, e.g. {example}")
    return values


def _yaml_value(text: str, flag: str, item: str):
    """One value as YAML types it (``1e-4`` a number: :func:`soul_bench.card.load_yaml`)."""
    import yaml

    from soul_bench.card import load_yaml, yaml_error_line

    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{flag} '{item}': the value is not valid YAML: {yaml_error_line(exc)}") from None


def _hparam_value(text: str, item: str = ""):
    """A YAML value, or — for A,B,… outside brackets and quotes — the grid of those values."""
    stripped = text.strip()
    if "," in stripped and stripped[:1] not in "[{'\"":
        return GridValues(_yaml_value(part, "--hparam", item or text) for part in stripped.split(","))
    return _yaml_value(text, "--hparam", item or text)


def _parse_hparams(items: list[str]) -> list[tuple[str, str, str, object]]:
    """"npo.beta=0.2" → ("method_hparams", "npo", "beta", 0.2); values are typed as YAML reads them;
    "npo.beta=0.05,0.1" gives :class:`GridValues`."""
    from soul_bench import registry

    methods, optimizers = registry.methods(), registry.optimizers()
    parsed = []
    for item in items:
        name_key, sep, value = item.partition("=")
        name, dot, key = name_key.partition(".")
        if not (sep and dot and name and key):
            raise UserError(f"--hparam '{item}' must look like NAME.KEY=VALUE, e.g. npo.beta=0.2")
        if not value.strip():
            raise UserError(f"--hparam '{item}' gives no value after '='; e.g. npo.beta=0.2 or npo.beta=0.05,0.1")
        if name not in methods and name not in optimizers:
            raise UserError(f"--hparam '{item}': '{name}' is neither a method nor an optimiser; valid: "
                            f"{', '.join(sorted(methods) + sorted(optimizers))}")
        parsed.append(("method_hparams" if name in methods else "optimizer_hparams", name, key, _hparam_value(value, item)))
    return parsed


@app.command("list")
def list_(
    what: str = typer.Argument("all", help="tasks | methods | optimizers | metrics | models | all"),
    tasks_dir: Optional[list[str]] = typer.Option(None, help=TASKS_DIR_HELP),
):
    """List tasks, methods, optimisers, metrics and model presets, one line each."""
    from soul_bench import registry

    kinds = ("tasks", "methods", "optimizers", "metrics", "models")
    if what != "all" and what not in kinds:
        raise UserError(f"cannot list '{what}'; valid: all, {', '.join(kinds)}")
    show = kinds if what == "all" else (what,)
    table = Table(show_header=True, header_style="bold")
    table.add_column("kind"), table.add_column("name"), table.add_column("description")
    folders = registry.task_folders(tasks_dir)
    if "tasks" in show:
        for name in sorted(folders):
            table.add_row("task", name, registry.load_task(name, tasks_dir).card.description)
    if "methods" in show:
        for name, cls in sorted(registry.methods().items()):
            table.add_row("method", name, cls.description)
    if "optimizers" in show:
        for name, (_, description) in sorted(registry.optimizers().items()):
            table.add_row("optimizer", name, description)
    if "metrics" in show:
        for name in sorted(folders):
            for metric in registry.load_task(name, tasks_dir).card.metrics:
                better = f"best at {metric.ideal:g}" if metric.ideal is not None else f"{metric.arrow} better"
                table.add_row("metric", f"{name}:{metric.name}", f"{metric.label or metric.name} ({better})")
    if "models" in show:
        from soul_bench.presets import model_presets

        for name, preset in model_presets().items():
            table.add_row("model", name, preset.description)
    console.print(table)


@app.command()
def prepare(
    task: str = typer.Option("tofu", help="task name"),
    forget_split: Optional[str] = typer.Option(None, help="forget split whose retain model to build"),
    data: Optional[str] = typer.Option(None, help="synthetic | hub | hub:ID | auto | local:DIR | DIR"),
    preset: Optional[str] = typer.Option(None, help="embedded model preset"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    limit: Optional[int] = typer.Option(None, help="cap every data set at this many items"),
    tasks_dir: Optional[list[str]] = typer.Option(None, help=TASKS_DIR_HELP),
):
    """Build (or find cached) the task's embedded base, target and retain models."""
    from soul_bench.runner import Runner

    spec = build_spec(None, dict(task=task, forget_split=forget_split, data=data, preset=preset, device=device,
                                 limit=limit, tasks_dirs=tasks_dir or None, methods=None, optimizers=None))
    runner = Runner(spec, console)
    runner.load_data_and_models()
    console.print(f"target model: {runner.target_path}\nretain model: {runner.retain_path}", soft_wrap=True, highlight=False)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="one or more run folders (each holds records/); several are merged"),
    out: Optional[Path] = typer.Option(None, help="where to write the report (default: the first run folder)"),
    task: Optional[str] = typer.Option(None, help="task whose card gives the metric columns (default: the records' own task)"),
    baseline_optimizer: str = typer.Option("adamw", help="first-order baseline of the FO-vs-SO table"),
    across_targets: bool = typer.Option(False, "--across-targets", help="pool records made from different target models (e.g. embedded targets of several prepare seeds): each (target, seed) is a seed; default: other target weights are conflicts"),
    select_by: Optional[str] = typer.Option(None, "--select-by", help="the rule choosing each (method, optimiser)'s setting among those tried: metric names (forget_quality,model_utility) or a YAML rule '{by: [forget_quality], require: [{metric: model_utility, at_least: 0.8, relative_to: target}]}' (default: the card's select_by)"),
    select_on_seeds: Optional[str] = typer.Option(None, help=SELECT_ON_SEEDS_HELP),
    tasks_dir: Optional[list[str]] = typer.Option(None, help=TASKS_DIR_HELP),
):
    """Rebuild leaderboards (md/csv/tex), the FO-vs-SO table and figures from records only."""
    from soul_bench import registry
    from soul_bench.report.build import build_report
    from soul_bench.report.leaderboard import leaderboard_rows, load_records, summary_table

    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is an existing file; give a folder for the report")
    for run_dir in run_dirs:
        if not run_dir.exists():
            raise UserError(f"run folder '{run_dir}' does not exist; give the --out folder of a soul-bench run")
        records = (run_dir / "records").resolve()
        if not records.is_dir():
            raise UserError(f"'{run_dir}' has no records/ folder; give the --out folder of a soul-bench run")
        if out is not None and records in (out.resolve(), *out.resolve().parents):  # later reports would read the files
            raise UserError(f"--out '{out}' lies in the records/ folder of '{run_dir}', which holds records only; give "
                            "the run folder itself or another folder")
    try:
        loaded = [load_records(d) for d in run_dirs]
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    every_record = [r for records in loaded for r in records]
    if not every_record:
        raise UserError(f"no records in {', '.join(str(d / 'records') for d in run_dirs)}: nothing to report yet")
    known = set(registry.optimizers()) | {r["optimizer"] for r in every_record if isinstance(r.get("optimizer"), str)}
    if baseline_optimizer not in known:  # else an empty FO-vs-SO table, silently
        raise UserError(f"--baseline-optimizer: unknown optimizer '{baseline_optimizer}'; valid: {', '.join(sorted(known))}")
    named = sorted({str(r.get("task")) for r in every_record if r.get("task")})
    if task is None:  # each record names its task: use that task's card
        if len(named) > 1:
            raise UserError(f"the records belong to several tasks ({', '.join(named)}); report one task at a time "
                            "(give the run folders of one task, or --task NAME)")
        task = named[0] if named else "tofu"
    card = registry.load_task(task, tasks_dir).card
    if named and task not in named:  # another card's columns would show the records as empty
        raise UserError(f"--task {task}: the records are of task {', '.join(named)}; leave --task out (the records name "
                        f"their task) or give the run folders of task {task}")
    selection = card.selection_rule(select_by)
    choose_on = _seed_list(select_on_seeds, "--select-on-seeds")
    if choose_on is not None:
        try:
            seeds = sorted({r.get("seed") for r in every_record if (r.get("kind") or "unlearned") == "unlearned"}, key=str)
            check_held_out(choose_on, seeds, "the records' seeds")
        except ValueError as exc:
            raise UserError(f"--select-on-seeds: {exc}") from None
    out = out or run_dirs[0]
    title = f"{card.name} ({', '.join(d.name for d in run_dirs)})"
    try:
        paths = build_report(run_dirs, out, card.metrics, card.rank_by, title, tradeoff=card.tradeoff,
                             baseline_optimizer=baseline_optimizer, select_by=selection,
                             across_targets=across_targets, card_harness_tasks=card.harness_tasks,
                             select_on_seeds=choose_on, loaded=loaded)
    except ValueError as exc:  # LeaderboardError: corrupt record, mixed tasks/splits, bad names
        raise UserError(str(exc)) from exc
    console.print(summary_table(leaderboard_rows(paths.records, card.metrics, card.rank_by, select_by=selection,
                                                 select_on_seeds=choose_on), card.metrics, title))
    for conflict in paths.conflicts:
        console.print(f"[yellow]conflict:[/] {conflict.describe()}")
    console.print(f"wrote {len(paths)} files to {out}")


@app.command()
def reproduce(
    suite: str = typer.Argument("embedded", help="which reference results: 'embedded' (the offline default of every built-in task)"),
    leaderboards: Path = typer.Option(Path("leaderboards"), help="where the tables go (<dir>/<task>/leaderboard.md, .csv, fo_vs_so.*)"),
    reports: Path = typer.Option(Path("reports"), help="where figures and LaTeX go (<dir>/<task>/*.png, *.pdf, *.tex)"),
    runs: Path = typer.Option(Path("runs/reproduce"), help="where the runs' records go (reused: finished cells are skipped)"),
    task: Optional[list[str]] = typer.Option(None, help="only these tasks (default: every built-in task with a reference sweep)"),
    methods: Optional[str] = typer.Option(None, help="override the card's reference methods (quick checks)"),
    optimizers: Optional[str] = typer.Option(None, help="override the card's reference optimisers"),
    seeds: Optional[str] = typer.Option(None, help="override the card's reference seeds"),
    prepare_seeds: Optional[str] = typer.Option(None, help="override the card's reference prepare seeds (embedded targets pooled)"),
    probes: Optional[str] = typer.Option(None, help="override the card's reference probes, e.g. relearn,quant ('' for none)"),
    preset: Optional[str] = typer.Option(None, help="embedded preset (default: the card's)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
):
    """Regenerate leaderboards/ and reports/: each built-in task's reference sweep (card section
    `reference`), run on its embedded default, then the report from the records."""
    import shutil
    import tempfile

    from soul_bench import registry
    from soul_bench.report.build import build_report
    from soul_bench.report.leaderboard import chosen_settings, leaderboard_rows, load_records, summary_table
    from soul_bench.runner import Runner, point_of_setting

    if suite != "embedded":
        raise UserError(f"unknown reference suite '{suite}'; valid: embedded")
    names = task or sorted(n for n in registry.builtin_task_names() if registry.load_task(n).card.spec.reference)
    for name in names:
        card = registry.load_task(name).card
        reference = card.section("reference")
        if not card.spec.reference:
            raise UserError(f"task '{name}' has no reference sweep (card section 'reference')")
        prepare = _seed_list(prepare_seeds, "--prepare-seeds") or reference["prepare_seeds"]
        every_seed = _seed_list(seeds, "--seeds") or reference["seeds"]
        choose_on = reference.get("select_on_seeds")
        if choose_on is not None:
            try:
                check_held_out(choose_on, every_seed)
            except ValueError as exc:
                raise UserError(f"task '{name}': reference.{exc}") from None
        # seed 0 is the card's own recipe (its cached models); others train other targets
        folders = {p: runs / name if len(prepare) == 1 else runs / name / f"prepare-{p}" for p in prepare}
        protocol: set[str] = set()

        def sweep(prepare_seed: int, **settings) -> None:
            overrides = dict(task=name, methods=split_csv(methods) or reference["methods"],
                             optimizers=split_csv(optimizers) or reference["optimizers"], seeds=every_seed,
                             data="synthetic", preset=preset, out=folders[prepare_seed],
                             show_progress=False if no_progress else None, grid=reference.get("grid") or None,
                             probes=split_csv(probes) if probes is not None else reference["probes"],
                             embedded={"train": {"seed": prepare_seed}} if prepare_seed else None)
            runner = Runner(build_spec(None, {**overrides, **settings}), console, write_report=False)
            runner.run()
            protocol.update(runner.cell_ids)

        # every setting of the grid; with held-out tuning on the selection seeds of the first
        # target only, so the choice never sees the other targets: they run the chosen settings
        # on the held-out seeds (an extra target then costs the chosen settings, not the grid)
        for prepare_seed in prepare[:1] if choose_on else prepare:
            if len(prepare) > 1:
                console.print(f"[bold]{name}: embedded target {prepare_seed} ({len(prepare)} prepare seeds)[/]")
            sweep(prepare_seed, **({"seeds": choose_on} if choose_on else {}))
        if choose_on:
            # each (method, optimiser)'s chosen setting, on the seeds the choice never saw
            chosen = chosen_settings([r for r in load_records(folders[prepare[0]]) if r.get("cell_id") in protocol],
                                     card.metrics, card.rank_by, card.select_by)
            held_out = [s for s in every_seed if s not in choose_on]
            console.print(f"[bold]{name}: the chosen setting of each (method, optimiser) on held-out seeds "
                          f"{', '.join(map(str, held_out))}"
                          + (f" of {len(prepare)} embedded targets" if len(prepare) > 1 else "") + "[/]")
            for prepare_seed in prepare:
                for (method, optimizer), setting in chosen.items():
                    point = point_of_setting(reference.get("grid") or {}, method, optimizer, setting)
                    sweep(prepare_seed, methods=[method], optimizers=[optimizer], seeds=held_out,
                          grid={key: [value] for key, value in point.items()} or None)
        with tempfile.TemporaryDirectory() as tmp:
            # only the protocol's records: settings the card no longer names stay out of the tables
            paths = build_report(list(folders.values()), Path(tmp), card.metrics, card.rank_by, f"{name} — embedded reference",
                                 tradeoff=card.tradeoff, select_by=card.select_by, across_targets=len(folders) > 1,
                                 only_cells=protocol, card_harness_tasks=card.harness_tasks,
                                 select_on_seeds=choose_on)
            for folder, suffixes in ((leaderboards / name, (".md", ".csv")), (reports / name, (".png", ".pdf", ".tex"))):
                if folder.exists():
                    shutil.rmtree(folder)
                folder.mkdir(parents=True)
                for path in paths.values():
                    if Path(path).suffix in suffixes:
                        shutil.copy2(path, folder / Path(path).name)
        console.print(summary_table(leaderboard_rows(paths.records, card.metrics, card.rank_by, select_by=card.select_by,
                                                     select_on_seeds=choose_on), card.metrics,
                                    f"{name} — embedded reference"))
        console.print(f"{name}: tables in {leaderboards / name}, figures in {reports / name}")


def _seed_list(text: str | None, what: str) -> list[int] | None:
    """'0,1' → [0, 1]; None when not given."""
    if text is None:
        return None
    seeds = [_int(part, f"{what} seed") for part in split_csv(text)]
    if not seeds:
        raise UserError(f"{what} names no seed; give comma-separated integers, e.g. 0 or 0,1")
    wrong = next((s for s in seeds if not 0 <= s <= MAX_SEED), None)
    if wrong is not None:
        raise UserError(f"{what}: seed {wrong} is out of range; valid: 0 to {MAX_SEED}")
    return seeds


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{what} must be an integer, got '{text}'") from None


def main() -> None:
    try:
        # also under `python -m soul_bench.cli`; typer turns Ctrl-C into a returned 130 here
        code = app(standalone_mode=False, prog_name="soul-bench")
        if code == INTERRUPTED:
            Console(stderr=True).print("interrupted: finished cells are kept; run the same command again to resume",
                                       highlight=False, soft_wrap=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except ModelCheckError as exc:
        Console(stderr=True).print(f"model check failed: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        if isinstance(exc, usage_error_types()):  # an unknown option, a missing argument, a bad value
            Console(stderr=True).print(f"error: {exc.format_message()} ({usage_hint(exc)})", markup=False,
                                       highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        raise


def usage_error_types() -> tuple[type, ...]:
    """The command-line parser's own errors: click's, and those of the click that recent typer
    releases carry inside themselves (typer.TyperException), which are not click's classes."""
    types = [getattr(typer, "TyperException", None)]
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(t for t in types if t is not None)


def usage_hint(exc) -> str:
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "soul-bench"
    return f"'{command} --help' lists what is valid"


# --------------------------------------------------------------------------- upstream eval logs in / out
# (defined before the __main__ guard so that `python -m soul_bench.cli` has them too)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="TOFU eval logs: a folder of eval_log*.json (or a model folder with "
                                          "eval_results/ds_size*/), eval_log_aggregated.json, an open-unlearning "
                                          "TOFU_EVAL.json, or a folder of such folders (one record each)"),
    name: str = typer.Option(..., help="row label of the imported result, e.g. the method's name"),
    out: Path = typer.Option(..., help="run folder to write the records into (RUN_DIR/records/)"),
    retain: Optional[Path] = typer.Option(None, help="the retain model's logs (same formats): forget quality is the "
                                                     "KS test against them; without it, forget quality is empty"),
    seed: Optional[int] = typer.Option(None, help="seed of the imported run (imports of one --name share a row)"),
    forget_split: Optional[str] = typer.Option(None, help="forget split of the logs (default: the forgetXX in PATH)"),
    task: str = typer.Option("tofu", help="the task whose eval-log formats PATH is in"),
):
    """Import another code base's eval logs as records — for tofu: TOFU eval logs (locuslab/tofu or
    open-unlearning), whose metrics are recomputed by the tofu task's own functions. `soul-bench
    report RUN_DIR` shows them."""
    from soul_bench import registry
    from soul_bench.results import record_path, write_json_atomic

    records = registry.load_task(task).import_results(path, retain, name=name, seed=seed, forget_split=forget_split)
    for record in records:  # everything was read and checked above: bad input writes nothing
        write_json_atomic(record_path(out, record["cell_id"]), record)
    for record in records:
        fq = record["metrics"]["forget_quality"]
        console.print(f"{record['method']} (imported): model utility {_shown(record['metrics']['model_utility'])}, "
                      f"forget quality {_shown(fq) if fq is not None else '— (no --retain)'}", highlight=False)
    console.print(f"wrote {len(records)} record(s) to {out / 'records'}; see them with: soul-bench report {out}",
                  soft_wrap=True, highlight=False)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="a run folder (holds records/) with TOFU records"),
    out: Path = typer.Option(..., help="where to write one TOFU eval-log folder per record"),
):
    """Write each record in its task's upstream eval-log format — for tofu: TOFU eval logs
    (eval_log*.json + eval_log_aggregated.json), readable by TOFU's aggregate_eval_stat.py."""
    from soul_bench import registry
    from soul_bench.report.leaderboard import load_records

    if not (run_dir / "records").is_dir():
        raise UserError(f"'{run_dir}' has no records/ folder; give the --out folder of a soul-bench run")
    try:
        records = load_records(run_dir)
    except ValueError as exc:  # LeaderboardError: a corrupt record
        raise UserError(str(exc)) from exc
    tasks = sorted({str(r.get("task")) for r in records})
    if len(tasks) > 1:
        raise UserError(f"'{run_dir}' holds records of several tasks ({', '.join(tasks)}); export one task's run folder")
    written, skipped = registry.load_task(tasks[0] if tasks else "tofu").export_results(records, out)
    if skipped:
        console.print(f"skipped {len(skipped)} record(s) without results: {', '.join(skipped)}", soft_wrap=True,
                      highlight=False)
    console.print(f"wrote TOFU eval logs of {len(written)} record(s) to {out}/<cell id>/", soft_wrap=True, highlight=False)


def _shown(value) -> str:
    return "—" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    main()
