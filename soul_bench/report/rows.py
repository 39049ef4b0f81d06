"""How the parts of a leaderboard row read, for every output that shows rows.

A row (built by :func:`soul_bench.report.leaderboard.leaderboard_rows`) is a plain dict: ``kind``,
``method``, ``optimizer``, ``rank``, ``status``, ``n_seeds`` / ``n_failed``, ``mean`` / ``std``
/ ``ci`` / ``values`` per metric, ``baseline_label`` and ``unmet``. The markdown, the console
table, LaTeX and the figures all print the same row, so what a baseline is called, where it goes,
what the ± means and what the status says is decided here once.

Baselines are not fixed to TOFU's target / retain pair: a record's ``kind`` may be any reference
a task declares ("oracle", "base", ...), and the record may carry its own ``baseline_label``.

Results imported from another code base (``soul-bench import``, kind ``imported``) are listed with
the baselines, unranked — another model and another evaluation pipeline — one row per import
label, always labelled "<label> (imported)".
"""

from __future__ import annotations

from collections.abc import Mapping

from soul_bench.report.columns import LeaderboardError, display_name, record_kind

SPREADS = ("std", "ci")
CI_LEVEL = 0.95

# Labels of the baselines TOFU has always had, for records that do not carry a baseline_label.
BASELINE_NOTES = {"target": "target (no unlearning)", "retain": "retain (oracle)"}

# The kind of records a task imports from another code base's eval logs (`soul-bench import`,
# ``Task.import_results``).
IMPORTED_KIND = "imported"


def check_spread(spread: str) -> None:
    """Refuse a ± other than "std" (sample std over seeds) or "ci" (t-interval half-width)."""
    if spread not in SPREADS:
        raise LeaderboardError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")


def spread_note(spread: str = "std", level: float = CI_LEVEL) -> str:
    """What the ± in a table means (one clause)."""
    check_spread(spread)
    if spread == "std":
        return "± is the sample std over seeds"
    return (f"± is the half-width of the {level * 100:g} % Student-t confidence interval of the mean over "
            f"seeds (t·s/√n; none with one seed)")


def spread_of(row: Mapping, name: str, spread: str) -> float | None:
    """The ± of metric ``name`` in ``row``: its sample std or its CI half-width."""
    return row["std"].get(name) if spread == "std" else row.get("ci", {}).get(name)


def seeds_text(row: Mapping) -> str:
    """'3', or '2/3' when a seed failed: the table shows how many seeds the mean stands on."""
    total = row["n_seeds"] + row["n_failed"]
    return str(row["n_seeds"]) if row["n_failed"] == 0 else f"{row['n_seeds']}/{total}"


def status_text(row: Mapping) -> str:
    """The Status cell: the row's status, plus the ranking requirements it misses
    ('ok; unmet: General acc < 0.95× target') — the reason it ranks below cells with better means."""
    unmet = row.get("unmet") or []
    return f"{row['status']}; unmet: {', '.join(unmet)}" if unmet else str(row["status"])


def group_key(record: Mapping) -> tuple:
    """The leaderboard row a record belongs to, as (kind, method, optimizer): an unlearned cell by
    method and optimizer, an imported result by its label (the ``method`` field; its seeds share a
    row), any other baseline by its kind alone."""
    kind = record_kind(record)
    if kind == "unlearned":
        return (kind, record.get("method"), record.get("optimizer"))
    if kind == IMPORTED_KIND:
        return (kind, record.get("method"), None)
    return (kind, None, None)


def baseline_order(kind: str) -> tuple[int, str]:
    """Sort key of baseline kinds: ``target`` (the model before unlearning) first, the task's other
    references by name, imported results last."""
    return (0 if kind == "target" else 2 if kind == IMPORTED_KIND else 1, kind)


def imported_label(row: Mapping) -> str:
    """'NPO (imported)': an imported row is always marked as such, whatever its label."""
    return f"{row.get('method') or 'unnamed'} ({IMPORTED_KIND})"


def baseline_label(row: Mapping) -> str:
    """What a baseline row is called: the records' ``baseline_label``, else TOFU's usual note, else its
    kind; an imported row is '<label> (imported)'."""
    if row["kind"] == IMPORTED_KIND:
        return imported_label(row)
    label = row.get("baseline_label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    return BASELINE_NOTES.get(row["kind"], row["kind"])


def row_name(row: Mapping) -> str:
    """A short name of a row for figure notes: the baseline kind, '<label> (imported)', or 'NPO+AdamW'."""
    if row["kind"] == IMPORTED_KIND:
        return imported_label(row)
    if row["kind"] != "unlearned":
        return str(row["kind"])
    return f"{display_name(row['method'])}+{display_name(row['optimizer'])}"
