"""Is the embedded default a benchmark that discriminates? Goals 1-3 of issue 17, measured.

Prepares (or finds in the cache: ``$SOUL_BENCH_CACHE`` or ``~/.cache/soul-bench``) the embedded
models of a task preset through the project's own code (``soul_bench.runner.Runner``: the data,
``prepare_embedded`` and the evaluation of the two baselines ``soul-bench run`` does before any
unlearning), then prints, with PASS / FAIL:

1. Range: forget quality of the target against the retain model ≤ 1e-5 (KS test on the forget
   set's truth ratios), and how many forget items / authors each forget split has;
2. Exchangeable non-members: every MIA AUC (``mia/*_auc``) of the retain model in 0.5 ± 0.1 —
   the retain model never saw the forget or the holdout authors, so it cannot tell them apart —
   each with the two-sided p-value of so large a distance from 0.5 by chance (Mann-Whitney, normal
   approximation), since with 50 + 50 items the band is only ±1.7 sd of a chance AUC;
3. Headroom: every Prob. / ROUGE / truth ratio of forget, retain, real_authors, world_facts and
   the harness multiple-choice accuracy of the target and the retain model in [0.3, 0.95].
   The retain model's *forget* Prob. / ROUGE are exempt: it never saw the forget authors, so
   a value near 0 is what an oracle must score (the upper bound, not a floor, is what matters
   for the unlearned models that should approach it); the retain model's forget truth ratio is
   held to the band (it is the reference distribution of forget quality).

It is a measurement: the exit status is 0 whether or not the goals pass (2 on bad usage).

    python benchmarks/embedded_checks.py [--preset tiny] [--forget-split forget10] \
        [--embedded-json '{"generator": {"n_authors": 100}}'] [--json out.json] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FQ_MAX = 1e-5
AUC_BAND = (0.4, 0.6)
HEADROOM = (0.3, 0.95)
HEADROOM_SETS = ("forget", "retain", "real_authors", "world_facts")
HEADROOM_MEASURES = ("prob", "rouge", "truth_ratio")
# (model, metric) pairs judged exempt from the headroom band, and why
EXEMPT = {
    ("retain", "forget/prob"): "the retain model never saw the forget authors: ~0 is the oracle's value",
    ("retain", "forget/rouge"): "the retain model never saw the forget authors: ~0 is the oracle's value",
}


def _split_sizes(task, recipe: dict) -> dict:
    """Forget items and authors of every forget split the card names (synthetic data only)."""
    from soul_bench.task import load_sibling

    options = recipe.get("generator", {})
    synthetic = load_sibling(str(ROOT / "tasks" / task.name / "synthetic.py"), "synthetic")
    data = synthetic.generate_tofu(**options)
    authors = synthetic.author_counts(**options)
    sizes = {}
    for split in task.options["data"].forget_splits:
        sizes[split] = {"items": len(data[split]), "authors": authors[split],
                        "holdout_items": len(data[split.replace("forget", "holdout")])}
    sizes["full"] = {"items": len(data["full"]), "authors": authors["full"]}
    sizes["background"] = {"items": len(data["background"])}
    return sizes


def measure(preset: str | None, forget_split: str, embedded: dict, out: Path, device: str = "cpu",
            models: tuple[str, str] | None = None) -> dict:
    """Prepare (or load from the cache) and evaluate the two baselines. ``models``: (target, retain)
    folders already trained on the synthetic data with the default generator options, evaluated
    instead of preparing (e.g. models cached by an earlier commit)."""
    from soul_bench.runner import Runner
    from soul_bench.spec import SweepSpec

    given = dict(model=models[0], retain_model=models[1], data="synthetic") if models else {}
    spec = SweepSpec(task="tofu", methods=["ga"], optimizers=["adamw"], preset=preset, forget_split=forget_split,
                     embedded=embedded, out=out, device=device, show_progress=False, **given)
    runner = Runner(spec)
    tick = time.perf_counter()
    runner.load_data_and_models()  # data + prepare_embedded (cached when already trained)
    prepare_s = time.perf_counter() - tick
    (out / "records").mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    retain = runner.baseline("retain", runner.retain_path, None)
    target = runner.baseline("target", runner.target_path, retain["per_item"])
    evaluate_s = time.perf_counter() - tick
    stage_seconds, recipe = {}, runner.recipe
    for kind, path in runner.baseline_paths.items():
        info = json.loads((Path(path) / "soul_bench.json").read_text()) if (Path(path) / "soul_bench.json").is_file() else {}
        stage_seconds[kind] = info.get("seconds")
        recipe = recipe or info.get("recipe")
        parent = info.get("parent")
        parents = list(Path(path).parent.glob(f"{parent}-*/soul_bench.json")) if parent not in (None, "scratch") else []
        if kind == "target" and len(parents) == 1:  # the stage it started from (base), when unambiguous
            stage_seconds[parent] = json.loads(parents[0].read_text()).get("seconds")
    recipe = {k: (recipe or {}).get(k) for k in ("name", "model", "vocab_size", "generator", "train", "tokenizer_sets")}
    recipe["generator"] = recipe["generator"] or {}
    return {"recipe": recipe,
            "forget_split": forget_split, "prepare_s": prepare_s, "evaluate_s": evaluate_s,
            "stage_seconds_when_trained": stage_seconds, "paths": runner.baseline_paths,
            "splits": _split_sizes(runner.task, recipe),
            "metrics": {"target": target["metrics"], "retain": retain["metrics"]}}


def chance_auc_p(auc: float, n_members: int, n_nonmembers: int) -> float:
    """Two-sided p-value of an AUC this far from 0.5 when members and non-members are exchangeable:
    AUC = U / (n1·n2) with U the Mann-Whitney statistic, whose null distribution is close to normal
    with mean n1·n2/2 and variance n1·n2·(n1 + n2 + 1)/12 (no ties). With 50 + 50 items the AUC's
    null sd is 0.058, so goal 2's ±0.1 band is ±1.7 sd: p ≈ 0.09 per attack for a retain model
    that cannot tell the two sets apart — read a value just outside the band with its p."""
    from scipy.stats import norm

    sd = math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))
    return float(2.0 * norm.sf(abs(auc - 0.5) / sd))


def judge(result: dict) -> list[dict]:
    """One row per criterion: goal, model, metric, value, bound, status (PASS / FAIL / EXEMPT)."""
    rows = []
    target, retain = result["metrics"]["target"], result["metrics"]["retain"]
    sizes = result.get("splits", {}).get(result.get("forget_split"), {})  # forget (members) and holdout items

    def row(goal, model, metric, value, bound, ok, note=""):
        status = "EXEMPT" if note and (model, metric) in EXEMPT else ("PASS" if ok else "FAIL")
        rows.append({"goal": goal, "model": model, "metric": metric, "value": value, "bound": bound,
                     "status": status, "note": note})

    fq = target.get("forget_quality")
    row(1, "target", "forget_quality", fq, f"<= {FQ_MAX:g}", fq is not None and fq <= FQ_MAX)
    for name, value in sorted(retain.items()):
        if name.startswith("mia/") and name.endswith("_auc"):
            ok = value is not None and AUC_BAND[0] <= value <= AUC_BAND[1]
            row(2, "retain", name, value, f"in [{AUC_BAND[0]}, {AUC_BAND[1]}]", ok)
            if value is not None and sizes.get("items") and sizes.get("holdout_items"):
                rows[-1]["chance_p"] = chance_auc_p(value, sizes["items"], sizes["holdout_items"])
    lo, hi = HEADROOM
    for model, metrics in (("target", target), ("retain", retain)):
        names = [f"{s}/{m}" for s in HEADROOM_SETS for m in HEADROOM_MEASURES]
        names += sorted(k for k in metrics if k.startswith("harness/") and k.endswith("/acc"))
        for name in names:
            value = metrics.get(name)
            ok = value is not None and lo <= value <= hi
            row(3, model, name, value, f"in [{lo}, {hi}]", ok, EXEMPT.get((model, name), ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="embedded preset of the card (default: the card's, tiny)")
    parser.add_argument("--forget-split", default="forget10")
    parser.add_argument("--embedded-json", default="{}", help="overrides of the preset recipe, as JSON")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements and verdicts here")
    parser.add_argument("--out", type=Path, default=None, help="run folder for the two baseline records (default: a temp dir)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs=2, metavar=("TARGET", "RETAIN"), default=None,
                        help="evaluate these trained folders (default generator's data) instead of preparing")
    args = parser.parse_args(argv)
    try:
        embedded = json.loads(args.embedded_json)
    except json.JSONDecodeError as exc:
        print(f"--embedded-json: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="embedded_checks_"))
    result = measure(args.preset, args.forget_split, embedded, out, args.device, args.models)
    rows = judge(result)
    result["verdicts"] = rows
    result["goals"] = {g: all(r["status"] != "FAIL" for r in rows if r["goal"] == g) for g in (1, 2, 3)}

    print(f"\npreset {result['recipe']['name']}  generator {json.dumps(result['recipe']['generator'])}")
    stages = {k: round(v) for k, v in result["stage_seconds_when_trained"].items() if v is not None}
    print(f"prepare {result['prepare_s']:.0f} s (this call; cached stages cost ~0)  "
          f"stage training seconds when trained: {json.dumps(stages)}  "
          f"evaluation of both baselines {result['evaluate_s']:.0f} s")
    print("forget items (authors) per split: " + ", ".join(
        f"{s} {v['items']} ({v.get('authors', '-')})" for s, v in result["splits"].items()))
    print(f"\n{'goal':<5}{'model':<8}{'metric':<30}{'value':>11}  {'bound':<16}status")
    for r in rows:
        value = "None" if r["value"] is None else f"{r['value']:.3g}"
        print(f"{r['goal']:<5}{r['model']:<8}{r['metric']:<30}{value:>11}  {r['bound']:<16}{r['status']}"
              + (f"  ({r['note']})" if r["status"] == "EXEMPT" else "")
              + (f"  (p {r['chance_p']:.2f} by chance)" if "chance_p" in r else ""))
    print("\nsummary: " + "  ".join(f"goal {g} {'PASS' if ok else 'FAIL'}" for g, ok in result["goals"].items())
          + f"  (failing criteria: {sum(r['status'] == 'FAIL' for r in rows)} of {len(rows)})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
