"""The rank rule of a leaderboard: which metrics order the cells, and which constraints a cell
must meet to be ranked among the best.

A lexicographic order on forget metrics alone rewards a method that destroys the model: a cell
that "forgets" by losing its general ability would top the table. A task can therefore give
requirements next to the rank metrics, e.g. "general accuracy ≥ 0.95 × the target's"; cells
that meet all of them are ranked first, the others after them (still in rank order) with the
missed requirements named in their row, so nothing is hidden and nothing is silently dropped.

``rank_by`` is either a sequence of metric names (rank only) or a mapping / object with ``by``
(names) and ``require``: a list of ``{"metric": NAME, "at_least": X}`` or ``{"metric": NAME,
"at_most": X}``, optionally with ``"relative_to": "target"`` (the bound is X times the mean of
that metric in the ``target`` baseline row; otherwise X itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from soul_bench.report.columns import LeaderboardError, MetricColumn, as_number, columns_named, format_value

RANK_KEYS = ("by", "require")
REQUIREMENT_KEYS = ("metric", "at_least", "at_most", "relative_to")
RELATIVE_TO = ("target",)


@dataclass(frozen=True)
class Requirement:
    """``column`` ≥ (``at_least``) or ≤ ``bound``, the bound scaled by the target's mean when
    ``relative_to == "target"``."""

    column: MetricColumn
    bound: float
    at_least: bool
    relative_to: str | None = None

    @property
    def bound_text(self) -> str:
        """'0.4', or '0.95× target' for a bound relative to the target baseline."""
        value = format_value(self.bound)
        return f"{value}× {self.relative_to}" if self.relative_to else value

    @property
    def text(self) -> str:
        """The requirement, e.g. 'General acc ≥ 0.95× target'."""
        return f"{self.column.label} {'≥' if self.at_least else '≤'} {self.bound_text}"

    def threshold(self, target: Mapping | None) -> float | None:
        """The bound a value is compared with (needs the target row when relative to it); None
        when the target row has no value of the metric (e.g. a harness metric of a run with the
        harness off): then no row can be judged, and each says so."""
        if self.relative_to is None:
            return self.bound
        if target is None:
            raise LeaderboardError(f"rank requirement '{self.text}' is relative to the target, but there is no "
                                   f"target row among the records")
        reference = target["mean"].get(self.column.name)
        return None if reference is None else self.bound * reference

    def missed_by(self, row: Mapping, target: Mapping | None) -> str | None:
        """None when ``row``'s mean meets the requirement, else a short reason ('General acc < 0.95× target');
        a missing value misses it, and so does every row when the target has no value to compare with."""
        limit = self.threshold(target)
        value = row["mean"].get(self.column.name)
        if limit is None:
            return f"{self.column.label} not checked (the target has no value)"
        if value is None:
            return f"{self.column.label} missing"
        if self.at_least:
            return None if value >= limit else f"{self.column.label} < {self.bound_text}"
        return None if value <= limit else f"{self.column.label} > {self.bound_text}"

    def shortfall(self, row: Mapping, target: Mapping | None) -> float:
        """How far ``row``'s mean misses the requirement, relative to its bound (0 when met; inf
        when the value is missing): 0.1 = 10 % below an at-least bound."""
        limit = self.threshold(target)
        value = row["mean"].get(self.column.name)
        if value is None or limit is None:
            return math.inf
        gap = limit - value if self.at_least else value - limit
        return max(0.0, gap) / (abs(limit) or 1.0)


@dataclass(frozen=True)
class RankRule:
    """Rank metrics (lexicographic, each in its own sense of better) and requirements."""

    by: tuple[MetricColumn, ...]
    require: tuple[Requirement, ...] = ()

    def key(self, row: Mapping) -> tuple:
        """Sort key of a cell on the rank metrics' means (missing values last)."""
        key = []
        for m in self.by:
            v = row["mean"].get(m.name)
            key.append((1, 0.0) if v is None else (0, -m.score(v)))
        return tuple(key)

    def unmet(self, row: Mapping, target: Mapping | None) -> list[str]:
        """The requirements ``row`` misses, as short reasons (empty when it meets them all)."""
        return [reason for r in self.require if (reason := r.missed_by(row, target)) is not None]

    def shortfall(self, row: Mapping, target: Mapping | None) -> float:
        """The summed relative shortfall of ``row`` on every requirement (0 when it meets them all)."""
        return sum(r.shortfall(row, target) for r in self.require)

    def describe(self) -> str:
        """The rule in one sentence part, for the note under a table."""
        if self.by:
            rule = "Ranked by " + ", then ".join(m.header for m in self.by) + " (mean over seeds)"
        else:
            rule = "Unranked (no rank metric given); cells in name order"
        if self.require:
            rule += (f"; cells that meet every requirement ({', '.join(r.text for r in self.require)}) rank "
                     f"before those that miss one (Status names it)")
        return rule


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or not all(isinstance(n, str) for n in value):
        raise LeaderboardError(f"rank_by must list metric names, got {value!r}")
    return list(value)


