"""The task card (``tasks/<name>/task.yaml``), typed.

A card is validated when the task is loaded: an unknown key or a bad value fails there, in
one line naming the file and the key, instead of being silently ignored (a typo such as
``rank_by: [forget_qualty]`` or ``mia: {incude_eos: true}`` used to pass). Sections the core
reads are typed here; ``data`` and ``evaluation`` belong to the task, which may type them
itself (``Task.section_models``). ``docs/task-card.md`` is the reference card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from soul_bench.errors import UserError

SHAPES = ("qa", "completion", "text")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricSpec(Strict):
    """One leaderboard column. Better is either a ``direction`` (higher / lower) or closer to an
    ``ideal`` value: an MIA AUC is best at 0.5 (neither members nor non-members stand out),
    PrivLeak at 0, a hazard multiple-choice accuracy at chance."""

    name: str
    label: str | None = None
    direction: Literal["higher", "lower"] | None = None
    ideal: float | None = None
    headline: StrictBool = False
    log: StrictBool = False
    description: str | None = None

    @model_validator(mode="after")
    def _one_notion_of_better(self):
        if (self.direction is None) == (self.ideal is None):
            raise ValueError(f"metric '{self.name}' needs either direction (higher / lower) or ideal (a value), not "
                             f"{'both' if self.direction else 'neither'}")
        return self

    @property
    def arrow(self) -> str:
        if self.ideal is not None:
            return f"→{self.ideal:g}"
        return "↑" if self.direction == "higher" else "↓"


class Bounded(Strict):
    """A metric and one bound on it: ``at_least`` or ``at_most``."""

    kind: ClassVar[str] = "bound"  # what the error message calls it
    metric: str
    at_least: float | None = None
    at_most: float | None = None

    @model_validator(mode="after")
    def _one_bound(self):
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError(f"{self.kind} on '{self.metric}' needs exactly one of at_least / at_most")
        return self

    def violated(self, value: float) -> str | None:
        """None when ``value`` meets the bound, else the bound it misses (e.g. '< 0.9')."""
        if self.at_least is not None and value < self.at_least:
            return f"< {self.at_least}"
        if self.at_most is not None and value > self.at_most:
            return f"> {self.at_most}"
        return None


class Requirement(Bounded):
    """A constraint of the ranking, e.g. general accuracy ≥ 0.95 × the target's."""

    kind: ClassVar[str] = "requirement"
    relative_to: Literal["target"] | None = None


class Ranking(Strict):
    """Lexicographic on ``by`` (each metric in its own sense of better); cells that miss a
    ``require`` constraint rank after every cell that meets them all."""

    by: list[str]
    require: list[Requirement] = Field(default_factory=list)


class PromptSpec(Strict):
    """How a QA example becomes a prompt (``soul_bench.data.PromptFormat``): a template with a
    ``{question}`` field and the text between prompt and answer, or ``"chat"`` for the model's
    chat template with an optional system prompt (the template's border decides there)."""

    template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    system_prompt: str | None = None


class ExamplesSpec(Strict):
    """The shape of the task's training examples (what unlearning and the embedded stages see).

    * ``qa``: ``question`` → ``answer`` through the prompt template; labels on the answer + EOS.
    * ``completion``: ``prefix`` → ``continuation``, joined as plain text; labels on the
      continuation + EOS (the border is found on token ids, as for QA).
    * ``text``: ``text`` documents, tokenised and cut into windows of ``max_length`` tokens;
      every token is labelled (language modelling).
    ``sets`` gives a data set its own shape (e.g. a QA task whose background corpus is text).
    """

    shape: Literal["qa", "completion", "text"] = "qa"
    max_length: int | None = Field(default=None, ge=8)
    sets: dict[str, Literal["qa", "completion", "text"]] = Field(default_factory=dict)

    def shape_of(self, set_name: str) -> str:
        return self.sets.get(set_name, self.shape)


class MiaSpec(Strict):
    """Membership-inference probes (``soul_bench.evaluate.mia``)."""

    k: float = Field(default=0.4, gt=0, le=1)
    gradnorm: StrictBool = True
    privleak_attack: Literal["loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"] = "min_k"
    include_eos: StrictBool = False


class BaselineSpec(Strict):
    """A reference model of the task. ``stage``: the embedded stage that provides it offline;
    ``flag``: the run option that names it on the real path."""

    label: str | None = None
    stage: str | None = None
    flag: Literal["model", "retain_model"] | None = None


