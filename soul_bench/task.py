"""What a task plugin is: a folder with a declarative card (``task.yaml``) and a small
``task.py`` for what the card cannot say.

``task.py`` defines ``load(card) -> Task``. The core only ever talks to a task through
:class:`Task`: load data (hub / local files / offline synthetic, same schema after
loading), name the data each embedded training stage uses, and evaluate a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soul_bench.data import PromptFormat
from soul_bench.errors import UserError


@dataclass
class TaskCard:
    name: str
    description: str
    folder: Path
    raw: dict[str, Any]

    @property
    def metrics(self) -> list[dict]:
        return self.raw.get("metrics", [])

    @property
    def rank_by(self) -> list[str]:
        return self.raw.get("rank_by", [m["name"] for m in self.metrics if m.get("headline")])

    @property
    def tradeoff(self) -> tuple[str, str]:
        x, y = self.raw.get("tradeoff", ["model_utility", "forget_quality"])
        return x, y

    def section(self, name: str) -> dict:
        return dict(self.raw.get(name) or {})


@dataclass
class DataSource:
    """Where task data comes from: ``synthetic`` (offline generator), ``hub`` or ``local`` (a folder)."""

    kind: str
    path: Path | None = None
    auto: bool = False  # chosen by soul-bench, not the user: may fall back to synthetic

    @classmethod
    def parse(cls, text: str | None, have_model: bool) -> "DataSource":
        if text in (None, "", "auto"):
            return cls("hub", auto=True) if have_model else cls("synthetic", auto=True)
        if text in ("synthetic", "hub"):
            return cls(text)
        path = Path(text[len("local:"):] if text.startswith("local:") else text)
        if not path.is_dir():
            raise UserError(f"data folder '{path}' does not exist; --data takes synthetic, hub, auto or a folder of task files")
        return cls("local", path=path.resolve())

    def describe(self) -> str:
        return f"local:{self.path}" if self.kind == "local" else self.kind


@dataclass
class TaskData:
    """Named lists of examples (dicts in the upstream schema) and a note on where they came from."""

    sets: dict[str, list[dict]]
    source: str
    forget_split: str
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> list[dict]:
        return self.sets[name]


class Task:
    """Base class with the card plumbing; a task overrides ``load_data`` and ``evaluate``."""

    def __init__(self, card: TaskCard):
        self.card = card
        self.name = card.name

    def prompt_format(self, override: str | None = None) -> PromptFormat:
        prompt = self.card.section("prompt")
        template = override or prompt.get("template", PromptFormat.template)
        if template != "chat":
            try:
                template.format(question="")
            except (KeyError, IndexError, ValueError) as exc:
                raise UserError(f"prompt template {template!r} is not a valid format string ({exc}); it takes one "
                                "{question} field (write {{ and }} for literal braces), or 'chat'") from exc
            if "{question}" not in template:
                raise UserError(f"prompt template {template!r} has no {{question}} field: the question would be dropped; "
                                "e.g. 'Q: {question} A:' or 'chat'")
        return PromptFormat(template=template, answer_prefix=prompt.get("answer_prefix", PromptFormat.answer_prefix))

    def load_data(self, source: DataSource, forget_split: str | None, limit: int | None, generator_options: dict) -> TaskData:
        raise NotImplementedError

    def evaluate(self, model, tokenizer, fmt: PromptFormat, data: TaskData, reference: dict | None = None,
                 batch_size: int = 32) -> tuple[dict[str, float | None], dict]:
        """→ (metrics, per-item values). ``reference`` is the retain model's per-item values."""
        raise NotImplementedError

    def reference_metrics(self, per_item: dict, reference: dict | None) -> dict:
        """Metrics that compare a model's per-item values with the retain model's (``reference``).
        The runner calls it for the retain model itself with ``reference = per_item``."""
        return {}

    def check_models(self, target_metrics: dict, retain_metrics: dict, thresholds: dict) -> None:
        """Raise ModelCheckError if the prepared embedded models are not fit for the protocol."""


def load_sibling(task_file: str, module: str):
    """Import ``module``.py from the folder of ``task_file`` — task folders need not be packages."""
    import importlib.util
    import sys

    path = Path(task_file).with_name(f"{module}.py")
    name = f"soul_bench_task_{Path(task_file).parent.name}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
