"""Preparing the embedded models: useful (label) tokens per second against a bare PyTorch loop.

    python benchmarks/prepare_speed.py [--task tofu] [--preset tiny] [--stage target] [--steps 60]

On one stage of an embedded preset — the same model shape, data, batch size and learning rate
the stage trains with — three phases, each in its own process, time the same number of steps:

  bare     a plain loop: shuffled batches padded to their longest row, forward, backward,
           gradient clipping, AdamW (what anyone would write first);
  prepare  the project's stage training as ``soul_bench.prepare`` runs it (``run_loop`` with the
           stage's loop settings), with the recipe's ``group_by_length`` as it is;
  grouped  the same with ``group_by_length: true`` (batches of similar length: less padding).

Each prints answer (label) tokens per second, the share of label and of real (non-pad) tokens
in the padded batches, and the ratio to the bare loop (issue 17's goal: prepare ≥ 0.8× bare).
A measurement: the exit status is 0 whatever the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

IGNORE = -100


def stage_inputs(args):
    """(recipe, model-shape recipe, tokenizer, encoded stage data, stage train settings)."""
    from soul_bench import registry
    from soul_bench.models import train_tokenizer
    from soul_bench.prepare import embedded_preset, encode_stage, present_sets, stage_train_settings, tokenizer_texts
    from soul_bench.task import DataSource

    task = registry.load_task(args.task)
    recipe = embedded_preset(task, args.preset)
    if args.stage not in recipe["stages"]:
        raise SystemExit(f"error: preset '{recipe['name']}' has no stage '{args.stage}'; valid: {', '.join(recipe['stages'])}")
    data = task.load_data(DataSource.parse("synthetic", have_model=False), None, None, recipe.get("generator", {}))
    fmt = task.prompt_format(None, None, None)
    tokenizer = train_tokenizer(tokenizer_texts(task, data, recipe), recipe["vocab_size"])
    names = present_sets(data, recipe["stages"][args.stage]["data"], f"stage '{args.stage}'")
    encoded = encode_stage(task, data, names, tokenizer, fmt)
    return recipe, tokenizer, encoded, stage_train_settings(recipe.get("train", {}), args.stage, recipe["stages"])


def phase(args) -> dict:
    from soul_bench.data import collate
    from soul_bench.engine.loop import run_loop
    from soul_bench.engine.methods import FineTune
    from soul_bench.models import build_tiny_llama
    from soul_bench.lm import mean_token_nll
    from soul_bench.prepare import stage_loop_settings

    recipe, tokenizer, encoded, stage_train = stage_inputs(args)
    settings = stage_loop_settings(stage_train)
    if args.phase == "grouped":
        settings = dataclasses.replace(settings, group_by_length=True)
    settings = dataclasses.replace(settings, steps=args.steps, epochs=None)
    model = build_tiny_llama(tokenizer, **recipe["model"], seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage_train.get("lr", 1e-3), weight_decay=0.0)
    counts = {"label": 0, "real": 0, "padded": 0}

    def count(batch) -> None:
        counts["label"] += int((batch["labels"] != IGNORE).sum())
        counts["real"] += int(batch["attention_mask"].sum())
        counts["padded"] += batch["input_ids"].numel()

    if args.phase == "bare":
        generator = torch.Generator().manual_seed(0)
        order = []
        model.train()
        start = time.perf_counter()
        for _ in range(args.steps):
            if len(order) < settings.batch_size:
                order += torch.randperm(len(encoded), generator=generator).tolist()
            picks, order = order[: settings.batch_size], order[settings.batch_size :]
            batch = collate([encoded[i] for i in picks], tokenizer.pad_token_id)
            count(batch)
            loss = mean_token_nll(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
    else:
        class Counted(FineTune):  # the stage's own loss, counting the tokens of every batch it sees
            def loss(self, model, inputs, reference=None):
                count(inputs.forget)
                return super().loss(model, inputs, reference)

        result = run_loop(model, Counted(), optimizer, encoded, settings, tokenizer.pad_token_id, show_progress=False)
        seconds = result.seconds
    return {"phase": args.phase, "seconds": seconds, "label_tokens_per_s": counts["label"] / seconds,
            "label_share": counts["label"] / counts["padded"], "real_share": counts["real"] / counts["padded"],
            "examples": len(encoded), "batch_size": settings.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="tofu")
    parser.add_argument("--preset", default=None, help="embedded preset (default: the card's)")
    parser.add_argument("--stage", default="target")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--phase", choices=["bare", "prepare", "grouped"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    results = {}
    for name in ("bare", "prepare", "grouped"):
        command = [sys.executable, __file__, "--phase", name, "--task", args.task, "--stage", args.stage,
                   "--steps", str(args.steps)] + (["--preset", args.preset] if args.preset else [])
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            sys.stderr.write(run.stderr[-3000:])
            raise SystemExit(run.returncode)
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    first = results["bare"]
    print(f"{args.task} embedded '{args.preset or 'default'}' preset, stage {args.stage}: {first['examples']} examples, "
          f"batch {first['batch_size']}, {args.steps} steps per phase")
    for name, r in results.items():
        print(f"  {name:8s} {r['label_tokens_per_s']:8.0f} label tok/s   label share {r['label_share']:.3f}   "
              f"real (non-pad) share {r['real_share']:.3f}   {r['seconds']:.1f} s")
    for name in ("prepare", "grouped"):
        ratio = results[name]["label_tokens_per_s"] / first["label_tokens_per_s"]
        print(f"{name} ÷ bare label tok/s: {ratio:.3f}  (goal ≥ 0.8)")


if __name__ == "__main__":
    main()