class CheckSpec(Bounded):
    """A fitness check on the prepared embedded models, run before any unlearning: the value of
    ``metric`` for ``model`` (minus its value for ``minus``, when given) must meet the bound.
    ``model`` may list several baselines (``[target, retain]``): the bound holds for each."""

    kind: ClassVar[str] = "check"
    model: str | list[str] = "target"
    minus: str | None = None
    why: str = ""

    @property
    def models(self) -> list[str]:
        """The baselines the check applies to, in the card's order."""
        return [self.model] if isinstance(self.model, str) else list(self.model)

    # A check may give both bounds (a band, e.g. an MIA AUC within 0.5 ± 0.1), and ``metric`` may be
    # a shell-style pattern (``mia/*_auc``): every metric of the model it matches must meet the bound.
    @model_validator(mode="after")
    def _one_bound(self):
        if self.at_least is None and self.at_most is None:
            raise ValueError(f"check on '{self.metric}' needs at_least and/or at_most")
        if not self.models:
            raise ValueError(f"check on '{self.metric}' names no model; give a baseline, e.g. target or [target, retain]")
        if self.at_least is not None and self.at_most is not None and self.at_least > self.at_most:
            raise ValueError(f"check on '{self.metric}': at_least {self.at_least} > at_most {self.at_most}")
        return self

    @property
    def is_pattern(self) -> bool:
        return any(c in self.metric for c in "*?[")


class StageSpec(Strict):
    init: str = "scratch"
    data: list[str]


class PresetSpec(Strict):
    model: dict[str, Any]
    vocab_size: int = Field(ge=32)
    generator: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    checks: list[CheckSpec] | None = None
    stages: dict[str, StageSpec] | None = None
    # data sets whose text the embedded tokenizer is trained on; None = every set. Naming only sets
    # the retain model sees keeps forget and holdout authors equally foreign to the tokenizer
    # (its merges otherwise favour the forget authors' strings, which occur in more sets).
    tokenizer_sets: list[str] | None = None
    # method hyper-parameters for this embedded model, over the card's `methods` and under the
    # user's: what depends on the model itself, e.g. RMU's layer and steering coefficient, which must
    # exceed the natural activation norm there (hundreds in a tiny model trained at lr 3e-3)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)


class EmbeddedSpec(Strict):
    default_preset: str
    # text fields the embedded BPE tokenizer is trained on; None = every string field of every set
    tokenizer_fields: list[str] | None = None
    checks: list[CheckSpec] = Field(default_factory=list)
    stages: dict[str, StageSpec]
    presets: dict[str, PresetSpec]

    @model_validator(mode="after")
    def _stages_resolve(self):
        for name, stage in self.stages.items():
            if stage.init != "scratch" and stage.init not in self.stages:
                raise ValueError(f"stage '{name}' starts from unknown stage '{stage.init}'; valid: scratch, "
                                 f"{', '.join(self.stages)}")
        if self.default_preset not in self.presets:
            raise ValueError(f"default_preset '{self.default_preset}' is not among the presets ({', '.join(self.presets)})")
        return self


class HarnessSpec(Strict):
    include: list[str] = Field(default_factory=list)
    tasks_by_source: dict[str, list[str]] = Field(default_factory=dict)
    batch_size: int = Field(default=16, ge=1)
    limit: int | None = Field(default=None, ge=1)


def check_held_out(select_on_seeds: list[int], seeds: list[int], seeds_are: str = "the sweep's seeds") -> None:
    """``select_on_seeds`` names some of ``seeds``, and leaves at least one to report on (ValueError)."""
    if not select_on_seeds:
        raise ValueError("select_on_seeds must name at least one seed (or be left out)")
    missing = [s for s in select_on_seeds if s not in seeds]
    if missing:
        raise ValueError(f"select_on_seeds names seed {missing[0]}, not one of {seeds_are} {seeds}")
    if not [s for s in seeds if s not in select_on_seeds]:
        raise ValueError(f"select_on_seeds {select_on_seeds} leaves none of {seeds_are} {seeds} to report on; "
                         f"run more seeds or choose on fewer")


class ReferenceSweep(Strict):
    methods: list[str]
    optimizers: list[str]
    seeds: list[int] = Field(default_factory=lambda: [0])
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # values tried per cell (run setting `grid`)
    # embedded targets to sample (train.seed of the recipe): the results are pooled over them, each
    # (target, seed) a seed, so the CIs and the FO-vs-SO verdict hold beyond one prepared target;
    # with select_on_seeds the grid runs on the first target only and every target runs the choice
    # on the held-out seeds (the choice never sees the other targets)
    prepare_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # robustness probes of every unlearned model (run setting `probes`: relearn, quant), so the
    # committed tables show whether the forgetting survives a relearning or a quantisation attack
    probes: list[str] = Field(default_factory=list)
    # held-out tuning: the grid runs on these seeds only, the report chooses each (method,
    # optimiser)'s setting on them, and only the chosen setting runs the other seeds, which the
    # tables report (no winner's curse, and fewer cells than the whole grid on every seed)
    select_on_seeds: list[int] | None = None

    @model_validator(mode="after")
    def _held_out_seeds(self) -> "ReferenceSweep":
        if self.select_on_seeds is not None:
            check_held_out(self.select_on_seeds, self.seeds)
        return self


