"""`make demo`'s wall time, and where it goes (issue 17's goal 6: ≤ 300 s cold, ≤ 60 s warm).

    python benchmarks/demo_speed.py [--cold] [--task tofu] [--methods ga,npo] [--optimizers adamw,sophia]

Runs the demo's command (``soul-bench run --task tofu --methods ga,npo --optimizers adamw,sophia``)
once, as a user would, into a temporary run folder, and splits its wall time:

  prepare     the embedded stages trained by this run (their own seconds; 0 when all were cached);
  baselines   evaluating the target and the retain model (0 when reused from the evaluation cache);
  cells       each unlearned cell's unlearning + evaluation;
  the rest    imports, data, tokenizer, model loading and the report.

``--cold`` points ``SOUL_BENCH_CACHE`` at an empty temporary folder (a fresh machine: every stage
is trained); without it the user's cache is used (warm once the models are prepared). It prints the
wall time ÷ the goal and the share of the wall the model computation (cells + baselines +
prepare) takes. A measurement: the exit status is 0 whatever the verdict (2 on bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOALS_S = {"cold": 300.0, "warm": 60.0}


def model_folders(cache: Path) -> set[Path]:
    return {p.parent for p in (cache / "models").glob("*/*/soul_bench.json")}


def breakdown(records: list[dict], trained_stages: dict[str, float], wall_s: float) -> dict:
    """Seconds per part of a run: prepare (stages trained), baselines (evaluated, not reused),
    each unlearned cell (unlearning + evaluation), and the rest of the wall."""
    baselines = {r["kind"]: (0.0 if r.get("reused_from") else float(r.get("timings", {}).get("evaluate_s", 0.0)))
                 for r in records if r.get("kind") in ("target", "retain")}
    cells = {f"{r['method']} × {r['optimizer']}": float(r["timings"].get("unlearn_s", 0.0)) + float(r["timings"].get("evaluate_s", 0.0))
             for r in records if r.get("kind") == "unlearned" and r.get("status") == "ok"}
    prepare = sum(trained_stages.values())
    compute = prepare + sum(baselines.values()) + sum(cells.values())
    return {"wall_s": wall_s, "prepare_s": prepare, "stages_s": trained_stages, "baselines_s": baselines,
            "cells_s": cells, "rest_s": wall_s - compute, "compute_share": compute / wall_s if wall_s else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="an empty model cache: every embedded stage is trained")
    parser.add_argument("--task", default="tofu")
    parser.add_argument("--methods", default="ga,npo")
    parser.add_argument("--optimizers", default="adamw,sophia")
    parser.add_argument("--json", type=Path, default=None, help="write the breakdown here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="demo_speed_"))
    try:
        return measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args, scratch: Path) -> int:
    from soul_bench.models import cache_root

    env = dict(os.environ)
    cache = scratch / "cache" if args.cold else cache_root()
    env["SOUL_BENCH_CACHE"] = str(cache)
    before = model_folders(cache)
    out = scratch / "run"
    command = [sys.executable, "-m", "soul_bench.cli", "run", "--task", args.task, "--methods", args.methods,
               "--optimizers", args.optimizers, "--out", str(out), "--no-progress"]
    tick = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if done.returncode != 0:
        print(done.stdout[-2000:] + done.stderr[-2000:], file=sys.stderr)
        print(f"the demo's command failed (exit {done.returncode}): {' '.join(command)}", file=sys.stderr)
        return done.returncode
    trained = {}
    for folder in sorted(model_folders(cache) - before):
        meta = json.loads((folder / "soul_bench.json").read_text())
        trained[folder.name] = float(meta.get("seconds") or 0.0)
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    result = breakdown(records, trained, wall)
    mode = "cold" if args.cold or trained else "warm"
    result["mode"], result["goal_s"] = mode, GOALS_S[mode]

    print(f"{args.task} demo ({args.methods} × {args.optimizers}), {mode}: {wall:.0f} s wall")
    print(f"  prepare    {result['prepare_s']:6.1f} s  " + "  ".join(f"{k} {v:.0f}" for k, v in trained.items()))
    print(f"  baselines  {sum(result['baselines_s'].values()):6.1f} s  " + "  ".join(
        f"{k} {'reused' if v == 0 else f'{v:.1f}'}" for k, v in result["baselines_s"].items()))
    print(f"  cells      {sum(result['cells_s'].values()):6.1f} s  " + "  ".join(f"{k} {v:.1f}" for k, v in result["cells_s"].items()))
    print(f"  the rest   {result['rest_s']:6.1f} s  (imports, data, tokenizer, loading, report)")
    print(f"model computation ÷ wall: {result['compute_share']:.2f}")
    print(f"wall ÷ goal ({mode} ≤ {GOALS_S[mode]:.0f} s): {wall / GOALS_S[mode]:.2f}  ({'PASS' if wall <= GOALS_S[mode] else 'FAIL'})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
