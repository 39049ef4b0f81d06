"""TOFU eval logs ↔ soul-bench records: import another code base's TOFU results, export ours
(`soul-bench import` / `export`, through ``Tofu.import_results`` / ``export_results`` in task.py).

Two formats are read; both were learnt from the reference code (formats only, no code copied).

**TOFU** (``locuslab/tofu`` ``evaluate_util.py``, ``config/eval_everything.yaml``): one JSON file
per eval set, by default in ``<model>/eval_results/ds_size<N>/``:

    eval_log_forget.json               forget        (paraphrased + perturbed answers)
    eval_log.json                      retain        (paraphrased + perturbed answers)
    eval_real_author_wo_options.json   real_authors  (perturbed answers)
    eval_real_world_wo_options.json    world_facts   (perturbed answers)

plus ``eval_log_aggregated.json`` = ``{file name: that file's content}``, the file TOFU's
``aggregate_eval_stat.py`` reads. Each file maps a field to ``{item index: value}``:
``avg_gt_loss`` (avg NLL of the answer), ``avg_paraphrased_loss``, ``average_perturb_loss`` (one
avg NLL per perturbed answer), ``rougeL_recall``, ``generated_text`` ([prompt, generation, ground
truth]) and sums / token counts soul-bench does not need. On the real-authors and world-facts
files ``avg_paraphrased_loss`` is the *original* answer's loss once more, from a second,
separately batched pass (``base_answer_key: answer``); ``aggregate_eval_stat.py`` takes it as the
truth ratio's correct answer, and so does the importer, to reproduce TOFU's own figures. A
multi-GPU ``evaluate_util.py`` run leaves ``<file stem>_<rank>.json`` shards (merged here by item
index); evaluation during unlearning (``dataloader.py``) writes the same files into
``checkpoint-<step>/`` folders (a folder of such folders imports as one record each).

**open-unlearning** (``locuslab/open-unlearning`` ``src/evals/base.py``,
``configs/eval/tofu_metrics/*.yaml``): ``TOFU_EVAL.json`` = ``{metric: {"agg_value": x,
"value_by_index": {item index: {...}}}}`` for every metric *and* each metric it pre-computes:
``<set>_Q_A_Prob`` (``{"prob", "avg_loss"}`` per item), ``<set>_Q_A_PARA_Prob``,
``<set>_Q_A_PERT_Prob`` (the same, one list entry per perturbed answer), ``<set>_Q_A_ROUGE``
(``rougeL_recall``, ``generation``, ...), with sets ``forget``, ``retain``, ``ra`` (real authors),
``wf`` (world facts). Its truth ratio on real authors / world facts uses the Prob. pass itself
(``ra_Q_A_Prob``), as soul-bench's own evaluation does.

Both are read into the tofu task's ``per_item`` layout (``tasks/tofu/task.py``), and the metrics
come from the functions the task evaluates with (``tasks/tofu/metrics.py``: ``eval_set_metrics``,
``model_utility``, ``forget_quality``), so an imported row and a soul-bench row made from the
same per-item numbers are equal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from soul_bench.errors import UserError
from soul_bench.report.rows import IMPORTED_KIND
from soul_bench.results import RECORD_SCHEMA, content_hash, environment, write_json_atomic

TASK = "tofu"
FORMAT_TOFU = "tofu"
FORMAT_OPEN_UNLEARNING = "open-unlearning"

# soul-bench eval set -> TOFU's eval_task (its file stem), in the order the tofu task evaluates them.
TOFU_FILES = {"forget": "eval_log_forget", "retain": "eval_log", "real_authors": "eval_real_author_wo_options",
              "world_facts": "eval_real_world_wo_options"}
AGGREGATED_FILE = "eval_log_aggregated.json"
OPEN_UNLEARNING_FILE = "TOFU_EVAL.json"
# What aggregate_eval_stat.py reads from every file; generated_text is optional.
TOFU_FIELDS = ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall")


class OpenUnlearningSet(NamedTuple):
    """The TOFU_EVAL.json metrics that hold one eval set's per-item values."""
    prob: str  # avg NLL of the original answer
    paraphrase: str | None  # avg NLL of the paraphrase (forget / retain only)
    perturbed: str  # avg NLL of each perturbed answer
    rouge: str  # ROUGE-L recall and the generation


