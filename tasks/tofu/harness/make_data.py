"""Write ``tofu_mc.jsonl``: the local lm-eval multiple-choice task of the embedded TOFU default.

Rerunnable and deterministic: ``python tasks/tofu/harness/make_data.py`` regenerates the
committed file byte for byte. Each line is one question about the *general knowledge* the
embedded base model learns (the ``real_authors_perturbed`` and ``world_facts_perturbed``
sets of ``synthetic.generate_tofu()`` with its default arguments, which are the ``tiny``
preset's): the true answer and its 3 wrong answers as 4 choices, the position of the true
one drawn from a per-question seeded RNG.

Fields: ``id``, ``set`` (real_authors / world_facts), ``question``, ``choices`` (no leading
space: lm-eval's ``target_delimiter`` " " supplies it, as the answer prefix of the prompt
format does), ``gold`` (index of the true answer), ``answer``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from soul_bench.task import load_sibling

HERE = Path(__file__).resolve().parent
OUT = HERE / "tofu_mc.jsonl"
SETS = ("real_authors_perturbed", "world_facts_perturbed")


def _synthetic():
    return load_sibling(str(HERE.parent / "synthetic.py"), "synthetic")


def make_rows() -> list[dict]:
    data = _synthetic().generate_tofu()
    rows = []
    for config in SETS:
        name = config.removesuffix("_perturbed")
        for i, item in enumerate(data[config]):
            wrong = list(item["perturbed_answer"])
            if len(wrong) != 3 or item["answer"] in wrong:
                raise RuntimeError(f"{config}[{i}]: expected 3 wrong answers distinct from the true one")
            gold = random.Random(f"soul-bench/tofu_mc/{name}/{i}").randrange(4)
            choices = wrong[:gold] + [item["answer"]] + wrong[gold:]
            rows.append({"id": f"{name}-{i:03d}", "set": name, "question": item["question"],
                         "choices": choices, "gold": gold, "answer": item["answer"]})
    return rows


def main() -> None:
    rows = make_rows()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {OUT}")


if __name__ == "__main__":
    main()
