"""A leaderboard column: one metric, what "better" means for it, and how its values read.

Every table, figure and statistic of the report starts from the task's metric descriptions;
this module turns them into validated :class:`MetricColumn` objects once, so that the sense of
"better" (and the arrow, the axis label, the bold cell, the rank order) is decided in one place.

A metric description is a dict, or an object with the same attributes (the task card's pydantic
model), with ``name``, ``label``, ``headline``, ``log`` and exactly one notion of better:

* ``direction``: ``"higher"`` or ``"lower"``;
* ``ideal``: a value the metric is best at, whichever side it is missed on — an MIA AUC at 0.5
  (members and non-members look alike), PrivLeak at 0, a hazardous-knowledge multiple-choice
  accuracy at chance (0.25). Neither a maximum nor a minimum is right for these: a model that
  *over*-forgets is as detectable as one that remembers.

It also holds the number formatting every output shares (about three significant digits), so a
value reads the same in the markdown, the console, LaTeX and the figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from soul_bench.errors import UserError

MISSING = "–"
DEFAULT_TRADEOFF = ("model_utility", "forget_quality")
DIRECTIONS = ("higher", "lower")

# How method / optimizer ids look in figures and LaTeX (markdown keeps the ids users type).
DISPLAY_NAMES = {
    "ga": "GA", "graddiff": "GradDiff", "npo": "NPO", "simnpo": "SimNPO", "po": "PO",
    "idk": "IDK", "dpo": "DPO", "kl": "KL", "rmu": "RMU",
    "adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "sophia": "Sophia", "iu": "IU",
}


class LeaderboardError(UserError, ValueError):
    """Bad input to the report (corrupt record, unknown metric name, ...): one clear line."""


# --------------------------------------------------------------------------- values


def as_number(value: Any) -> float | None:
    """A metric value as a float, or None when missing / not a number / NaN (booleans are not numbers)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def format_value(value: Any) -> str:
    """About three significant digits: 0.0123 -> '0.0123', 0.41234 -> '0.412', 1.2e-05 -> '1.2e-05', None -> '–'."""
    v = as_number(value)
    if v is None:
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if 1e3 <= abs(v) < 1e6:
        return f"{v:.0f}"
    return f"{v:.3g}"


def format_cell(mean: Any, std: Any = None) -> str:
    """``mean`` or ``mean ± std`` (when std is known, i.e. several seeds)."""
    if as_number(mean) is None:
        return MISSING
    return format_value(mean) if as_number(std) is None else f"{format_value(mean)} ± {format_value(std)}"


def display_name(name: Any) -> str:
    """A method / optimizer id as it is printed in figures and LaTeX ('npo' -> 'NPO'; unknown ids unchanged)."""
    return MISSING if name is None else DISPLAY_NAMES.get(str(name).lower(), str(name))


