"""Refusal answers for preference-style unlearning (PO / IDK, DPO).

A forget question keeps its text; its answer is replaced by a refusal drawn from a shipped
list, deterministically per (seed, item index), so a cell is reproducible. A completion
(prefix → continuation, e.g. the copyright task's "continue this text: …") is refused the
same way: its continuation becomes the refusal.
"""

from __future__ import annotations

import random
from pathlib import Path

REFUSALS_FILE = Path(__file__).with_name("refusals.txt")


def refusal_strings() -> list[str]:
    return [line.strip() for line in REFUSALS_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def with_refusals(examples: list[dict], seed: int = 0, field: str = "answer", lead: str = "") -> list[dict]:
    """Copies of ``examples`` whose ``field`` is ``lead`` + a refusal (aligned index by index):
    ``answer`` of QA examples, ``continuation`` (lead " ") of completions."""
    refusals = refusal_strings()
    rng = random.Random(seed)
    return [{**example, field: lead + rng.choice(refusals)} for example in examples]
