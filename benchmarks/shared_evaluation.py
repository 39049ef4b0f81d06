"""Evaluation shared among data-parallel processes: one model's evaluation time in 1 and in N processes.

    python benchmarks/shared_evaluation.py [--task tofu] [--processes 2]

Runs ``soul-bench run --task T --methods ga --optimizers adamw --steps 1 --fresh-baselines`` twice,
into temporary folders, every process on one thread (``OMP_NUM_THREADS=1``: like processes on
separate GPUs, they do not share a device): once in one process, once under ``accelerate launch
--multi_gpu --num_processes N`` (gloo on CPUs), where the processes evaluate each model together
(``soul_bench.evaluate.sharing``). Prints, per evaluated model (target, retain, the unlearned cell),
the seconds of the task's evaluation and of the lm-eval harness each way, the speed-up (ideal: N)
and how far the metrics differ (the baselines' by float rounding at most: the task's passes run
the same batches, lm-eval averages the same per-document scores in another order; the cell's
also by DDP's float noise in training). Needs N free cores; the embedded models come from the
user's cache (prepared on first use). A measurement: exit 0 whatever it shows (2 on bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_sweep(task: str, processes: int, out: Path) -> float:
    """Wall seconds of the sweep; its records land in ``out/records``."""
    command = ["-m", "soul_bench.cli", "run", "--task", task, "--methods", "ga", "--optimizers", "adamw",
               "--steps", "1", "--fresh-baselines", "--no-progress", "--out", str(out)]
    if processes > 1:
        command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *command]
    tick = time.perf_counter()
    done = subprocess.run([sys.executable, *command], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the sweep in {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - tick


def evaluations(out: Path) -> dict[str, dict]:
    """Record kind (or method × optimiser) → its evaluation seconds and metrics."""
    found = {}
    for path in sorted((out / "records").glob("*.json")):
        record = json.loads(path.read_text())
        label = record["kind"] if record["kind"] != "unlearned" else f"{record['method']} × {record['optimizer']}"
        timings = record.get("timings", {})
        found[label] = {"evaluate_s": timings.get("evaluate_s", 0.0), "harness_s": timings.get("harness_s", 0.0),
                        "metrics": record.get("metrics", {})}
    return found


def largest_difference(a: dict, b: dict) -> float:
    """The largest relative difference between two records' numeric metrics."""
    keys = [k for k in a if isinstance(a[k], (int, float)) and isinstance(b.get(k), (int, float))]
    return max((abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in keys), default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="tofu")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error("--processes must be at least 2")
    with tempfile.TemporaryDirectory(prefix="soul-bench-shared-") as folder:
        one, many = Path(folder) / "one", Path(folder) / "many"
        wall_one = run_sweep(args.task, 1, one)
        wall_many = run_sweep(args.task, args.processes, many)
        alone, shared = evaluations(one), evaluations(many)
    n = args.processes
    print(f"{args.task}: one model's evaluation, 1 process vs {n} (one thread each); ideal speed-up {n}")
    print(f"{'model':<16}{'task eval 1':>12}{f'task eval {n}':>12}{'speed-up':>10}"
          f"{'harness 1':>11}{f'harness {n}':>11}{'speed-up':>10}  metrics")
    for label, base in alone.items():
        other = shared.get(label)
        if other is None:
            continue
        difference = largest_difference(base["metrics"], other["metrics"])
        agree = "identical" if base["metrics"] == other["metrics"] else f"max rel. diff {difference:.1e}"
        speed = base["evaluate_s"] / other["evaluate_s"] if other["evaluate_s"] else float("nan")
        harness = base["harness_s"] / other["harness_s"] if other["harness_s"] else float("nan")
        print(f"{label:<16}{base['evaluate_s']:>12.2f}{other['evaluate_s']:>12.2f}{speed:>9.2f}×"
              f"{base['harness_s']:>11.2f}{other['harness_s']:>11.2f}{harness:>9.2f}×  {agree}")
    print(f"whole sweeps (start-up, loading, unlearning, report included): {wall_one:.0f} s vs {wall_many:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