def md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (a '|' would start a new column)."""
    return text.replace("|", "\\|").replace("\n", " ")


def record_kind(record: Mapping) -> str:
    """A record's kind: "unlearned", "target", "retain" or any other baseline a task declares.
    Old records without the field were all unlearned cells."""
    return str(record.get("kind") or "unlearned")


def target_weights(record: Mapping) -> str | None:
    """The fingerprint of the target weights a record was made from (None in records that
    predate fingerprints)."""
    spec = record.get("spec")
    weights = spec.get("weights") if isinstance(spec, Mapping) else None
    return weights.get("target") if isinstance(weights, Mapping) else None


def prepare_seed(record: Mapping) -> int | None:
    """The prepare seed of the embedded recipe that made the record's models (None: a given
    model, or a record that predates the field)."""
    embedded = record.get("embedded")
    return embedded.get("prepare_seed") if isinstance(embedded, Mapping) else None


def targets_in_order(records: Iterable[Mapping]) -> list[str]:
    """The distinct target models of ``records`` (their weights' fingerprints, as strings) in the
    order reports number them T0, T1, …: by the embedded prepare seed where the records carry it
    (reproduce chooses its settings on prepare seed 0's target), then in the order they come."""
    first: dict[str, int] = {}
    seeds: dict[str, int] = {}
    for index, record in enumerate(records):
        key = str(target_weights(record))
        first.setdefault(key, index)
        if (seed := prepare_seed(record)) is not None:
            seeds.setdefault(key, seed)
    return sorted(first, key=lambda key: (seeds.get(key, math.inf), first[key]))


# --------------------------------------------------------------------------- metric columns


@dataclass(frozen=True)
class MetricColumn:
    """A validated metric description. Exactly one of ``direction`` ("higher" / "lower") and
    ``ideal`` is set; :meth:`score` folds both into "larger is better" so that ranking, bold
    cells, Pareto fronts and optimizer comparisons never branch on the kind of metric."""

    name: str
    label: str
    direction: str | None
    ideal: float | None
    headline: bool
    log: bool

    @property
    def higher(self) -> bool | None:
        """True / False for a directional metric; None for one with an ideal value (neither end is best)."""
        return None if self.ideal is not None else self.direction == "higher"

    @property
    def arrow(self) -> str:
        """'↑', '↓', or '→0.5' for a metric best at 0.5."""
        if self.ideal is not None:
            return f"→{format_value(self.ideal)}"
        return "↑" if self.direction == "higher" else "↓"

    @property
    def header(self) -> str:
        """The column header: label and arrow, e.g. 'MIA AUC →0.5'."""
        return f"{self.label} {self.arrow}"

    @property
    def better(self) -> str:
        """The sense of better in words: 'higher', 'lower' or 'closest to 0.5'."""
        return f"closest to {format_value(self.ideal)}" if self.ideal is not None else str(self.direction)

    @property
    def axis_label(self) -> str:
        """A figure axis label that says which way is better."""
        if self.ideal is not None:
            return f"{self.label} (best at {format_value(self.ideal)})"
        # "→" reads as "up" on the rotated y label too, so one arrow serves both axes.
        return f"{self.label} (better →)" if self.direction == "higher" else f"{self.label} (← better)"

    def score(self, value: float) -> float:
        """``value`` on a scale where larger is better: the value, its negative, or minus the
        distance to the ideal value."""
        if self.ideal is not None:
            return -abs(value - self.ideal)
        return value if self.direction == "higher" else -value


def _field(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _column(m: Any) -> MetricColumn:
    name = _field(m, "name")
    if not name or not isinstance(name, str):
        raise LeaderboardError(f"metric description without a name: {m!r}")
    direction, ideal = _field(m, "direction"), _field(m, "ideal")
    if ideal is not None:
        if direction is not None:
            raise LeaderboardError(f"metric '{name}' has both a direction ({direction!r}) and an ideal value "
                                   f"({ideal!r}); give one of them")
        value = as_number(ideal)
        if value is None or math.isinf(value):
            raise LeaderboardError(f"metric '{name}': ideal must be a finite number, got {ideal!r}")
        ideal = value
    elif direction is None:
        raise LeaderboardError(f"metric '{name}' needs a direction ('higher' or 'lower') or an ideal value")
    elif direction not in DIRECTIONS:
        raise LeaderboardError(f"metric '{name}': direction must be 'higher' or 'lower', got {direction!r}")
    return MetricColumn(name=name, label=str(_field(m, "label") or name), direction=direction, ideal=ideal,
                        headline=bool(_field(m, "headline", False)), log=bool(_field(m, "log", False)))


def metric_columns(metrics: Iterable[Any]) -> list[MetricColumn]:
    """Validated metric descriptions, headline metrics first (card order kept otherwise).

    Raises :class:`LeaderboardError` for a missing or repeated name, a bad direction, or a
    metric with both or neither of ``direction`` and ``ideal``.
    """
    columns: list[MetricColumn] = []
    seen: set[str] = set()
    for m in metrics:
        column = _column(m)
        if column.name in seen:
            raise LeaderboardError(f"metric '{column.name}' is described twice")
        seen.add(column.name)
        columns.append(column)
    return [m for m in columns if m.headline] + [m for m in columns if not m.headline]


HARNESS_PREFIX = "harness/"
# lm-eval metrics where lower is better; every other lm-eval metric (acc, acc_norm, exact_match,
# f1, bleu, mcc, …) is higher-is-better
HARNESS_LOWER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter"}


def harness_metric_descriptions(records: Iterable[Mapping], known: Iterable[str],
                                card_tasks: Iterable[str] = ()) -> list[dict]:
    """Columns for the metrics of lm-eval tasks the task card does not describe (``--harness-tasks``
    the user chose): ``harness/<task>/<metric>[/<filter>]``, direction from the metric's name,
    standard errors left out. A task the card describes (a column of its own, or one of
    ``card_tasks``, which the card summarises, e.g. WMDP's hazard/acc) keeps the card's choice of
    columns. Sorted by name, after the card's own columns."""
    known = set(known)
    described_tasks = {name[len(HARNESS_PREFIX):].split("/")[0] for name in known if name.startswith(HARNESS_PREFIX)}
    described_tasks |= set(card_tasks)
    names = {name for record in records for name in (record.get("metrics") or {})
             if name.startswith(HARNESS_PREFIX) and name not in known}
    descriptions = []
    for name in sorted(names):
        parts = name[len(HARNESS_PREFIX):].split("/")
        if len(parts) < 2 or parts[1].endswith("_stderr") or parts[0] in described_tasks:
            continue
        direction = "lower" if parts[1] in HARNESS_LOWER else "higher"
        descriptions.append({"name": name, "label": f"{parts[0]} {'/'.join(parts[1:])}", "direction": direction})
    return descriptions


def probe_metric_descriptions(records: Iterable[Mapping], columns: Sequence[MetricColumn]) -> list[dict]:
    """Columns for robustness probes (``--probes``; the records' ``spec.probes`` name them): the
    headline metrics measured again on the attacked model, ``<probe>/<metric>``, in the metric's
    own sense of better, labelled "<label> (<probe>)"."""
    probes = sorted({name for record in records
                     for name in ((record.get("spec") or {}).get("probes") or {})})
    present = {name for record in records for name in (record.get("metrics") or {})}
    return [{"name": f"{probe}/{column.name}", "label": f"{column.label} ({probe})", "direction": column.direction,
             "ideal": column.ideal, "log": column.log}
            for probe in probes for column in headline_columns(list(columns))
            if f"{probe}/{column.name}" in present]


def headline_columns(columns: list[MetricColumn]) -> list[MetricColumn]:
    """The headline columns, or all of them when the task marks none."""
    return [m for m in columns if m.headline] or columns


def columns_named(names: Sequence[str], columns: list[MetricColumn], what: str) -> list[MetricColumn]:
    """The columns called ``names`` (in that order); an unknown name is a one-line error that lists
    the task's metrics. ``what`` names the setting in the message ("rank_by", ...)."""
    by_name = {m.name: m for m in columns}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise LeaderboardError(f"{what} names unknown metric(s) {', '.join(map(str, unknown))}; "
                               f"this task's metrics are: {', '.join(by_name) or '(none)'}")
    return [by_name[n] for n in names]


def tradeoff_axes(tradeoff: Sequence[str] | None, columns: list[MetricColumn]) -> tuple[MetricColumn, MetricColumn] | None:
    """The (x, y) columns of the trade-off scatter. With none given (None), or when the default
    pair is not among the task's metrics, its first two columns (headline first) stand in; None
    when it has fewer than two."""
    if tradeoff is None:
        return (columns[0], columns[1]) if len(columns) >= 2 else None
    if isinstance(tradeoff, str) or len(tradeoff) != 2:
        raise LeaderboardError(f"tradeoff must name two metrics (x, y), got {tradeoff!r}")
    by_name = {m.name: m for m in columns}
    if all(n in by_name for n in tradeoff):
        return by_name[tradeoff[0]], by_name[tradeoff[1]]
    if tuple(tradeoff) == DEFAULT_TRADEOFF:  # a task without these metrics: its first two (headline first)
        return (columns[0], columns[1]) if len(columns) >= 2 else None
    columns_named(tradeoff, columns, "tradeoff")  # raises, naming the unknown ones
    raise AssertionError("unreachable")  # pragma: no cover
