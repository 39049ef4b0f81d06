"""TOFU: what the card (task.yaml) cannot say — loading the three data sources into one
schema, and the evaluation protocol of Maini et al. (2024, arXiv 2401.06121; ``locuslab/tofu``).

Data sets after loading (whatever the source):
  forget / retain / full     training-form QA (question, answer) for unlearning and for the embedded models
  eval_forget, eval_retain   TOFU's forgetXX_perturbed / retain_perturbed (paraphrased + perturbed answers)
  eval_real_authors, eval_world_facts   short answers + perturbed answers (no paraphrase)
  holdout                    never-trained authors (MIA non-members), when the source has them
  background                 what the embedded base model learns first (real-authors / world-facts knowledge)
  full_rephrased, retain_rephrased, forget_rephrased   synthetic only: the same facts in a third wording, for the
                             embedded models' training (a tiny model does not generalise a memorised
                             fact to a paraphrase by itself; see synthetic.py)

Privacy probes (card section ``mia``; definitions in ``soul_bench.evaluate.mia``): forget/exact_memorisation and
forget/extraction_strength, and membership-inference attack AUCs mia/<attack>_auc with the
eval forget items as members and the holdout authors as non-members, plus mia/privleak. They
ride on the one likelihood pass (holdout pairs added, token statistics kept for forget and
holdout only); GradNorm adds one backward pass per forget / holdout item. LOSS, ZLib (avg NLL /
zlib length, as mimir / open-unlearning) and the reference attack score answer + EOS; the
token-level ones (Min-K%, Min-K%++, GradNorm, EM, ES) leave the EOS out unless the card says
``mia.include_eos: true`` — open-unlearning's convention, so the numbers compare with theirs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from soul_bench.data import answer_length
from soul_bench.errors import UserError
from soul_bench.evaluate import metrics as M
from soul_bench.evaluate import mia
from soul_bench.evaluate.likelihood import answer_nll, generate_answers
from soul_bench.task import DataSource, Task, TaskData, chosen_forget_split, load_sibling, read_json_records

TM = load_sibling(__file__, "metrics")  # TOFU's formulas (truth ratio, forget quality, model utility)

EVAL_SETS = {"forget": "eval_forget", "retain": "eval_retain", "real_authors": "eval_real_authors", "world_facts": "eval_world_facts"}
HAS_PARAPHRASE = set(TM.PARAPHRASED_SETS)


def _retain_split(forget_split: str) -> str:
    return f"retain{100 - int(forget_split[len('forget'):])}"


def _check_schema(name: str, records: list[dict], keys: tuple[str, ...], where: str) -> list[dict]:
    if not records:
        raise UserError(f"TOFU set '{name}' from {where} is empty")
    for i, record in enumerate(records):
        missing = [k for k in keys if k not in record]
        if missing:
            raise UserError(f"TOFU set '{name}' from {where}: item {i} lacks {', '.join(missing)} (needs {', '.join(keys)})")
    return records


class TofuData(BaseModel):
    """Card section ``data``."""

    model_config = ConfigDict(extra="forbid")
    hub: str = "locuslab/TOFU"
    forget_splits: list[str] = ["forget01", "forget05", "forget10"]
    default_forget_split: str = "forget10"


class TofuEvaluation(BaseModel):
    """Card section ``evaluation``."""

    model_config = ConfigDict(extra="forbid")
    truth_ratio_mean: Literal["geometric", "arithmetic"] = "geometric"  # TOFU's / SOUL's variant
    max_items: int | None = Field(default=None, ge=1)   # legacy TOFU capped every eval set at 300
    generation_margin: int = Field(default=8, ge=0)     # greedy answer budget = reference answer tokens + margin
    max_new_tokens: int | None = Field(default=None, ge=1)  # a fixed budget instead (open-unlearning: 200)


class Tofu(Task):
    section_models = {"data": TofuData, "evaluation": TofuEvaluation}

    # -------------------------------------------------------------- data
    def load_data(self, source: DataSource, forget_split: str | None, limit: int | None, generator_options: dict) -> TaskData:
        data_card = self.options["data"]
        split = chosen_forget_split(forget_split, data_card.forget_splits, data_card.default_forget_split)
        notes = []
        if source.kind == "hub":
            hub_id = source.hub(data_card.hub)
            raw, source = source.load_hub(lambda: self._from_hub(hub_id, split), hub_id, "TOFU data", notes)
        if source.kind == "local":
            raw = self._from_folder(source.path, split)
        if source.kind == "synthetic":
            raw = load_sibling(__file__, "synthetic").generate_tofu(**generator_options)
            if source.auto:
                notes.append("no --data/--model given: using the embedded synthetic TOFU data and tiny model")
        sets = self._standardise(raw, split, limit, where=source.describe())
        return TaskData(sets=sets, source=source.describe(), forget_split=split, notes=notes)

    @staticmethod
    def _from_hub(hub_id: str, split: str) -> dict[str, list[dict]]:
        import datasets

        configs = [split, f"{split}_perturbed", _retain_split(split), "retain_perturbed",
                   "real_authors_perturbed", "world_facts_perturbed"]
        raw = {c: datasets.load_dataset(hub_id, c, split="train").to_list() for c in configs}
        try:
            raw[split.replace("forget", "holdout")] = datasets.load_dataset(hub_id, split.replace("forget", "holdout"), split="train").to_list()
        except Exception:  # older hub revisions have no holdout configs
            pass
        return raw

    @staticmethod
    def _from_folder(folder: Path, split: str) -> dict[str, list[dict]]:
        raw = {}
        for path in sorted(folder.iterdir()):
            if path.suffix in (".json", ".jsonl") and path.is_file():
                raw[path.stem] = read_json_records(path)
        return raw

    @staticmethod
    def _standardise(raw: dict[str, list[dict]], split: str, limit: int | None, where: str) -> dict[str, list[dict]]:
        """Upstream config names → soul-bench set names, with schema checks and the --limit cap."""
        def pick(*names, required=True):
            for name in names:
                if name in raw:
                    return raw[name]
            if required:
                raise UserError(f"TOFU data at {where} lacks '{names[0]}' (looked for {', '.join(n + '.json' for n in names)})")
            return None

        cap = (lambda rows: rows[:limit]) if limit else (lambda rows: rows)
        qa, perturbed = ("question", "answer"), ("question", "answer", "paraphrased_answer", "perturbed_answer")
        short = ("question", "answer", "perturbed_answer")
        sets = {
            "eval_forget": _check_schema("forget", cap(pick(f"{split}_perturbed", split)), perturbed, where),
            "eval_retain": _check_schema("retain_perturbed", cap(pick("retain_perturbed")), perturbed, where),
            "eval_real_authors": _check_schema("real_authors", cap(pick("real_authors_perturbed")), short, where),
            "eval_world_facts": _check_schema("world_facts", cap(pick("world_facts_perturbed")), short, where),
        }
        sets["forget"] = _check_schema(split, cap(pick(split, f"{split}_perturbed")), qa, where)
        sets["retain"] = _check_schema("retain", cap(pick(_retain_split(split))), qa, where)
        sets["full"] = sets["retain"] + sets["forget"]
        holdout = pick(split.replace("forget", "holdout"), split.replace("forget", "holdout") + "_perturbed", required=False)
        if holdout is not None:
            sets["holdout"] = _check_schema("holdout", cap(holdout), qa, where)
        rephrased = pick("full_rephrased", required=False)
        if rephrased is not None:  # synthetic extension: training-only rewordings, aligned with full
            by_question = dict(zip((r["question"] for r in raw["full"]), rephrased)) if "full" in raw else {}
            for name in ("full", "retain", "forget"):
                sets[f"{name}_rephrased"] = [by_question[r["question"]] for r in sets[name] if r["question"] in by_question]
        background = pick("background", required=False)
        sets["background"] = background if background is not None else [
            {"question": r["question"], "answer": r["answer"]} for r in sets["eval_real_authors"] + sets["eval_world_facts"]]
        return sets

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model, tokenizer, fmt, data: TaskData, reference: dict | None = None, batch_size: int = 32):
        options = self.options["evaluation"]
        cap = options.max_items
        eval_sets = {name: data[key][:cap] if cap else data[key] for name, key in EVAL_SETS.items()}

        # One likelihood pass over every (question, answer variant) of every set.
        pairs, slots = [], {}
        for name, items in eval_sets.items():
            k = min(len(item["perturbed_answer"]) for item in items)
            slots[name] = {"gt": [], "para": [], "pert": [], "k": k}
            for item in items:
                slots[name]["gt"].append(len(pairs)); pairs.append((item["question"], item["answer"]))
                if name in HAS_PARAPHRASE:
                    slots[name]["para"].append(len(pairs)); pairs.append((item["question"], item["paraphrased_answer"]))
                slots[name]["pert"].append(list(range(len(pairs), len(pairs) + k)))
                pairs.extend((item["question"], p) for p in item["perturbed_answer"][:k])
        # MIA non-members (never-trained holdout authors) join the same pass; token statistics
        # are kept only for the members (forget ground truths) and the non-members.
        holdout = data.sets.get("holdout")
        holdout = (holdout[:cap] if cap else holdout) or None
        holdout_slots = list(range(len(pairs), len(pairs) + len(holdout or [])))
        pairs.extend((item["question"], item["answer"]) for item in holdout or [])
        clock = time.perf_counter()
        likelihood = answer_nll(model, tokenizer, fmt, pairs, batch_size=batch_size,
                                keep_token_stats=slots["forget"]["gt"] + holdout_slots)
        scores = likelihood["avg_nll"]
        timings = {"likelihood_s": time.perf_counter() - clock, "likelihood_sequences": len(pairs)}

        # One batched greedy-generation pass over every question.
        questions = [(name, item) for name, items in eval_sets.items() for item in items]
        margin = options.generation_margin
        if options.max_new_tokens is not None:
            budgets = [options.max_new_tokens] * len(questions)
        else:
            budgets = [answer_length(tokenizer, fmt, item["question"], item["answer"]) + margin for _, item in questions]
        clock = time.perf_counter()
        generations = generate_answers(model, tokenizer, fmt, [item["question"] for _, item in questions], budgets, batch_size)
        timings["generation_s"] = time.perf_counter() - clock

        results, per_item, cursor = {}, {}, 0
        for name, items in eval_sets.items():
            gt = scores[slots[name]["gt"]]
            pert = scores[np.array(slots[name]["pert"])]
            correct = scores[slots[name]["para"]] if name in HAS_PARAPHRASE else gt
            texts = generations[cursor : cursor + len(items)]
            cursor += len(items)
            rouge = M.rouge_l_recall(texts, [item["answer"] for item in items])
            # the same function turns imported TOFU eval logs into metrics (logs.py)
            set_metrics, stat = TM.eval_set_metrics(name, gt, correct, pert, rouge, mean=options.truth_ratio_mean)
            results.update(set_metrics)
            per_item[name] = {  # the per-item values TOFU's eval logs keep, by item index
                "avg_gt_loss": gt.tolist(), "avg_paraphrased_loss": correct.tolist() if name in HAS_PARAPHRASE else None,
                "average_perturb_loss": pert.tolist(), "truth_ratio_stat": stat.tolist(),
                "rougeL_recall": rouge.tolist(), "generated_text": texts,
            }
        results["model_utility"] = TM.model_utility({key: results[key] for key in TM.harmonic_utility_keys()})
        clock = time.perf_counter()
        mia_metrics, per_item["mia"] = self._mia_probes(model, tokenizer, fmt, data, eval_sets["forget"], holdout,
                                                        likelihood, slots["forget"]["gt"], holdout_slots)
        timings["mia_s"] = time.perf_counter() - clock  # scores from the pass above + GradNorm's backwards
        results.update(mia_metrics)
        results.update(self.reference_metrics(per_item, reference))
        per_item["timings"] = timings  # the runner moves it into the record's timings
        return results, per_item

    def _mia_probes(self, model, tokenizer, fmt, data: TaskData, forget: list[dict], holdout: list[dict] | None,
                    likelihood: dict, forget_slots: list[int], holdout_slots: list[int]) -> tuple[dict, dict]:
        """Memorisation of the forget answers and membership-inference attacks, forget (members)
        vs holdout (non-members): ``soul_bench.evaluate.mia.membership_probes`` on the answers
        (ZLib compresses the answer text; GradNorm scores each (question, answer) pair).
        → (metrics, per_item["mia"] in that function's layout)."""
        options = self.card.spec.mia

        def gradnorm(group):
            items = forget if group == "forget" else holdout
            return mia.gradnorm_scores(model, tokenizer, fmt, [(item["question"], item["answer"]) for item in items],
                                       include_eos=options.include_eos)

        return mia.membership_probes(
            likelihood, forget_slots, [item["answer"] for item in forget],
            holdout_slots if holdout else None, [item["answer"] for item in holdout or []],
            k=options.k, include_eos=options.include_eos, privleak_attack=options.privleak_attack,
            gradnorm=gradnorm if options.gradnorm else None,
            missing_note=f"no holdout set in the task data ({data.source}): membership inference needs never-trained "
                         "non-members (TOFU's holdoutXX), so every mia/* metric is None")

    def reference_metrics(self, per_item: dict, reference: dict | None) -> dict:
        """Metrics against the retain model's per-item values (``reference``; None without one):

        * forget_quality: KS-test p-value between this model's and the retain model's forget-set
          truth-ratio statistics (None without a retain model);
        * mia/reference_auc: the reference attack, score = −(avg NLL − retain avg NLL) per forget
          and holdout item, avg NLL over answer + EOS as LOSS (None without a retain model or a
          holdout set);
        * mia/privleak: MUSE's PrivLeak on the card's ``mia.privleak_attack`` AUC (Min-K%), A'_retain
          from the retain model's AUC, 0.5 without one (None without a holdout set).

        Also records the reference attack's scores / ROC and the retain AUC used by PrivLeak in
        ``per_item["mia"]`` (the runner writes the record after calling this)."""
        out = {"forget_quality": None if reference is None else
               TM.forget_quality(per_item["forget"]["truth_ratio_stat"], reference["forget"]["truth_ratio_stat"])}
        out.update(mia.reference_probes(per_item.get("mia"), (reference or {}).get("mia")))
        return out

    # TOFU's own eval logs (locuslab/tofu, open-unlearning) in and out: logs.py
    def import_results(self, path, retain_path=None, *, name, seed=None, forget_split=None) -> list[dict]:
        return load_sibling(__file__, "logs").import_records(path, retain_path, name=name, seed=seed,
                                                             forget_split=forget_split)

    def export_results(self, records, folder):
        return load_sibling(__file__, "logs").export_records(records, folder)


def load(card):
    return Tofu(card)
