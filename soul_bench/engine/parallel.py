"""Data parallelism for one cell over the processes ``accelerate launch`` (or ``torchrun``) starts.

    accelerate launch --multi_gpu --num_processes 8 -m soul_bench.cli run --model ... --methods npo
    accelerate launch --use_fsdp --num_processes 8 -m soul_bench.cli run --model ... --methods npo

With ``--multi_gpu`` every process holds the whole model (DDP). With ``--use_fsdp`` every
decoder layer's parameters — and with them the gradients and every optimiser state, Sophia's h
and m included — are sharded over the processes (torch FSDP2, ``fully_shard``); a layer's full
weights exist only while it computes. A global batch of ``batch_size`` sequences is drawn
the same way in every process, as one process would draw it, and process r trains on rows
r, r+N, r+2N, … of it. DDP averages the gradients, so process r's loss is weighted by
N·n_r/n (n_r of the batch's n rows): the averaged gradient is then the row-weighted mean of
the processes' losses — exactly one process's loss for losses that are a mean over sequences
(NPO, SimNPO, IDK's sequence terms), and the mean of per-process token means for a token-mean
cross-entropy (a difference of the order of the spread in answer lengths).

Sophia's Hessian estimate is one estimate over the global batch, as one process would make it:
Gauss-Newton-Bartlett averages the processes' sampled-label gradients, each weighted by its
share of the batch's answer tokens, before squaring (:meth:`Processes.gradients`; N = the
global token count); Hutchinson's u ⊙ (H·u) is linear in the loss, so the processes' estimates
(the same u everywhere) are averaged (:meth:`Processes.average_`; DDP only — FSDP has no
double backward).

Process 0 (the *main* process) does everything else: it prepares or loads the models, evaluates
(under FSDP on the full weights gathered to it after training, :meth:`Processes.gather_weights`),
runs the probes and writes every file; the others (*followers*) wait for it to send the next
cell to train (:meth:`Processes.send` / :meth:`Processes.receive`).

Process-group set-up is accelerate's (``PartialState``: NCCL on GPUs, gloo on CPUs; it reads the
environment of ``accelerate launch``, ``torchrun``, Slurm and MPI launchers).
"""

from __future__ import annotations

import atexit
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


def leave_together() -> None:
    """At exit: wait for every process, then tear the process group down. A process that exits
    while the group is still up closes its sockets under the others; gloo may then abort a peer
    that is still shutting down (SIGABRT in the main process, seen after a successful sweep)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        torch.distributed.barrier()
    except RuntimeError:
        pass  # a peer is gone: the run has failed already and says so; nothing left to wait for
    finally:
        torch.distributed.destroy_process_group()


@dataclass
class Processes:
    """This process's place among the data-parallel processes (one process: rank 0 of 1, and every
    method below is free: no collective, no wrapper, weight 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None
    sharded: bool = False  # FSDP: parameters, gradients and optimiser states sharded over the processes

    @classmethod
    def from_environment(cls, cpu: bool = False) -> "Processes":
        """The processes a launcher started (``WORLD_SIZE`` > 1), or one process. ``cpu``: run on
        CPUs (gloo) even where GPUs are (without GPUs it is implied)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            raise UserError("DeepSpeed is not supported; launch with DDP (accelerate launch --multi_gpu) or, for a model "
                            "whose full fine-tune does not fit one GPU, FSDP (accelerate launch --use_fsdp)")
        from accelerate import PartialState

        state = PartialState(cpu=cpu or not torch.cuda.is_available(), timeout=WAIT_FOR_MAIN)
        atexit.unregister(leave_together)  # once per process, however many sweeps (reproduce) ask
        atexit.register(leave_together)
        device = state.device if state.device.type != "cpu" else torch.device("cpu")  # not "cpu:0"
        sharded = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        return cls(rank=state.process_index, world_size=state.num_processes, device=device, sharded=sharded)

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """Parameters sharded over several processes (``sharded`` means nothing in one process)."""
        return self.parallel and self.sharded

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

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP: shard ``model`` in place (each decoder layer — the classes its
        ``_no_split_modules`` names — then the rest); build the optimiser after this. Otherwise
        the model as it is."""
        if not self.fsdp:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        device = next(model.parameters()).device
        mesh = init_device_mesh(device.type, (self.world_size,))
        layer_classes = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def gather_weights(self, model: torch.nn.Module) -> dict | None:
        """FSDP: the full state dict, on the CPU of the main process (``None`` in the others; every
        process must call this). Without sharding: ``None`` (the model is whole already)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return weights if self.is_main else None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train: DDP over several processes, the (already sharded) model under FSDP,
        the model itself in one process."""
        if not self.parallel or self.fsdp:
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

    def total(self, count: int) -> int:
        """The sum over processes of an integer (e.g. answer tokens in the global batch)."""
        if not self.parallel:
            return count
        value = torch.tensor([count], dtype=torch.long, device=self.device)
        torch.distributed.all_reduce(value)
        return int(value.item())

    def gradients(self, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """∇loss w.r.t. ``params`` averaged over the processes (each process passes its own share
        of the loss, weighted as in the module doc). One process or DDP (``loss`` of the bare
        model, no DDP hooks): ``torch.autograd.grad``, then the average. FSDP: sharded parameters
        are not in the autograd graph (their unsharded copies are), so the gradient comes from a
        backward pass, which FSDP reduce-scatters (averages) into each shard's ``.grad``; taken
        from there and cleared."""
        if self.fsdp:
            loss.backward()
            grads = [p.grad for p in params]
            for p in params:
                p.grad = None
            return grads
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        self.average_(grads)
        return grads

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

    @staticmethod
    def value(tensor: torch.Tensor) -> torch.Tensor:
        """A plain tensor of a (possibly sharded, FSDP) DTensor's full value; others as they are."""
        return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor

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
