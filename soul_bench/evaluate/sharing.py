"""Evaluation shared among data-parallel processes.

Under ``accelerate launch`` every process ends a cell's training holding the whole unlearned
model (DDP's replica; FSDP's shards gathered and broadcast into a whole copy in each). The runner then evaluates it in all of them at once (:func:`shared_among`):
each batched pass over the model — likelihoods, greedy generation, GradNorm — runs every N-th
of its batches in each process and gathers the per-item results, so every process returns what
one process would, in about 1/N of the time. The batches are the ones one process runs (the
same length-sorted order, the same size), so the numbers do not depend on the process count.
The lm-eval harness shares its documents the same way (``soul_bench.evaluate.harness``).

Passes that draw random numbers (sampled continuations) are not shared: each process draws the
whole set with the same seed, as one process would. Outside :func:`shared_among` (one process)
nothing here does anything.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sharing:
    """This process's part of an evaluation: process ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def shared(self) -> bool:
        return self.world_size > 1

    def mine(self, batches: Sequence) -> list:
        """This process's batches: every ``world_size``-th from the ``rank``-th. Batches sorted
        by length are dealt round-robin, so every process gets as many tokens, give or take a batch."""
        return list(batches[self.rank :: self.world_size])

    def items_of_mine(self, order: Sequence[int], batch_size: int) -> list[int]:
        """The items of this process's batches, when ``order`` is cut into batches of ``batch_size``."""
        return [i for start in self.mine(range(0, len(order), batch_size)) for i in order[start : start + batch_size]]

    def gather(self, results: dict) -> dict:
        """Every process's ``{item: value}`` merged, in every process (a collective: each process
        calls it once per pass, in the same order)."""
        if not self.shared:
            return results
        import torch.distributed

        parts: list = [None] * self.world_size
        torch.distributed.all_gather_object(parts, results)
        merged: dict = {}
        for part in parts:
            merged.update(part)
        return merged


_CURRENT: contextvars.ContextVar[Sharing] = contextvars.ContextVar("soul_bench_evaluation_sharing", default=Sharing())


def current_sharing() -> Sharing:
    """The sharing of the evaluation running now (one process: rank 0 of 1)."""
    return _CURRENT.get()


@contextlib.contextmanager
def shared_among(rank: int, world_size: int) -> Iterator[Sharing]:
    """Within the block, the batched passes share their batches among ``world_size`` processes;
    every one of them must run the same evaluation inside the block, or the gathers wait forever."""
    token = _CURRENT.set(Sharing(rank, world_size))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)
