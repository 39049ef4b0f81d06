"""What a task plugin is: a folder with a declarative card (``task.yaml``) and a small
``task.py`` for what the card cannot say.

``task.py`` defines ``load(card) -> Task``. The core only ever talks to a task through
:class:`Task`: load data (hub / local files / offline synthetic, same schema after
loading), name the data each embedded training stage uses, and evaluate a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from soul_bench.card import CardSpec, CheckSpec, MetricSpec, Ranking, load_yaml, parse_card, parse_section
from soul_bench.data import PromptFormat
from soul_bench.errors import ModelCheckError, UserError
from soul_bench.evaluate import mia


def _names_or_rule(ranking: Ranking) -> list[str] | Ranking:
    """What the report takes as rank_by / select_by: the metric names, or the whole rule when it
    has requirements."""
    return ranking if ranking.require else list(ranking.by)


@dataclass
class TaskCard:
    """A loaded card: ``spec`` is the validated :class:`~soul_bench.card.CardSpec`, ``raw`` the YAML."""

    name: str
    description: str
    folder: Path
    raw: dict[str, Any]
    spec: CardSpec | None = None

    def __post_init__(self):
        if self.spec is None:
            self.spec = parse_card(self.raw, self.folder / "task.yaml")

    @property
    def metrics(self) -> list[MetricSpec]:
        return self.spec.metrics

    @property
    def rank_by(self) -> list[str] | Ranking:
        """The metric names to rank by, or the whole :class:`Ranking` when it has requirements."""
        return _names_or_rule(self.spec.ranking)

    @property
    def select_by(self) -> list[str] | Ranking:
        """The rule choosing each (method, optimiser)'s setting among those tried (rank_by's form)."""
        return _names_or_rule(self.spec.selection)

    def selection_rule(self, override: Any = None) -> list[str] | Ranking:
        """``select_by``, or a user's rule in its place (a run config's ``select_by`` or ``report
        --select-by``): metric names (a list, or "a,b"), or a whole rule ``{by: [...], require:
        [{metric: ..., at_least: ..., relative_to: target}]}`` (YAML text too), in this card's
        metric names. Bad input is one line naming what is valid."""
        if override is None:
            return self.select_by
        import yaml
        from pydantic import ValidationError

        value = override
        if isinstance(value, str):
            try:
                value = load_yaml(value)
            except yaml.YAMLError:
                raise UserError(f"select_by '{override}' is neither metric names (a,b) nor a YAML rule "
                                "{by: [...], require: [...]}") from None
            if isinstance(value, str):
                value = [name.strip() for name in value.split(",") if name.strip()]
        try:
            ranking = Ranking(by=value) if isinstance(value, list) else Ranking.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise UserError(f"select_by{'.' + where if where else ''}: {error['msg']} (a rule is metric names, or "
                            "{by: [names], require: [{metric, at_least/at_most, relative_to}]})") from None
        names = {m.name for m in self.metrics}
        unknown = [n for n in [*ranking.by, *(r.metric for r in ranking.require)] if n not in names]
        if not ranking.by or unknown:
            raise UserError(f"select_by names {'unknown metric ' + repr(unknown[0]) if unknown else 'no metric'}; "
                            f"task '{self.name}' metrics: {', '.join(sorted(names))}")
        return _names_or_rule(ranking)

    @property
    def harness_tasks(self) -> list[str]:
        """Every lm-eval task the card runs by default (any data source): the card reports them in
        metrics of its own (a column, or a summary like WMDP's hazard/acc), so a report gives
        automatic columns only to the tasks a user added."""
        return sorted({name for names in self.spec.harness.tasks_by_source.values() for name in names})

    @property
    def tradeoff(self) -> tuple[str, str] | None:
        """The scatter's (x, y) metrics: the card's, else its first two metrics (headline first)."""
        if self.spec.tradeoff:
            return self.spec.tradeoff
        ordered = [m.name for m in self.metrics if m.headline] + [m.name for m in self.metrics if not m.headline]
        return tuple(ordered[:2]) if len(ordered) >= 2 else None

    def section(self, name: str) -> dict:
        """A card section as a plain dict (typed sections dumped with their defaults)."""
        value = getattr(self.spec, name)
        if isinstance(value, BaseModel):
            return value.model_dump()
        return dict(value or {})


@dataclass
class DataSource:
    """Where task data comes from: ``synthetic`` (offline generator), ``hub`` or ``local`` (a folder)."""

    kind: str
    path: Path | None = None
    auto: bool = False  # chosen by soul-bench, not the user: a hub source may fall back to synthetic
    hub_id: str | None = None  # "hub:ID": this hub dataset instead of the card's

    @classmethod
    def parse(cls, text: str | None, have_model: bool) -> "DataSource":
        """No ``--data``: the embedded synthetic data with the embedded model; with a real model the
        task's hub data and nothing else — synthetic data would make a real model's numbers
        meaningless, so that fallback happens only when asked for (``--data auto``)."""
        if text in (None, ""):
            return cls("hub") if have_model else cls("synthetic", auto=True)
        if text == "auto":
            return cls("hub", auto=True) if have_model else cls("synthetic", auto=True)
        if text in ("synthetic", "hub"):
            return cls(text)
        if text.startswith("hub:"):
            hub_id = text[len("hub:"):].strip()
            if not hub_id:
                raise UserError("--data hub:ID needs a dataset id after 'hub:', e.g. hub:muse-bench/MUSE-News")
            return cls("hub", hub_id=hub_id)
        path = Path(text[len("local:"):] if text.startswith("local:") else text)
        if not path.is_dir():
            raise UserError(f"data folder '{path}' does not exist; --data takes synthetic, hub, auto or a folder of task files")
        return cls("local", path=path.resolve())

    def describe(self) -> str:
        if self.kind == "local":
            return f"local:{self.path}"
        return f"hub:{self.hub_id}" if self.hub_id else self.kind

    def hub(self, default: str | None) -> str | None:
        """The hub dataset to load: the one named by ``hub:ID``, else the card's ``default``."""
        return self.hub_id or default

    def load_hub(self, load: Callable[[], Any], what: str, embedded: str, notes: list[str]) -> tuple[Any, "DataSource"]:
        """``(load(), self)``; when the hub fails and soul-bench, not the user, chose it:
        ``(None, the synthetic source)`` with a note, for the caller to load the embedded data
        instead. A hub the user asked for that fails is one clear error naming ``what``; a
        UserError from ``load`` (the data are there but do not fit) always propagates."""
        try:
            return load(), self
        except UserError:
            raise
        except Exception as exc:  # network / gated hub
            if not self.auto:
                raise UserError(f"cannot load {what} from the hub ({type(exc).__name__}); give --data FOLDER "
                                "(files in the upstream layout), --data synthetic, or --data auto to fall back "
                                "to the embedded synthetic data") from exc
            notes.append(f"hub unreachable ({type(exc).__name__}); --data auto: using the embedded synthetic {embedded}")
            return None, DataSource("synthetic")  # (its note is the one above)


@dataclass
class TaskData:
    """Named lists of examples (dicts in the upstream schema) and a note on where they came from."""

    sets: dict[str, list[dict]]
    source: str
    forget_split: str
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> list[dict]:
        return self.sets[name]

    @property
    def source_kind(self) -> str:
        """``synthetic``, ``hub`` or ``local`` (``source`` without its id or path)."""
        return self.source.split(":")[0]


class Task:
    """Base class with the card plumbing; a task overrides ``load_data`` and ``evaluate``.

    ``section_models`` types the card sections the task owns (``data``, ``evaluation``): they
    are validated when the task is loaded and available as ``self.options[section]``.
    """

    section_models: dict[str, type[BaseModel]] = {}

    def __init__(self, card: TaskCard):
        self.card = card
        self.name = card.name
        self.options = {section: parse_section(getattr(card.spec, section), model, card.folder / "task.yaml", section)
                        for section, model in self.section_models.items()}

    def override_section(self, section: str, values: dict, where: str) -> None:
        """A run's overrides of a task-owned card section (e.g. ``evaluation: {max_items: 300}``),
        validated by the task's own model as the card itself is; records then carry the merged
        section, so a cell evaluated differently is a different cell."""
        merged = {**self.card.section(section), **values}
        if section in self.section_models:
            self.options[section] = parse_section(merged, self.section_models[section], where, section)
            merged = self.options[section].model_dump()
        setattr(self.card.spec, section, merged)

    def prompt_format(self, template: str | None = None, answer_prefix: str | None = None,
                      system_prompt: str | None = None) -> PromptFormat:
        """The card's prompt section, with a run's overrides (None = the card's)."""
        prompt = self.card.section("prompt")
        template = template or prompt.get("template", PromptFormat.template)
        if template != "chat":
            try:
                template.format(question="")
            except (KeyError, IndexError, ValueError) as exc:
                raise UserError(f"prompt template {template!r} is not a valid format string ({exc}); it takes one "
                                "{question} field (write {{ and }} for literal braces), or 'chat'") from exc
            if "{question}" not in template:
                raise UserError(f"prompt template {template!r} has no {{question}} field: the question would be dropped; "
                                "e.g. 'Q: {question} A:' or 'chat'")
        system = system_prompt if system_prompt is not None else prompt.get("system_prompt")
        if system is not None and template != "chat":
            raise UserError(f"a system prompt needs the chat template (--prompt-template chat); the template {template!r} "
                            "has no system turn: write the text into the template instead")
        return PromptFormat(template=template,
                            answer_prefix=answer_prefix if answer_prefix is not None else prompt.get("answer_prefix", " "),
                            system_prompt=system)

    def load_data(self, source: DataSource, forget_split: str | None, limit: int | None, generator_options: dict) -> TaskData:
        raise NotImplementedError

    def evaluate(self, model, tokenizer, fmt: PromptFormat, data: TaskData, reference: dict | None = None,
                 batch_size: int = 32) -> tuple[dict[str, float | None], dict]:
        """→ (metrics, per-item values). ``reference`` is the retain model's per-item values."""
        raise NotImplementedError

    def reference_metrics(self, per_item: dict, reference: dict | None) -> dict:
        """Metrics that compare a model's per-item values with the retain model's (``reference``).
        The runner calls it for the retain model itself with ``reference = per_item``.
        Default: the reference attack and PrivLeak from the core membership-probe record
        (``per_item["mia"]``, ``soul_bench.evaluate.mia.reference_probes``); none without it."""
        if "mia" not in per_item:
            return {}
        return mia.reference_probes(per_item["mia"], (reference or {}).get("mia"))

    def summarise_harness(self, harness_metrics: dict[str, float]) -> dict[str, float | None]:
        """Task metrics derived from the lm-eval results (``harness/<task>/<metric>``), e.g. one
        accuracy over whichever hazard benchmarks ran. Default: none."""
        return {}

    def import_results(self, path: Path, retain_path: Path | None = None, *, name: str, seed: int | None = None,
                       forget_split: str | None = None) -> list[dict]:
        """Records (kind ``imported``) from another code base's eval logs at ``path`` (``soul-bench
        import``), ``retain_path`` the retain model's logs; every input is read and checked before
        anything is returned, bad input is a :class:`UserError`. Default: the task reads none."""
        raise UserError(f"task '{self.name}' reads no other code base's eval logs (soul-bench import)")

    def export_results(self, records: list[dict], folder: Path) -> tuple[dict[str, Path], list[str]]:
        """Write this task's records in another code base's eval-log format under ``folder``
        (``soul-bench export``) → ({cell id: where it went}, [cell ids skipped: no results]).
        Default: the task writes none."""
        raise UserError(f"task '{self.name}' writes no other code base's eval logs (soul-bench export)")

    def check_models(self, metrics_by_model: dict[str, dict], checks: list[CheckSpec]) -> None:
        """Raise ModelCheckError, naming the first check that fails, if the prepared embedded models
        are not fit for the protocol (card ``embedded.checks``; a preset may replace the list).
        ``metrics_by_model``: baseline kind → its metrics."""
        for check, kind in ((check, kind) for check in checks for kind in check.models):
            model = metrics_by_model.get(kind)
            other = metrics_by_model.get(check.minus) if check.minus else {}
            if model is None or other is None:
                raise UserError(f"model check on '{check.metric}' names model '{check.minus if model else kind}', "
                                f"which this run has not evaluated; valid: {', '.join(metrics_by_model)}")
            names = [check.metric]
            if check.is_pattern:  # e.g. mia/*_auc: every metric it matches (none when the run has no
                import fnmatch      # such metrics, e.g. --harness-tasks '': nothing to check then)

                names = sorted(n for n in model if fnmatch.fnmatchcase(n, check.metric))
            for name in names:
                value, subtract = model.get(name), other.get(name) if check.minus else 0.0
                if value is None or subtract is None:
                    raise ModelCheckError(f"model check: metric '{name}' is missing for the {kind} model")
                value -= subtract
                what = f"{name} of the {kind} model" + (f" minus the {check.minus} model's" if check.minus else "")
                missed = check.violated(value)
                if missed:
                    shown = f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
                    raise ModelCheckError(f"{what} is {shown} {missed}: {check.why}".rstrip(": "))


def find_json_records(folder: Path, name: str) -> list[dict] | None:
    """The records of ``<name>.jsonl`` or else ``<name>.json`` in ``folder``; None when neither exists."""
    for suffix in (".jsonl", ".json"):
        if (Path(folder) / f"{name}{suffix}").is_file():
            return read_json_records(Path(folder) / f"{name}{suffix}")
    return None


def chosen_forget_split(forget_split: str | None, valid: list[str], default: str | None = None) -> str:
    """The forget split a run asked for (``default``, else the first valid one, when it asked for
    none), or one line naming the valid ones; a task with a single forget set checks too, so a
    split asked of it is never silently ignored."""
    split = (default or valid[0]) if forget_split is None else forget_split
    if split not in valid:
        raise UserError(f"unknown forget split '{split}'; valid: {', '.join(valid)}")
    return split


def read_json_records(path: Path) -> list[dict]:
    """A data file in the upstream layout: a JSON array of objects, or JSON lines."""
    import json

    text = Path(path).read_text()
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON in {path}: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path} must hold a JSON array (or JSON lines) of objects")
    return records


def load_sibling(task_file: str, module: str):
    """Import ``module``.py from the folder of ``task_file`` — task folders need not be packages.
    Loaded once per file: the module is keyed by its resolved path, so two folders of the same
    name (every task's ``harness/``) never share one."""
    import hashlib
    import importlib.util
    import sys

    path = Path(task_file).with_name(f"{module}.py")
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"soul_bench_task_{path.parent.name}_{module}_{key}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