class CardSpec(Strict):
    name: str
    description: str = ""
    paper: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)        # the task's own (Task.section_models may type it)
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    examples: ExamplesSpec = Field(default_factory=ExamplesSpec)
    evaluation: dict[str, Any] = Field(default_factory=dict)  # the task's own
    mia: MiaSpec = Field(default_factory=MiaSpec)
    metrics: list[MetricSpec] = Field(default_factory=list)
    rank_by: list[str] | Ranking | None = None
    # which setting represents a (method, optimiser) tuned over several (rank_by's form; default rank_by)
    select_by: list[str] | Ranking | None = None
    tradeoff: tuple[str, str] | None = None
    baselines: dict[str, BaselineSpec] = Field(default_factory=lambda: {
        "target": BaselineSpec(label="target (no unlearning)", stage="target", flag="model"),
        "retain": BaselineSpec(label="retain (oracle)", stage="retain", flag="retain_model")})
    harness: HarnessSpec = Field(default_factory=HarnessSpec)
    reference: ReferenceSweep | None = None
    unlearning: dict[str, Any] = Field(default_factory=dict)  # checked by engine.loop.LoopSettings
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    optimizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    embedded: EmbeddedSpec | None = None

    @field_validator("metrics")
    @classmethod
    def _distinct(cls, metrics: list[MetricSpec]) -> list[MetricSpec]:
        seen = set()
        for metric in metrics:
            if metric.name in seen:
                raise ValueError(f"metric '{metric.name}' is listed twice")
            seen.add(metric.name)
        return metrics

    @model_validator(mode="after")
    def _names_resolve(self):
        names = {m.name for m in self.metrics}
        wanted = list(self.tradeoff or ())
        for ranking in (self.ranking, self.selection):
            wanted += list(ranking.by) + [r.metric for r in ranking.require]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"rank_by / select_by / tradeoff name unknown metric '{unknown[0]}'; this card's metrics: "
                             f"{', '.join(sorted(names)) or '(none)'}")
        if "target" not in self.baselines:
            raise ValueError("baselines must declare 'target' (the model unlearning starts from)")
        return self

    @property
    def ranking(self) -> Ranking:
        """The rank rule: ``rank_by``, else the headline metrics."""
        return as_ranking(self.rank_by) or Ranking(by=[m.name for m in self.metrics if m.headline])

    @property
    def selection(self) -> Ranking:
        """The rule that chooses each (method, optimiser)'s setting among those a sweep tried:
        ``select_by``, else the rank rule."""
        return as_ranking(self.select_by) or self.ranking


def as_ranking(value: list[str] | Ranking | None) -> Ranking | None:
    """A card's ``rank_by`` / ``select_by`` value (names or a whole rule) as a :class:`Ranking`."""
    if value is None or isinstance(value, Ranking):
        return value
    return Ranking(by=value)


def validation_message(path: Path | str, exc: ValidationError, model: type[BaseModel] | None = None,
                       section: str | None = None) -> str:
    """One line: the file, the key (under ``section`` when the model types one section of the
    card), what is wrong (and, for an unknown key of ``model`` itself, its valid keys)."""
    error = exc.errors()[0]
    where = ".".join([*([section] if section else []), *(str(part) for part in error["loc"])]) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = ""
        if model is not None and len(error["loc"]) == 1:
            valid = f"; valid keys: {', '.join(model.model_fields)}"
        return f"task card {path}: unknown key '{where}'{valid}"
    message = error["msg"].removeprefix("Value error, ")
    return f"task card {path}: '{where}': {message}"


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that ``1e-4`` is a float. PyYAML follows YAML 1.1, whose
    floats need a dot (``1.0e-4``), so ``lr: 1e-4`` — how everyone writes a learning rate — came
    back as the string '1e-4'; YAML 1.2 (and JSON) read it as the number."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """YAML text → Python values (:class:`YamlLoader`: safe, and ``1e-4`` is a number)."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML error in one line, with where it is (line, column) when PyYAML knows."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context + ': ' if context else ''}{problem}{where}"


def read_yaml_mapping(path: Path | str, what: str, contents: str = "a mapping") -> dict:
    """A YAML file that must hold a mapping (a task card, a run config): one clear line otherwise."""
    try:
        raw = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{what} '{path}' is not valid YAML: {yaml_error_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                        "save it as UTF-8") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{what} '{path}' must be {contents}")
    return raw


def read_card(path: Path) -> dict:
    return read_yaml_mapping(path, "task card")


def parse_card(raw: dict, path: Path | str) -> CardSpec:
    try:
        return CardSpec(**raw)
    except ValidationError as exc:
        raise UserError(validation_message(path, exc, CardSpec)) from exc


def parse_section(raw: Any, model: type[BaseModel], path: Path | str, section: str) -> BaseModel:
    """Validate a task-owned section (``data``, ``evaluation``) with the task's own model."""
    try:
        return model(**(raw or {}))
    except ValidationError as exc:
        raise UserError(validation_message(path, exc, model, section)) from exc


if __name__ == "__main__":  # python -m soul_bench.card > docs/task-card.schema.json
    import json

    print(json.dumps(CardSpec.model_json_schema(), indent=1, sort_keys=True))
