"""GradNorm speed: per-item backward passes vs batched per-sample gradients (torch.func), same scores.

    python benchmarks/gradnorm_speed.py [--items 64] [--batch-size N] [--repeats 3] [--hidden 256 --layers 4]
                                        [--device cpu] [--threads 1]

On a Llama of the embedded TOFU 'tiny' preset's size (tasks/tofu/task.yaml, embedded.presets.tiny:
hidden 256, 4 layers, 4 heads, BPE vocabulary 1500), scores --items synthetic TOFU questions
with ``soul_bench.evaluate.mia.gradnorm_scores`` twice — gradnorm_batch_size=1 (one forward +
backward per item) and --batch-size (default: automatic, from the per-sample gradient budget) —
and prints items/s of both (the fastest of --repeats passes, taking turns), their ratio, and the
largest relative difference between the scores. The model is untrained (speed does not depend on it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def build(args):
    from soul_bench.models import build_tiny_llama, train_tokenizer
    from soul_bench.task import load_sibling

    synthetic = load_sibling(str(Path(__file__).resolve().parents[1] / "tasks" / "tofu" / "task.py"), "synthetic")
    rows = synthetic.generate_tofu()["full"]
    tokenizer = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], args.vocab_size)
    model = build_tiny_llama(tokenizer, hidden_size=args.hidden, layers=args.layers, heads=args.heads, seed=0)
    pairs = [(r["question"], r["answer"]) for r in rows[: args.items]]
    return model.to(args.device), tokenizer, pairs


def timed_scores(model, tokenizer, pairs, batch_size: int | None) -> tuple[np.ndarray, float]:
    """(scores, seconds) of one GradNorm pass over ``pairs``."""
    from soul_bench.data import PromptFormat
    from soul_bench.evaluate.mia import gradnorm_scores

    synchronise(model)
    start = time.perf_counter()
    scores = gradnorm_scores(model, tokenizer, PromptFormat(), pairs, gradnorm_batch_size=batch_size)
    synchronise(model)
    return scores, time.perf_counter() - start


def best_of(repeats: int, model, tokenizer, pairs, batch_sizes) -> list[tuple[np.ndarray, float]]:
    """Per batch size, (scores, fastest seconds) over ``repeats`` passes, the sizes taking turns so
    that a busy spell of the machine hits them alike. A warm-up on a few items first (first-call
    costs: kernels, allocator, torch.func set-up)."""
    for batch_size in batch_sizes:
        timed_scores(model, tokenizer, pairs[:4], batch_size)
    best = [(None, float("inf"))] * len(batch_sizes)
    for _ in range(repeats):
        for k, batch_size in enumerate(batch_sizes):
            scores, seconds = timed_scores(model, tokenizer, pairs, batch_size)
            best[k] = (scores, min(seconds, best[k][1]))
    return best


def synchronise(model) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="items per batched pass (default: automatic)")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each path; the fastest counts")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=1500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own; 1 on a machine whose cores are busy)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from soul_bench.evaluate.mia import automatic_gradnorm_batch_size

    model, tokenizer, pairs = build(args)
    batch_size = args.batch_size or automatic_gradnorm_batch_size(list(model.parameters()))
    (per_item, per_item_s), (batched, batched_s) = best_of(args.repeats, model, tokenizer, pairs, [1, args.batch_size])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.hidden}/{args.layers}/{args.heads} ({n_params / 1e6:.1f}M parameters), {len(pairs)} items, "
          f"device {args.device}, threads {torch.get_num_threads()}, fastest of {args.repeats}")
    print(f"  per-item (B = 1)  {len(pairs) / per_item_s:8.1f} items/s  ({per_item_s:.2f} s)")
    print(f"  batched  (B = {batch_size}) {len(pairs) / batched_s:8.1f} items/s  ({batched_s:.2f} s)")
    print(f"  speed-up batched ÷ per-item: {per_item_s / batched_s:.2f}×")
    print(f"  largest relative score difference: {np.max(np.abs(batched / per_item - 1)):.1e}")


if __name__ == "__main__":
    main()