OPEN_UNLEARNING_SETS = {
    "forget": OpenUnlearningSet("forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob", "forget_Q_A_ROUGE"),
    "retain": OpenUnlearningSet("retain_Q_A_Prob", "retain_Q_A_PARA_Prob", "retain_Q_A_PERT_Prob", "retain_Q_A_ROUGE"),
    "real_authors": OpenUnlearningSet("ra_Q_A_Prob", None, "ra_Q_A_PERT_Prob", "ra_Q_A_ROUGE"),
    "world_facts": OpenUnlearningSet("wf_Q_A_Prob", None, "wf_Q_A_PERT_Prob", "wf_Q_A_ROUGE"),
}

LOOKED_FOR = (f"looked for {', '.join(f + '.json' for f in TOFU_FILES.values())}, {AGGREGATED_FILE} (locuslab/tofu) "
              f"or {OPEN_UNLEARNING_FILE} (open-unlearning), also under eval_results/ds_size*/ and evals/")


@dataclass
class TofuLogs:
    """One model's TOFU evaluation: ``sets`` maps each eval set found to its per-item values in the
    tofu task's ``per_item`` layout (avg_gt_loss, avg_paraphrased_loss — None where the original
    answer's pass serves —, average_perturb_loss, rougeL_recall, generated_text — None if absent)."""

    path: Path  # the folder or file read
    format: str  # FORMAT_TOFU or FORMAT_OPEN_UNLEARNING
    files: list[str]  # the files read, by name
    sets: dict[str, dict]

    def describe(self) -> dict:
        return {"path": str(self.path.resolve()), "format": self.format, "files": self.files}


# =========================================================================== reading


def read_tofu_logs(path: str | Path) -> TofuLogs:
    """The per-item values of one TOFU evaluation at ``path``: a TOFU eval-log folder (or a model
    folder holding ``eval_results/ds_size<N>/``), an ``eval_log_aggregated.json``, or an
    open-unlearning ``TOFU_EVAL.json`` (or the folder holding it, or its ``evals/``).
    Raises :class:`UserError` (one line) when there is none or it is malformed."""
    path = _existing(path)
    located = _locate(path)
    if located is None:
        raise UserError(f"no TOFU eval logs at '{path}' ({LOOKED_FOR})")
    return _read(*located)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"'{path}' does not exist; give a TOFU eval-log folder or an open-unlearning {OPEN_UNLEARNING_FILE}")
    return path


def _locate(path: Path) -> tuple[str, Path] | None:
    """(format, file or folder to read) of the evaluation at ``path``, or None if there is none."""
    if path.is_file():
        return _format_of_file(path)
    for folder in _candidate_folders(path):
        if _tofu_set_files(folder):
            return FORMAT_TOFU, folder
        if (folder / AGGREGATED_FILE).is_file():
            return FORMAT_TOFU, folder / AGGREGATED_FILE
        if (folder / OPEN_UNLEARNING_FILE).is_file():
            return FORMAT_OPEN_UNLEARNING, folder / OPEN_UNLEARNING_FILE
    return None


def _candidate_folders(folder: Path) -> list[Path]:
    """The folder itself, then where the reference code writes logs below a model or experiment
    folder: TOFU's ``eval_results/ds_size<N>/``, open-unlearning's ``evals/``."""
    sized = sorted(p for p in folder.glob("eval_results/ds_size*") if p.is_dir())
    if len(sized) > 1:
        raise UserError(f"'{folder}' holds several TOFU evaluations ({', '.join(p.name for p in sized)}); give one of them")
    return [folder, *sized, folder / "evals"]


def _format_of_file(path: Path) -> tuple[str, Path]:
    """A file given directly: one set's TOFU log stands for its folder; otherwise the content decides."""
    if any(re.fullmatch(rf"{stem}(_\d+)?\.json", path.name) for stem in TOFU_FILES.values()):
        return FORMAT_TOFU, path.parent
    data = _load_json(path)
    if _is_open_unlearning(data):
        return FORMAT_OPEN_UNLEARNING, path
    if isinstance(data, dict) and data and set(data) <= {f"{stem}.json" for stem in TOFU_FILES.values()}:
        return FORMAT_TOFU, path
    raise UserError(f"'{path}' is not a TOFU eval log ({LOOKED_FOR})")


