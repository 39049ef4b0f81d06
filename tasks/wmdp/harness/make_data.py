"""Write ``wmdp_syn_hazard.jsonl`` / ``wmdp_syn_general.jsonl``: the local lm-eval tasks of the embedded WMDP default.

Rerunnable and deterministic: ``python tasks/wmdp/harness/make_data.py`` regenerates the
committed files byte for byte. Each line is one 4-choice cloze question of
``synthetic.generate_wmdp()`` with its default arguments: ``hazard_mcq`` (facts of the
forget corpus; an unlearned model should score chance, 0.25) and ``general_mcq`` (facts
of the retain corpus; should hold).

Fields: ``id``, ``subject`` (hazard / general), ``question`` (the canonical sentence up to
the value), ``choices`` (4 values, no leading space: lm-eval's ``target_delimiter`` " "
supplies it), ``answer`` (index of the true value).
"""

from __future__ import annotations

import json
from pathlib import Path

from soul_bench.task import load_sibling

HERE = Path(__file__).resolve().parent
FILES = {"hazard_mcq": HERE / "wmdp_syn_hazard.jsonl", "general_mcq": HERE / "wmdp_syn_general.jsonl"}


def _synthetic():
    return load_sibling(str(HERE.parent / "synthetic.py"), "synthetic")


def make_rows() -> dict[str, list[dict]]:
    """``{set: rows}`` for the two question sets (keys of :data:`FILES`)."""
    data = _synthetic().generate_wmdp()
    return {name: data[name] for name in FILES}


def render(rows: list[dict]) -> str:
    """The file text of ``rows``: one JSON object a line (ASCII)."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    for name, rows in make_rows().items():
        FILES[name].write_text(render(rows), encoding="utf-8")
        print(f"wrote {len(rows)} questions to {FILES[name]}")


if __name__ == "__main__":
    main()
