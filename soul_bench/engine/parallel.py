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

Sophia's Hessian estimate is one estimate over the global batch: Gauss-Newton-Bartlett averages
the processes' sampled-label gradients, each weighted by its share of the batch's answer tokens,
before squaring (:meth:`Processes.gradients`; N = the global token count) — each process samples
its rows' labels from its own random stream, so the estimate is another draw than one process's;
Hutchinson's u ⊙ (H·u) is linear in the loss, so the processes' estimates (the same u everywhere)
are averaged (:meth:`Processes.average_`; DDP only — FSDP has no double backward).

Process 0 (the *main* process) does everything else: it prepares or loads the models and writes
every file; the others (*followers*) wait for it to send the next cell to train or baseline to
evaluate (:meth:`Processes.send` / :meth:`Processes.receive`). Every process evaluates each model
(and each probe's attacked copy) together with the others, each its share of the batches and
of the lm-eval documents (``soul_bench.evaluate.sharing``): under DDP on its replica, under FSDP on
a whole copy that takes the trained weights gathered to the main process
(:meth:`Processes.gather_weights`, then :meth:`Processes.broadcast_weights`).

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

# A follower waits in a broadcast while the main process works alone (preparing the embedded models,
# training the relearning probe); the default timeout (10-30 min) would kill it there.
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


# accelerate launch --use_fsdp's sharding strategies: FSDP 1's names, which it also takes by number
STRATEGY_NAMES = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD", "5": "HYBRID_SHARD_ZERO2"}


@dataclass(frozen=True)
class ShardingOptions:
    """What ``accelerate launch --use_fsdp`` (or its config file) asks of the sharding, as FSDP2's
    ``fully_shard`` takes it (:func:`sharding_options`)."""

    reshard_after_forward: bool = True  # False: SHARD_GRAD_OP (ZeRO-2), full layer weights kept from forward to backward
    wrap_classes: tuple[str, ...] | None = None  # module classes sharded one by one; None: the model's decoder layers
    activation_checkpointing: bool = False


def _flag(environ, name: str, default: str = "false") -> bool:
    value = environ.get(name, default).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{name}={environ.get(name)!r} (from accelerate launch): expected true or false")
    return value in ("true", "1", "yes")


def sharding_options(environ=None) -> ShardingOptions:
    """The FSDP options accelerate passes its processes (``FSDP_*`` environment variables), honoured
    or refused — never silently dropped:

    * ``--fsdp_sharding_strategy`` FULL_SHARD (default) / SHARD_GRAD_OP and
      ``--fsdp_reshard_after_forward`` true / false: whether a layer's gathered weights are freed
      after its forward (ZeRO-3) or kept for the backward (ZeRO-2: more memory, less communication);
      NO_SHARD (that is DDP: ``--multi_gpu``) and the HYBRID strategies (sharding within a node,
      replication across nodes) are refused;
    * ``--fsdp_auto_wrap_policy`` TRANSFORMER_BASED_WRAP (default, with
      ``--fsdp_transformer_layer_cls_to_wrap`` naming the classes, else the model's decoder layers)
      or NO_WRAP (the whole model one unit); SIZE_BASED_WRAP is refused;
    * ``--fsdp_activation_checkpointing``: the loop's activation checkpointing
      (``--gradient-checkpointing``);
    * ``--fsdp_offload_params`` and ``--fsdp_activation_checkpointing_offload`` (CPU offload) are
      refused: the optimisers' states (Sophia's h) are not checked on CPU-offloaded shards yet.

    Left to FSDP2, which has no such knobs (it prefetches on its own and the run keeps no sharded
    checkpoint): ``--fsdp_backward_prefetch``, ``--fsdp_forward_prefetch``, ``--fsdp_use_orig_params``,
    ``--fsdp_state_dict_type``, ``--fsdp_sync_module_states``, ``--fsdp_cpu_ram_efficient_loading``
    (every process loads the whole model before it is sharded)."""
    environ = os.environ if environ is None else environ
    strategy = environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
    strategy = STRATEGY_NAMES.get(strategy, strategy)
    if strategy == "NO_SHARD":
        raise UserError("FSDP sharding strategy NO_SHARD: that is data parallelism: launch with --multi_gpu (DDP)")
    if strategy in ("HYBRID_SHARD", "HYBRID_SHARD_ZERO2"):
        raise UserError(f"FSDP sharding strategy {strategy}: sharding within a node and replicating across nodes is not "
                        "supported; use FULL_SHARD or SHARD_GRAD_OP")
    if strategy not in ("FULL_SHARD", "SHARD_GRAD_OP"):
        raise UserError(f"unknown FSDP sharding strategy {strategy!r}; valid: FULL_SHARD, SHARD_GRAD_OP")
    reshard = strategy == "FULL_SHARD" and _flag(environ, "FSDP_RESHARD_AFTER_FORWARD", "true")
    for name, option in (("FSDP_OFFLOAD_PARAMS", "--fsdp_offload_params"),
                         ("FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD", "--fsdp_activation_checkpointing_offload")):
        if _flag(environ, name):
            raise UserError(f"{option} true: CPU offload under FSDP is not supported yet; leave it false (more "
                            "processes, LoRA under DDP, or --gradient-checkpointing save GPU memory)")
    policy = environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper()
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise UserError(f"FSDP auto-wrap policy {policy!r} is not supported; valid: TRANSFORMER_BASED_WRAP (each "
                        "decoder layer, or the classes --fsdp_transformer_layer_cls_to_wrap names), NO_WRAP")
    classes = None
    if policy == "NO_WRAP":
        classes = ()
    elif environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").strip():
        classes = tuple(c.strip() for c in environ["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",") if c.strip())
    return ShardingOptions(reshard_after_forward=reshard, wrap_classes=classes,
                           activation_checkpointing=_flag(environ, "FSDP_ACTIVATION_CHECKPOINTING"))


@dataclass
class Processes:
    """This process's place among the data-parallel processes (one process: rank 0 of 1, and every
    method below is free: no collective, no wrapper, weight 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None
    sharded: bool = False  # FSDP: parameters, gradients and optimiser states sharded over the processes
    sharding: ShardingOptions = ShardingOptions()  # how (accelerate's FSDP options, read when sharded)

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
        return cls(rank=state.process_index, world_size=state.num_processes, device=device, sharded=sharded,
                   sharding=sharding_options() if sharded else ShardingOptions())

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
        ``_no_split_modules`` names, or those ``sharding.wrap_classes`` names — then the rest);
        build the optimiser after this. Otherwise the model as it is."""
        if not self.fsdp:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        device = next(model.parameters()).device
        mesh = init_device_mesh(device.type, (self.world_size,))
        wrap = self.sharding.wrap_classes
        layer_classes = set(getattr(model, "_no_split_modules", None) or ()) if wrap is None else set(wrap)
        present = {type(module).__name__ for module in model.modules()}
        if wrap and not layer_classes & present:
            raise UserError(f"--fsdp_transformer_layer_cls_to_wrap {','.join(wrap)}: the model has no module of that "
                            f"class; its decoder layers: {', '.join(getattr(model, '_no_split_modules', None) or ['?'])}")
        for module in model.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, mesh=mesh, reshard_after_forward=self.sharding.reshard_after_forward)
        fully_shard(model, mesh=mesh)  # the root keeps its few weights gathered from forward to backward
        return model

    def gather_weights(self, model: torch.nn.Module) -> dict | None:
        """FSDP: the full state dict, on the CPU of the main process (``None`` in the others; every
        process must call this). Without sharding: ``None`` (the model is whole already)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return weights if self.is_main else None

    def broadcast_weights(self, model: torch.nn.Module) -> None:
        """Every process's ``model`` (the same architecture, whole in each) takes the main process's
        parameters and buffers, in place: one broadcast per tensor, so no process holds a second copy."""
        if not self.parallel:
            return
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

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
