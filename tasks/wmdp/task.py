"""WMDP: what the card (task.yaml) cannot say — loading the corpora, and the evaluation of
Li et al. (2024, arXiv 2403.03218; ``centerforaisafety/wmdp``).

Data sets after loading (whatever the source), every one raw text (``{"text": ...}`` rows;
the card's ``examples: {shape: text}`` cuts them into windows):
  forget     the hazard corpus (upstream ``<domain>-forget-corpus``)
  retain     the general corpus (upstream ``<domain>-retain-corpus``; the WMDP paper's RMU
             runs use wikitext as retain text — any corpus in the same schema works)
  full       forget + retain (what the embedded target is trained on)
  holdout    never-trained hazard-style text, when the source has it (MIA non-members)

Evaluation: one likelihood pass over windows of the forget, retain and holdout documents
(at most ``evaluation.max_documents`` of each) → perplexities, exact memorisation of the
forget text and the membership-inference attacks (members = forget windows, non-members =
holdout windows; ``soul_bench.evaluate.mia.membership_probes``). The multiple-choice
accuracies come from lm-evaluation-harness (card ``harness``): the hub's ``wmdp_bio`` /
``wmdp_cyber`` / ``wmdp_chem`` and ``mmlu`` on real models, the embedded world's cloze
questions ``wmdp_syn_hazard`` / ``wmdp_syn_general`` offline; :meth:`Wmdp.summarise_harness`
averages them into ``hazard/acc`` and ``general/acc``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from soul_bench.errors import UserError
from soul_bench.evaluate.corpus import corpus_probes
from soul_bench.task import DataSource, Task, TaskData, chosen_forget_split, find_json_records, load_sibling

GROUPS = ("forget", "retain", "holdout")


class WmdpData(BaseModel):
    """Card section ``data``."""

    model_config = ConfigDict(extra="forbid")
    hub: str = "cais/wmdp-corpora"
    corpora: dict[str, tuple[str, str]]
    default_forget_split: str = "synthetic"
    holdout: str | None = "holdout_corpus"


class WmdpEvaluation(BaseModel):
    """Card section ``evaluation``."""

    model_config = ConfigDict(extra="forbid")
    max_documents: int | None = Field(default=200, ge=1)
    hazard_tasks: list[str] = Field(default_factory=list)
    general_tasks: list[str] = Field(default_factory=list)


def _texts(rows: list[dict], name: str, where: str) -> list[dict]:
    if not rows:
        raise UserError(f"WMDP corpus '{name}' from {where} is empty")
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str):
            raise UserError(f"WMDP corpus '{name}' from {where}: row {i} has no 'text' string (upstream schema: text)")
    return [{"text": row["text"]} for row in rows]


class Wmdp(Task):
    section_models = {"data": WmdpData, "evaluation": WmdpEvaluation}

    # -------------------------------------------------------------- data
    def load_data(self, source: DataSource, forget_split: str | None, limit: int | None, generator_options: dict) -> TaskData:
        data_card = self.options["data"]
        split = chosen_forget_split(forget_split, list(data_card.corpora), data_card.default_forget_split)
        forget_name, retain_name = data_card.corpora[split]
        notes = []
        if source.kind == "hub":
            hub_id = source.hub(data_card.hub)
            raw, source = source.load_hub(lambda: self._from_hub(hub_id, forget_name, retain_name),
                                          f"{hub_id} ({forget_name}, {retain_name})", "WMDP world", notes)
        if source.kind == "synthetic":
            generated = load_sibling(__file__, "synthetic").generate_wmdp(**generator_options)
            raw = {"forget": generated["forget_corpus"], "retain": generated["retain_corpus"],
                   "holdout": generated["holdout_corpus"]}
            split = "synthetic"
            if source.auto:
                notes.append("no --data/--model given: using the embedded synthetic WMDP world and tiny model")
        elif source.kind == "local":
            raw = self._from_folder(source.path, forget_name, retain_name, data_card.holdout)
        where = source.describe()
        sets = {name: _texts(rows[:limit], name, where) for name, rows in raw.items() if rows is not None}
        sets["full"] = sets["forget"] + sets["retain"]
        return TaskData(sets=sets, source=where, forget_split=split, notes=notes)

    @staticmethod
    def _from_hub(hub_id: str, forget_name: str, retain_name: str) -> dict:
        import datasets

        return {"forget": datasets.load_dataset(hub_id, forget_name, split="train").to_list(),
                "retain": datasets.load_dataset(hub_id, retain_name, split="train").to_list()}

    @staticmethod
    def _from_folder(folder: Path, forget_name: str, retain_name: str, holdout_name: str | None) -> dict:
        def find(name: str, required: bool = True):
            rows = find_json_records(folder, name)
            if rows is None and required:
                raise UserError(f"WMDP data folder {folder} lacks {name}.jsonl (or .json): rows with a 'text' field")
            return rows

        return {"forget": find(forget_name), "retain": find(retain_name),
                "holdout": find(holdout_name, required=False) if holdout_name else None}

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model, tokenizer, fmt, data: TaskData, reference: dict | None = None, batch_size: int = 32):
        cap = self.options["evaluation"].max_documents
        corpora = {group: (data.sets.get(group) or [])[:cap] for group in GROUPS}
        results, per_item = corpus_probes(
            model, tokenizer, fmt, corpora, self.card.spec.mia, self.card.spec.examples.max_length, batch_size,
            missing_note=f"no holdout corpus in the task data ({data.source}): membership inference needs "
                         "never-trained hazard-style text, so every mia/* metric is None")
        results.update(self.reference_metrics(per_item, reference))
        return results, per_item


    def summarise_harness(self, harness_metrics: dict[str, float]) -> dict[str, float | None]:
        """``hazard/acc`` / ``general/acc``: the mean accuracy of the card's hazard / general lm-eval
        tasks that ran (None when none did), so one column serves the embedded and the real path."""
        options = self.options["evaluation"]
        out = {}
        for name, tasks in (("hazard/acc", options.hazard_tasks), ("general/acc", options.general_tasks)):
            values = [harness_metrics[f"harness/{t}/acc"] for t in tasks if harness_metrics.get(f"harness/{t}/acc") is not None]
            out[name] = float(np.mean(values)) if values else None
        return out


def load(card):
    return Wmdp(card)
