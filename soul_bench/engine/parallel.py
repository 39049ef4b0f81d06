"""Data parallelism for one cell over the processes ``accelerate launch`` (or ``torchrun``) starts.

    accelerate launch --num_processes 8 -m soul_bench.cli run --task tofu --model ... --methods npo

Every process holds the whole model (DDP). A global batch of ``batch_size`` sequences is drawn
the same way in every process, as one process would draw it, and process r trains on rows
r, r+N, r+2N, … of it. DDP averages the gradients, so process r's loss is weighted by
N·n_r/n (n_r of the batch's n rows): the averaged gradient is then the row-weighted mean of
the processes' losses — exactly one process's loss for losses that are a mean over sequences
(NPO, SimNPO, IDK's sequence terms), and the mean of per-process token means for a token-mean
cross-entropy (a difference of the order of the spread in answer lengths). Second-order
optimisers estimate the Hessian on their own share and average the estimate over processes
(:meth:`Processes.average_`), so h — like the weights, m and every other optimiser state — is
the same in every process.

Process 0 (the *main* process) does everything else: it prepares or loads the models, evaluates,
runs the probes and writes every file; the others (*followers*) wait for it to send the next
cell to train (:meth:`Processes.send` / :meth:`Processes.receive`).

Process-group set-up is accelerate's (``PartialState``: NCCL on GPUs, gloo on CPUs; it reads the
environment of ``accelerate launch``, ``torchrun``, Slurm and MPI launchers).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from soul_bench.errors import UserError

# A follower waits in a broadcast while the main process evaluates a cell (the harness on a 7B
# model can take an hour); the default timeout (10-30 min) would kill it there.
WAIT_FOR_MAIN = datetime.timedelta(hours=12)


class DataParallel(torch.nn.parallel.DistributedDataParallel):
    """DDP that reads the wrapped model's attributes (``config``, ``peft_config``, …) through, so
    a method's loss may treat it as the model itself."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


@dataclass
class Processes:
    """This process's place among the data-parallel processes (one process: rank 0 of 1, and every
    method below is free: no collective, no wrapper, weight 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @classmethod
    def from_environment(cls, cpu: bool = False) -> "Processes":
        """The processes a launcher started (``WORLD_SIZE`` > 1), or one process. ``cpu``: run on
        CPUs (gloo) even where GPUs are (without GPUs it is implied)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        for variable, engine in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
            if os.environ.get(variable, "false").lower() == "true":
                raise UserError(f"{engine} is not supported yet; launch with DDP (accelerate launch --multi_gpu) "
                                "or, for a model whose full fine-tune does not fit one GPU, train LoRA adapters (lora: in a config)")
        from accelerate import PartialState

        state = PartialState(cpu=cpu or not torch.cuda.is_available(), timeout=WAIT_FOR_MAIN)
        device = state.device if state.device.type != "cpu" else torch.device("cpu")  # not "cpu:0"
        return cls(rank=state.process_index, world_size=state.num_processes, device=device)

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- training ----------------------------------------------------------------------------
    def share(self, picks: list[int]) -> tuple[list[int], float]:
        """This process's rows of a global batch and the weight of its loss (see the module doc).
        A process left without rows (a batch shorter than the process count) trains on the first
        row with weight 0: it must still run the forward and backward DDP synchronises."""
        if not self.parallel:
            return picks, 1.0
        mine = picks[self.rank :: self.world_size]
        if not mine:
            return picks[:1], 0.0
        return mine, self.world_size * len(mine) / len(picks)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.parallel:
            return model
        device = next(model.parameters()).device
        return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over processes of a scalar (a non-finite value anywhere makes it non-finite
        everywhere, so every process stops at the same step)."""
        if not self.parallel:
            return value
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        return value / self.world_size

    def average_(self, tensors: list[torch.Tensor | None]) -> None:
        """Average tensors over processes in place, in one collective (``None`` entries — the same
        in every process — are left out)."""
        present = [t for t in tensors if t is not None]
        if not self.parallel or not present:
            return
        flat = torch.cat([t.reshape(-1).float() for t in present])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in present:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def agree(self, flag: bool) -> bool:
        """The main process's value of ``flag``, in every process."""
        if not self.parallel:
            return flag
        return bool(self.receive(flag if self.is_main else None))

    # -- orders from the main process ---------------------------------------------------------
    def send(self, message) -> None:
        """Main process: give every follower ``message`` (a picklable value; ``None`` = stop)."""
        if self.parallel:
            torch.distributed.broadcast_object_list([message], src=0)

    def receive(self, message=None):
        """The main process's next message (the main process passes and gets its own)."""
        box = [message]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