def _is_open_unlearning(data: Any) -> bool:
    return isinstance(data, dict) and any(isinstance(v, dict) and "value_by_index" in v for v in data.values())


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"'{path}' is not valid JSON ({exc})") from None


def _read(fmt: str, where: Path) -> TofuLogs:
    if fmt == FORMAT_OPEN_UNLEARNING:
        return TofuLogs(where, fmt, [where.name], _open_unlearning_sets(_load_json(where), where))
    if where.is_file():
        return TofuLogs(where, fmt, [where.name], _aggregated_sets(_load_json(where), where))
    files = _tofu_set_files(where)
    sets = {name: _tofu_set(_merged_shards(paths), f"{where}/{paths[0].name}") for name, paths in files.items()}
    return TofuLogs(where, fmt, [p.name for paths in files.values() for p in paths], sets)


# --------------------------------------------------------------------------- TOFU


def _tofu_set_files(folder: Path) -> dict[str, list[Path]]:
    """Eval set -> its log file, or its per-rank shards ``<stem>_<rank>.json`` (multi-GPU runs)."""
    if not folder.is_dir():
        return {}
    found = {}
    for name, stem in TOFU_FILES.items():
        whole = folder / f"{stem}.json"
        shards = [p for p in folder.glob(f"{stem}_*.json") if re.fullmatch(rf"{stem}_\d+\.json", p.name)]
        if whole.is_file():
            found[name] = [whole]
        elif shards:
            found[name] = sorted(shards, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return found


def _aggregated_sets(aggregated: Any, where: Path) -> dict[str, dict]:
    """eval_log_aggregated.json: {"<stem>.json": that set's log}."""
    names = [f"{stem}.json" for stem in TOFU_FILES.values()]
    if not isinstance(aggregated, dict) or not any(n in aggregated for n in names):
        raise UserError(f"'{where}' is not a TOFU eval log ({LOOKED_FOR})")
    return {name: _tofu_set(aggregated[f"{stem}.json"], f"{where}: {stem}.json")
            for name, stem in TOFU_FILES.items() if f"{stem}.json" in aggregated}


def _merged_shards(paths: list[Path]) -> Any:
    """One log from its shards: each field's {index: value} maps joined (shards hold different items)."""
    logs = [_load_json(p) for p in paths]
    if len(logs) == 1 or not all(isinstance(log, dict) for log in logs):
        return logs[0]
    merged: dict[str, Any] = {}
    for log in logs:
        for field, values in log.items():
            if isinstance(values, dict) and isinstance(merged.get(field), dict):
                merged[field] = {**merged[field], **values}
            else:
                merged.setdefault(field, values)
    return merged


def _tofu_set(log: Any, where: str) -> dict:
    """One TOFU eval-set log ({field: {index: value}}) -> per-item lists in item-index order."""
    if not isinstance(log, dict):
        raise UserError(f"{where}: not a TOFU eval log (expected a JSON object of fields)")
    missing = [f for f in TOFU_FIELDS if not isinstance(log.get(f), dict)]
    if missing:
        raise UserError(f"{where}: not a TOFU eval log, it lacks {', '.join(missing)} "
                        "(fields written by locuslab/tofu evaluate_util.py)")
    index = _item_index(log["avg_gt_loss"], where, "avg_gt_loss")

    def column(field: str) -> list:
        return _column(log[field], index, where, field)

    texts = column("generated_text") if isinstance(log.get("generated_text"), dict) else None
    return {"avg_gt_loss": _numbers(column("avg_gt_loss"), index, where, "avg_gt_loss"),
            "avg_paraphrased_loss": _numbers(column("avg_paraphrased_loss"), index, where, "avg_paraphrased_loss"),
            "average_perturb_loss": _number_rows(column("average_perturb_loss"), index, where, "average_perturb_loss"),
            "rougeL_recall": _numbers(column("rougeL_recall"), index, where, "rougeL_recall"),
            "generated_text": None if texts is None else [_generation(t) for t in texts]}


def _generation(text: Any) -> str:
    """TOFU keeps [prompt, generation, ground truth]; the generation is what soul-bench keeps."""
    if isinstance(text, (list, tuple)) and len(text) == 3:
        return str(text[1])
    return text if isinstance(text, str) else json.dumps(text)


# --------------------------------------------------------------------------- open-unlearning


def _open_unlearning_sets(data: Any, where: Path) -> dict[str, dict]:
    if not isinstance(data, dict):
        raise UserError(f"'{where}' is not an open-unlearning TOFU_EVAL.json (expected a JSON object of metrics)")
    sets = {}
    for name, metrics in OPEN_UNLEARNING_SETS.items():
        names = [m for m in metrics if m is not None]
        present = [m for m in names if m in data]
        if not present:
            continue
        missing = [m for m in names if m not in data]
        if missing:
            raise UserError(f"{where}: has {present[0]} but not {', '.join(missing)}; the {name} set needs them "
                            "(open-unlearning configs/eval/tofu_metrics/)")
        sets[name] = _open_unlearning_set(data, metrics, where)
    if not sets:
        raise UserError(f"{where}: no TOFU per-item values (looked for "
                        f"{', '.join(m for s in OPEN_UNLEARNING_SETS.values() for m in s if m)})")
    return sets


def _open_unlearning_set(data: dict, metrics: OpenUnlearningSet, where: Path) -> dict:
    prob = _value_by_index(data, metrics.prob, where)
    index = _item_index(prob, where, metrics.prob)

    def entries(metric: str, key: str) -> list:
        values = _column(_value_by_index(data, metric, where), index, where, metric)
        return [_entry(v, key, where, metric, i) for i, v in zip(index, values)]

    gt = _numbers(entries(metrics.prob, "avg_loss"), index, where, metrics.prob)
    para = (None if metrics.paraphrase is None else
            _numbers(entries(metrics.paraphrase, "avg_loss"), index, where, metrics.paraphrase))
    rouge = _value_by_index(data, metrics.rouge, where)
    texts = [v.get("generation") if isinstance(v, dict) else None for v in _column(rouge, index, where, metrics.rouge)]
    return {"avg_gt_loss": gt, "avg_paraphrased_loss": para,
            "average_perturb_loss": _number_rows(entries(metrics.perturbed, "avg_loss"), index, where, metrics.perturbed),
            "rougeL_recall": _numbers(entries(metrics.rouge, "rougeL_recall"), index, where, metrics.rouge),
            "generated_text": texts if all(isinstance(t, str) for t in texts) else None}


def _value_by_index(data: dict, metric: str, where: Path) -> dict:
    result = data.get(metric)
    if not isinstance(result, dict) or not isinstance(result.get("value_by_index"), dict):
        raise UserError(f"{where}: '{metric}' has no per-item values (value_by_index)")
    return result["value_by_index"]


def _entry(value: Any, key: str, where: Path, metric: str, index: str) -> Any:
    if not isinstance(value, dict) or key not in value:
        raise UserError(f"{where}: '{metric}' item {index} has no '{key}'")
    return value[key]


# --------------------------------------------------------------------------- per-item checks


def _item_index(values: Any, where: Any, field: str) -> list[str]:
    """The item indices of a {index: value} map, in numeric order (JSON keeps them as strings)."""
    if not isinstance(values, dict) or not values:
        raise UserError(f"{where}: '{field}' has no items")
    try:
        return sorted(values, key=int)
    except ValueError:
        raise UserError(f"{where}: '{field}' is keyed by something other than item indices") from None


def _column(values: Any, index: list[str], where: Any, field: str) -> list:
    if not isinstance(values, dict) or set(values) != set(index):
        raise UserError(f"{where}: '{field}' does not cover the same items as the answer losses")
    return [values[i] for i in index]


def _number(value: Any, where: Any, field: str, index: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"{where}: '{field}' of item {index} is {value!r}, not a number")
    return float(value)


def _numbers(values: list, index: list[str], where: Any, field: str) -> list[float]:
    return [_number(v, where, field, i) for v, i in zip(values, index)]


def _number_rows(values: list, index: list[str], where: Any, field: str) -> list[list[float]]:
    """One row of perturbed-answer losses per item; TOFU averages them as a rectangular array."""
    rows = []
    for value, i in zip(values, index):
        if not isinstance(value, list) or not value:
            raise UserError(f"{where}: '{field}' of item {i} is not a list of losses")
        rows.append([_number(v, where, field, i) for v in value])
    if len({len(r) for r in rows}) > 1:
        raise UserError(f"{where}: '{field}' has different numbers of perturbed answers per item")
    return rows


# =========================================================================== metrics


def tofu_metric_functions():
    """``metrics.py`` of this folder: the very module the tofu task evaluates with (``load_sibling``
    returns one module object per file)."""
    from soul_bench.task import load_sibling

    return load_sibling(__file__, "metrics")


def _card_section(name: str) -> dict:
    from soul_bench.card import read_card

    return read_card(Path(__file__).with_name("task.yaml")).get(name) or {}


def card_truth_ratio_mean() -> str:
    """The truth-ratio mean soul-bench's TOFU runs use (card ``evaluation.truth_ratio_mean``)."""
    return _card_section("evaluation").get("truth_ratio_mean", "geometric")


def _correct_answer_loss(items: Mapping) -> list[float]:
    """The truth ratio's 'correct' answer: the paraphrase where a log has it (TOFU has it on every
    set, the real-authors / world-facts one being the original answer's second pass), else the
    original answer (soul-bench and open-unlearning on real authors / world facts)."""
    para = items.get("avg_paraphrased_loss")
    return items["avg_gt_loss"] if para is None else para


def _set_metrics(name: str, items: Mapping, mean: str):
    TM = tofu_metric_functions()
    return TM.eval_set_metrics(name, items["avg_gt_loss"], _correct_answer_loss(items),
                               items["average_perturb_loss"], items["rougeL_recall"], mean=mean)


def tofu_metrics(sets: Mapping[str, Mapping], retain_sets: Mapping[str, Mapping] | None = None,
                 truth_ratio_mean: str = "geometric") -> tuple[dict, dict]:
    """soul-bench's TOFU metrics from per-item values (``TofuLogs.sets`` or a record's ``per_item``)
    → (metrics, per_item with ``truth_ratio_stat`` added). Sets that are absent have no metrics;
    ``model_utility`` is None unless retain, real_authors and world_facts are all there;
    ``forget_quality`` is None without ``retain_sets`` (the retain model's values).
    Raises ValueError on numbers the formulas refuse (NaN, mismatched lengths)."""
    TM = tofu_metric_functions()
    metrics: dict[str, Any] = {}
    per_item: dict[str, dict] = {}
    for name in TOFU_FILES:
        if name in sets:
            set_metrics, stat = _set_metrics(name, sets[name], truth_ratio_mean)
            metrics.update(set_metrics)
            per_item[name] = {**_per_item_layout(sets[name]), "truth_ratio_stat": stat.tolist()}
    utility = TM.harmonic_utility_keys()
    metrics["model_utility"] = TM.model_utility({k: metrics[k] for k in utility}) if all(k in metrics for k in utility) else None
    metrics["forget_quality"] = None
    if retain_sets is not None and "forget" in sets:
        _, retain_stat = _set_metrics("forget", retain_sets["forget"], truth_ratio_mean)
        metrics["forget_quality"] = TM.forget_quality(per_item["forget"]["truth_ratio_stat"], retain_stat)
    return metrics, per_item


def _per_item_layout(items: Mapping) -> dict:
    """The tofu task's per_item field order (truth_ratio_stat goes after the perturbed losses)."""
    keys = ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall", "generated_text")
    return {k: items.get(k) for k in keys}


# =========================================================================== import


def import_records(path: str | Path, retain_path: str | Path | None = None, *, name: str, seed: int | None = None,
                   forget_split: str | None = None, truth_ratio_mean: str | None = None) -> list[dict]:
    """soul-bench records (kind ``imported``) from the TOFU eval logs at ``path`` (formats: the
    module docstring): one record, or one per sub-folder when ``path`` is a folder of evaluations
    (TOFU's ``checkpoint-<step>/``; labelled ``<name>/<sub-folder>``).

    ``retain_path``: the retain model's logs; forget quality is the KS test against them (None
    without). ``name``: the row label (the record's ``method``). ``forget_split``: default, the
    ``forgetXX`` named in the path, else None. ``truth_ratio_mean``: default, the tofu card's.
    Everything is read and checked before anything is returned; bad input is a :class:`UserError`.
    """
    label = (name or "").strip()
    if not label:
        raise UserError("an imported result needs a non-empty --name (its row label, e.g. the method)")
    split = _checked_split(forget_split)
    mean = truth_ratio_mean or card_truth_ratio_mean()
    found = _log_sets(_existing(path))
    retain = read_tofu_logs(retain_path) if retain_path is not None else None
    if retain is not None and "forget" not in retain.sets:
        raise UserError(f"the retain logs at '{retain_path}' have no forget set; forget quality compares on it")
    return [_record(logs, retain, f"{label}/{sub}" if sub else label, seed, split or _split_in_path(logs.path), mean)
            for sub, logs in found]


def _log_sets(path: Path) -> list[tuple[str, TofuLogs]]:
    """[("", logs)] for an evaluation at ``path``, else [(sub-folder name, logs)] for each
    sub-folder holding one, in natural order (checkpoint-5 before checkpoint-10)."""
    located = _locate(path)
    if located is not None:
        return [("", _read(*located))]
    if path.is_dir():
        subs = sorted((p for p in path.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
        found = [(sub.name, where) for sub in subs if (where := _locate(sub)) is not None]
        if found:
            return [(name, _read(*where)) for name, where in found]
    raise UserError(f"no TOFU eval logs at '{path}' ({LOOKED_FOR})")


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _checked_split(split: str | None) -> str | None:
    if split is None:
        return None
    valid = _card_section("data").get("forget_splits") or []
    if valid and split not in valid:
        raise UserError(f"unknown forget split '{split}'; valid: {', '.join(valid)}")
    return split


def _split_in_path(path: Path) -> str | None:
    """TOFU names runs after their split (``…_forget10_…``); the last one named in the path, if valid."""
    valid = _card_section("data").get("forget_splits") or []
    named = [s for s in re.findall(r"forget\d+", str(path.resolve())) if s in valid]
    return named[-1] if named else None


def _record(logs: TofuLogs, retain: TofuLogs | None, method: str, seed: int | None, split: str | None,
            mean: str) -> dict:
    """A record in the runner's schema (``Runner.base_record`` + ``evaluate_into``), kind ``imported``."""
    if retain is not None and "forget" in logs.sets:
        _check_same_forget_set(logs, retain)
    try:
        metrics, per_item = tofu_metrics(logs.sets, retain.sets if retain else None, mean)
    except ValueError as exc:  # numbers the formulas refuse
        raise UserError(f"TOFU logs at '{logs.path}': {exc}") from None
    spec = {"task": TASK, "forget_split": split, "kind": IMPORTED_KIND, "method": method, "optimizer": None,
            "seed": seed, "evaluation": {"truth_ratio_mean": mean}}
    source = {**logs.describe(), "retain": retain.describe() if retain else None}
    parts = [TASK, split, IMPORTED_KIND, _slug(method)] + ([f"s{seed}"] if seed is not None else [])
    digest = content_hash(spec, source)[:8]
    return {"schema": RECORD_SCHEMA, "cell_id": "-".join([p for p in parts if p] + [digest]), "kind": IMPORTED_KIND,
            "task": TASK, "method": method, "optimizer": None, "seed": seed, "spec": spec, "imported_from": source,
            "status": "ok", "error": None, "metrics": metrics, "per_item": per_item, "environment": environment(model_ran=False)}


def _check_same_forget_set(logs: TofuLogs, retain: TofuLogs) -> None:
    n, m = len(logs.sets["forget"]["avg_gt_loss"]), len(retain.sets["forget"]["avg_gt_loss"])
    if n != m:  # a KS test across forget splits would be a number about nothing
        raise UserError(f"the forget set has {n} items at '{logs.path}' but {m} in the retain logs at "
                        f"'{retain.path}': not the same forget split")


def _slug(text: str, limit: int = 48) -> str:
    """File-name-safe text (a label in a cell id, a cell id as a folder name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit] or "unnamed"


# =========================================================================== export


def tofu_logs_of(record: Mapping) -> dict[str, dict]:
    """A soul-bench TOFU record's per-item values as TOFU eval logs: {file name: content}.

    Written per TOFU's ``evaluate_util.py``: ``avg_gt_loss``, ``generated_text``, ``rougeL_recall``,
    ``average_perturb_loss``, ``avg_paraphrased_loss``, each ``{item index: value}`` — what
    ``aggregate_eval_stat.py`` reads. Where the record has no separate correct-answer pass (real
    authors / world facts of soul-bench's own runs) ``avg_paraphrased_loss`` repeats
    ``avg_gt_loss``: TOFU's second pass scores that same answer. ``generated_text`` is
    ["", generation, ""]: records keep the generation, not the prompt or the ground truth. Not
    written (records do not keep them): gt_loss, num_token_gt, rouge1_recall, paraphrased_loss,
    perturb_loss, num_token_paraphrased, num_token_perturb, truth_ratio, normalized_gt_loss.
    """
    where = f"record {record.get('cell_id') or '(no cell_id)'}"
    if record.get("task") != TASK:
        raise UserError(f"{where} is of task '{record.get('task')}'; only TOFU records export as TOFU eval logs")
    if record.get("status") != "ok":
        raise UserError(f"{where} has status '{record.get('status')}': no results to export")
    per_item = record.get("per_item") or {}
    sets = [name for name in TOFU_FILES if isinstance(per_item.get(name), dict)]
    if not sets:
        raise UserError(f"{where} has no per-item TOFU values (per_item.forget, .retain, ...) to export")
    return {f"{TOFU_FILES[name]}.json": _tofu_log(per_item[name], f"{where}: per_item.{name}") for name in sets}


def _tofu_log(items: Mapping, where: str) -> dict:
    missing = [f for f in ("avg_gt_loss", "average_perturb_loss", "rougeL_recall") if items.get(f) is None]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    log = {"avg_gt_loss": _by_index(items["avg_gt_loss"])}
    if items.get("generated_text") is not None:
        log["generated_text"] = _by_index([["", text, ""] for text in items["generated_text"]])
    log["rougeL_recall"] = _by_index(items["rougeL_recall"])
    log["average_perturb_loss"] = _by_index(items["average_perturb_loss"])
    log["avg_paraphrased_loss"] = _by_index(_correct_answer_loss(items))
    return log


def _by_index(values: Iterable) -> dict[str, Any]:
    """TOFU keys every value by its item's index in the eval set (a string once in JSON)."""
    return {str(i): v for i, v in enumerate(values)}


def export_tofu_logs(record: Mapping, folder: str | Path) -> list[Path]:
    """Write ``record`` as TOFU eval logs into ``folder``: one file per eval set plus
    ``eval_log_aggregated.json`` (give its path to TOFU's ``aggregate_eval_stat.py`` as
    ``ckpt_result`` or ``retain_result``). Each file is written atomically. → the paths."""
    return _write_logs(tofu_logs_of(record), Path(folder))


def _write_logs(logs: Mapping[str, dict], folder: Path) -> list[Path]:
    paths = []
    for file_name, log in {**logs, AGGREGATED_FILE: dict(logs)}.items():
        write_json_atomic(folder / file_name, log)
        paths.append(folder / file_name)
    return paths


def export_records(records: Iterable[Mapping], folder: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Export every finished TOFU record to ``folder/<cell id>/`` → ({cell id: sub-folder},
    [cell ids of records without results, skipped]). A record of another task is a
    :class:`UserError`, raised before anything is written, as is having nothing to export."""
    exportable, skipped = [], []
    for record in records:
        if record.get("status") != "ok" and record.get("task") == TASK:
            skipped.append(str(record.get("cell_id")))
            continue
        exportable.append((str(record.get("cell_id") or "record"), tofu_logs_of(record)))
    if not exportable:
        raise UserError("no TOFU record with results to export" + (f" ({len(skipped)} without results)" if skipped else ""))
    written: dict[str, Path] = {}
    for cell_id, logs in exportable:
        sub = Path(folder) / _unique(_slug(cell_id, limit=200), written.values())
        _write_logs(logs, sub)
        written[cell_id] = sub
    return written, skipped


def _unique(name: str, taken: Iterable[Path]) -> str:
    names = {p.name for p in taken}
    candidate, n = name, 1
    while candidate in names:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