def _requirement(item: Any, columns: list[MetricColumn]) -> Requirement:
    if isinstance(item, Mapping):
        extra = [str(k) for k in item if k not in REQUIREMENT_KEYS]
        if extra:
            raise LeaderboardError(f"rank_by requirement {dict(item)!r} has unknown key(s) {', '.join(extra)}; "
                                   f"valid: {', '.join(REQUIREMENT_KEYS)}")
    metric = _get(item, "metric")
    if not isinstance(metric, str) or not metric:
        raise LeaderboardError(f"rank_by requirement without a metric name: {item!r}")
    (column,) = columns_named([metric], columns, "rank_by requirement")
    at_least, at_most = _get(item, "at_least"), _get(item, "at_most")
    if (at_least is None) == (at_most is None):
        raise LeaderboardError(f"rank_by requirement on '{metric}' needs exactly one of at_least / at_most")
    bound = as_number(at_least if at_least is not None else at_most)
    if bound is None or math.isinf(bound):
        raise LeaderboardError(f"rank_by requirement on '{metric}': the bound must be a finite number, "
                               f"got {at_least if at_least is not None else at_most!r}")
    relative_to = _get(item, "relative_to")
    if relative_to is not None and relative_to not in RELATIVE_TO:
        raise LeaderboardError(f"rank_by requirement on '{metric}': relative_to must be "
                               f"{' or '.join(map(repr, RELATIVE_TO))} (or absent), got {relative_to!r}")
    return Requirement(column=column, bound=bound, at_least=at_least is not None, relative_to=relative_to)


def rank_rule(rank_by: Any, columns: list[MetricColumn]) -> RankRule:
    """Parse ``rank_by`` (names, or ``{"by": names, "require": [...]}``, or an object with ``by`` /
    ``require``) against the task's columns; a bad name or requirement is a one-line
    :class:`LeaderboardError`."""
    if isinstance(rank_by, Mapping):
        extra = [str(k) for k in rank_by if k not in RANK_KEYS]
        if extra:
            raise LeaderboardError(f"rank_by has unknown key(s) {', '.join(extra)}; valid: {', '.join(RANK_KEYS)}")
        by, require = rank_by.get("by"), rank_by.get("require")
    elif not isinstance(rank_by, (str, Sequence)) and hasattr(rank_by, "by"):
        by, require = rank_by.by, getattr(rank_by, "require", None)
    else:
        by, require = rank_by, None
    by_columns = columns_named(_names(by), columns, "rank_by")
    if require is None:
        require = []
    if isinstance(require, (str, Mapping)) or not isinstance(require, Sequence):
        raise LeaderboardError(f"rank_by require must be a list of requirements, got {require!r}")
    return RankRule(by=tuple(by_columns), require=tuple(_requirement(item, columns) for item in require))


def target_row(rows: Sequence[Mapping]) -> Mapping | None:
    """The ``target`` baseline row (the model before unlearning), if the records have one."""
    return next((r for r in rows if r["kind"] == "target"), None)


def best_cells(rows: list[Mapping], columns: list[MetricColumn]) -> dict[str, set[int]]:
    """metric name -> indices of rows holding the best unlearned mean (only when ≥ 2 cells compete);
    "best" in the column's own sense (closest to the ideal value for a metric that has one)."""
    best: dict[str, set[int]] = {}
    for m in columns:
        cands = [(i, m.score(v)) for i, r in enumerate(rows)
                 if r["kind"] == "unlearned" and r["status"] == "ok" and (v := r["mean"].get(m.name)) is not None]
        if len(cands) < 2:
            continue
        top = max(s for _, s in cands)
        best[m.name] = {i for i, s in cands if s == top}
    return best
