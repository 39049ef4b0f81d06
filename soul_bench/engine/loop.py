"""The unlearning loop, top to bottom.

    for each optimiser step:
        forget batch F (shuffled epochs over the forget set), retain batch R (random, same size),
        and — for methods that need it — F with refusal answers, aligned with F
        [if the optimiser asks this step] refresh its Hessian estimate through a HessianProbe
        for each of grad_accum micro-batches: loss = method.loss(model, inputs, reference) / grad_accum → backward
        non-finite loss or gradient → stop, keep the last good weights, report the failure
        clip → optimiser step → LR schedule step → log
        [every early_stop_every steps] stop once the forget-set NLL passes early_stop_forget_nll

The same loop trains the embedded target/retain models (method = FineTune). It never asks
which optimiser it drives: second-order optimisers say themselves when they want a Hessian
refresh (``soul_bench.engine.hessian``); one-shot updaters (IU) are run by ``run_one_shot``.

Under several processes (``soul_bench.engine.parallel``) every process draws the same global
batch, trains on its share of the rows, and the gradients are averaged (DDP or FSDP); the loop's
decisions (a non-finite loss, early stopping) are taken together, so every process stops at the
same step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from soul_bench.data import collate, to_device
from soul_bench.engine.hessian import HessianProbe, HessianRefreshing
from soul_bench.engine.parallel import Processes
from soul_bench.lm import answer_mask, mean_token_nll, sequence_nll


@dataclass
class LoopSettings:
    steps: int | None = None          # exact number of optimiser steps, or …
    epochs: float | None = None       # … passes over the forget (training) set
    batch_size: int = 16              # sequences per micro-batch (forget; retain the same)
    grad_accum: int = 1               # micro-batches per optimiser step
    max_grad_norm: float | None = 1.0
    schedule: str = "linear"          # constant | linear | cosine (after warm-up)
    warmup_ratio: float = 0.1
    warmup_from_zero: bool = True     # HF's linear warm-up (step s: s/warmup, so step 0 has LR 0); False: (s+1)/warmup
    decay_biases_and_norms: bool = False  # weight decay on 1-D tensors (biases, norm weights) too; HF and SOUL exclude them
    bf16: bool = True                 # autocast to bfloat16 on CUDA (a speed setting; CPU runs float32)
    gradient_checkpointing: bool = False
    early_stop_forget_nll: float | None = None   # stop once the mean forget-answer NLL reaches this
    early_stop_every: int = 5
    # batches of similar length (as transformers' group_by_length): less padding, so more useful
    # tokens per second when lengths vary; the batches are less random, so it is opt-in
    group_by_length: bool = False
    seed: int = 0

    def __post_init__(self):
        """Reject values the loop cannot run with, in one line naming the setting (not a
        ZeroDivisionError or a silent zero-step run later)."""
        def number(name, value, low, *, integer=False, inclusive=True, optional=False):
            if value is None and optional:
                return
            kind = "an integer" if integer else "a number"
            ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not (value >= low if inclusive else value > low):
                bound = f">= {low}" if inclusive else f"> {low}"
                raise ValueError(f"unlearning setting '{name}' must be {kind} {bound}, got {value!r}")

        number("steps", self.steps, 1, integer=True, optional=True)
        number("epochs", self.epochs, 0, inclusive=False, optional=True)
        number("batch_size", self.batch_size, 1, integer=True)
        number("grad_accum", self.grad_accum, 1, integer=True)
        number("max_grad_norm", self.max_grad_norm, 0, inclusive=False, optional=True)
        number("early_stop_forget_nll", self.early_stop_forget_nll, 0, optional=True)
        number("early_stop_every", self.early_stop_every, 1, integer=True)
        number("warmup_ratio", self.warmup_ratio, 0)
        if self.warmup_ratio >= 1:
            raise ValueError(f"unlearning setting 'warmup_ratio' must be in [0, 1), got {self.warmup_ratio!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unlearning setting 'schedule' must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for flag in ("warmup_from_zero", "decay_biases_and_norms", "bf16", "gradient_checkpointing", "group_by_length"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"unlearning setting '{flag}' must be true or false, got {getattr(self, flag)!r}")

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else 1.0
        return max(1, math.ceil(epochs * n_examples / (self.batch_size * self.grad_accum)))


@dataclass
class StepInputs:
    """What a method's loss sees at one step (tensors already on the model's device)."""

    forget: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor] | None = None
    forget_refusal: dict[str, torch.Tensor] | None = None  # the forget questions with refusal answers
    weight: float = 1.0  # this process's share of the global batch (see soul_bench.engine.parallel)
    # per-row sum answer NLL of a batch ("forget", "forget_refusal") under the frozen reference,
    # for a method's ``reference_nll_of`` (read with ``soul_bench.engine.methods.reference_nll``)
    reference_nll: dict[str, torch.Tensor] | None = None


@dataclass
class LoopResult:
    steps_done: int
    log: list[dict] = field(default_factory=list)
    failure: str | None = None
    stopped_early: str | None = None
    seconds: float = 0.0
    hessian_seconds: float = 0.0


SCHEDULES = ("constant", "linear", "cosine")


def lr_lambda(schedule: str, total: int, warmup: int, from_zero: bool = True):
    """Multiplier on the base LR at step s: linear warm-up, then constant/linear/cosine decay.

    ``from_zero`` (default) is transformers' ``get_linear_schedule_with_warmup`` /
    ``get_cosine_schedule_with_warmup``, which SOUL's and open-unlearning's HF-Trainer runs use:
    s/warmup during warm-up, so step 0 moves nothing but the optimiser's moments. ``False``
    ramps (s+1)/warmup, so the first step already has LR 1/warmup (the embedded models'
    training recipe uses it; their cache keys depend on it)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}'; valid: {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup if from_zero else (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - progress) if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    return factor


GROUP_SPAN = 50  # batches per length-sorted group (transformers' LengthGroupedSampler uses 50 too)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, lengths: list[int] | None = None):
    """Endless shuffled epochs of index batches. With ``lengths``: each epoch's shuffled order is
    cut into groups of GROUP_SPAN batches, each group sorted by length and cut into batches, and
    the epoch's batches are shuffled, so a batch holds sequences of similar length and pads little."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        if lengths is None:
            for start in range(0, n, batch_size):
                yield order[start : start + batch_size]
            continue
        span = batch_size * GROUP_SPAN
        batches = []
        for start in range(0, n, span):
            group = sorted(order[start : start + span], key=lambda i: lengths[i], reverse=True)
            batches += [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
        for j in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[j]


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; float32 elsewhere (same code path, dtype only)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def mean_forget_nll(model, encoded, pad_id: int, batch_size: int = 32) -> float:
    """Mean answer-token NLL over a whole encoded set (for early stopping)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = [mean_token_nll(model, to_device(collate(encoded[i : i + batch_size], pad_id), device)).item()
              for i in range(0, len(encoded), batch_size)]
    model.train(was_training)
    return sum(losses) / len(losses)


def uses_autocast(settings: LoopSettings, params: list[torch.Tensor]) -> bool:
    """bf16 autocast is mixed precision over float32 master weights; weights already loaded in
    bf16/fp16 train in that dtype (autocast would only add casts)."""
    return bool(settings.bf16 and params and params[0].dtype == torch.float32)


@torch.no_grad()
def reference_nll_table(reference, method, forget_encoded, settings: LoopSettings, pad_id: int,
                        refusal_encoded=None, autocast_bf16: bool = False) -> dict[str, torch.Tensor]:
    """Every row's sum answer NLL under the frozen reference, for the batches the method's
    ``reference_nll_of`` names ("forget", "forget_refusal"): name → float32 tensor (CPU), one
    value per row of the encoded set.

    The reference never changes and the forget rows come back every epoch, so one forward per
    row replaces one per row and epoch (NPO, 10 epochs: a tenth of the reference forwards), and a
    method that reads nothing else of the reference can drop the model before training. Rows are
    scored in batches of ``settings.batch_size``, shortest first; a row's NLL does not depend
    on its batch-mates (padding is masked), up to float rounding. Every process scores every row
    in the same batches, so a sharded (FSDP) reference runs the same collective forwards everywhere."""
    sets = {"forget": forget_encoded, "forget_refusal": refusal_encoded}
    device = next(reference.parameters()).device
    was_training = reference.training
    reference.eval()  # a fixed function (no dropout), as the frozen reference is meant to be
    table = {}
    for name in method.reference_nll_of:
        encoded = sets.get(name)
        if encoded is None:
            raise ValueError(f"method '{method.name}' reads the reference NLL of '{name}', which this run has no rows for")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        values = torch.zeros(len(encoded), dtype=torch.float32)
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            batch = to_device(collate([encoded[i] for i in rows], pad_id), device)
            with autocast_context(device, autocast_bf16):
                nll, _, _ = sequence_nll(reference, batch)
            values[rows] = nll.float().cpu()
        table[name] = values
    reference.train(was_training)
    return table


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, non-reentrant so that gradients reach LoRA adapters
    although the frozen inputs need none; transformers ≥ 5 names it activation checkpointing."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def run_loop(model, method, optimizer, forget_encoded, settings: LoopSettings, pad_id: int,
             retain_encoded=None, reference=None, refusal_encoded=None, description: str = "unlearning",
             show_progress: bool = True, processes: Processes | None = None,
             reference_nll: dict[str, torch.Tensor] | None = None) -> LoopResult:
    """Run ``method`` with ``optimizer`` on ``model`` in place; returns the per-step log.
    ``processes``: the data-parallel processes this loop runs in (default: this one alone).
    ``reference_nll``: :func:`reference_nll_table`'s table for a method with ``reference_nll_of``
    (computed here from ``reference`` when not given)."""
    processes = processes or Processes()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    total = settings.total_steps(len(forget_encoded))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings.schedule, total, int(settings.warmup_ratio * total),
                                                                              settings.warmup_from_zero))
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.gradient_checkpointing:
        enable_checkpointing(model)
    autocast_bf16 = uses_autocast(settings, params)
    if method.reference_nll_of and reference_nll is None:
        if reference is None:
            raise ValueError(f"method '{method.name}' needs the frozen reference model (or its reference_nll table)")
        reference_nll = reference_nll_table(reference, method, forget_encoded, settings, pad_id, refusal_encoded, autocast_bf16)
    lengths = [len(ids) for ids, _ in forget_encoded] if settings.group_by_length else None
    batches = shuffled_batches(len(forget_encoded), settings.batch_size, generator, lengths)
    result = LoopResult(steps_done=0)
    model.train()
    trained = processes.wrap(model)  # DDP over several processes; the model itself in one
    start = time.perf_counter()

    def next_inputs() -> tuple[StepInputs, list]:
        picks = next(batches)  # the global batch (every process draws the same), then this process's rows of it
        retain_picks = torch.randint(len(retain_encoded), (len(picks),), generator=generator).tolist() if method.needs_retain else None
        positions, weight = processes.share(list(range(len(picks))))
        picks = [picks[i] for i in positions]
        rows = [forget_encoded[i] for i in picks]
        retain_rows = [retain_encoded[retain_picks[i]] for i in positions] if retain_picks else None
        inputs = StepInputs(
            forget=to_device(collate(rows, pad_id), device),
            retain=to_device(collate(retain_rows, pad_id), device) if retain_rows else None,
            forget_refusal=to_device(collate([refusal_encoded[i] for i in picks], pad_id), device) if refusal_encoded else None,
            weight=weight,
            reference_nll={name: values[picks].to(device) for name, values in reference_nll.items()} if reference_nll else None,
        )
        return inputs, rows + (retain_rows or [])

    def loss_of(inputs: StepInputs, network=trained):
        with autocast_context(device, autocast_bf16):
            loss, terms = method.loss(network, inputs, reference)
        return (loss * inputs.weight if processes.parallel else loss), terms

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TimeElapsedColumn(), transient=True, disable=not show_progress)
    with progress:
        bar = progress.add_task(description, total=total, loss="…")
        for step in range(total):
            micro = [next_inputs() for _ in range(settings.grad_accum)]
            hessian_s = 0.0
            if isinstance(optimizer, HessianRefreshing) and optimizer.wants_hessian(step):
                # The probe sees the first micro-batch: every sequence it trains on (forget + retain).
                # On the model itself (not DDP: no gradient hooks); over several processes the probe
                # makes one estimate of the global batch (see soul_bench.engine.parallel).
                inputs, sequences = micro[0]
                probe_batch = to_device(collate(sequences, pad_id), device)
                probe = HessianProbe.for_batch(model, probe_batch, lambda inputs=inputs: loss_of(inputs, model)[0],
                                               processes=processes)
                tick = time.perf_counter()
                optimizer.update_hessian(probe)
                hessian_s = time.perf_counter() - tick
                result.hessian_seconds += hessian_s
                optimizer.zero_grad(set_to_none=True)

            total_loss, terms = 0.0, {}
            for inputs, _ in micro:
                loss, micro_terms = loss_of(inputs)
                batch_loss = processes.mean(loss)  # the global batch's loss; non-finite in one process → in all
                if not torch.isfinite(batch_loss):
                    result.failure = f"non-finite loss ({batch_loss.item()}) at step {step}; stopped with the last good weights"
                    break
                (loss / settings.grad_accum).backward()
                total_loss += batch_loss.item() / settings.grad_accum
                for key, value in micro_terms.items():
                    terms[key] = terms.get(key, 0.0) + value / settings.grad_accum
            if result.failure:
                break
            grad_norm = processes.value(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm or float("inf")))
            if not torch.isfinite(grad_norm):
                result.failure = f"non-finite gradient norm at step {step}; stopped with the last good weights"
                break
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            entry = {"step": step, "loss": total_loss, "grad_norm": float(grad_norm), "lr": lr, "hessian_s": hessian_s, **terms}
            if hasattr(optimizer, "step_stats"):  # e.g. Sophia's share of unclipped (curvature-using) coordinates
                entry.update(optimizer.step_stats())
            result.steps_done = step + 1
            if settings.early_stop_forget_nll is not None and (step + 1) % settings.early_stop_every == 0:
                entry["forget_nll"] = mean_forget_nll(model, forget_encoded, pad_id)
                if processes.agree(entry["forget_nll"] >= settings.early_stop_forget_nll):
                    result.stopped_early = f"forget NLL {entry['forget_nll']:.3f} ≥ {settings.early_stop_forget_nll} after {step + 1} steps"
            result.log.append(entry)
            progress.update(bar, advance=1, loss=f"{total_loss:.3f}")
            if result.stopped_early:
                break

    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def run_one_shot(model, updater, forget_encoded, retain_encoded, settings: LoopSettings, pad_id: int) -> LoopResult:
    """Apply a one-shot updater (e.g. influence unlearning) instead of the step loop.

    The forget side is the *whole* forget set: one closure per batch of ``settings.batch_size``
    sequences, weighted by its share of the set's answer tokens, so the accumulated gradient is
    that of the token-mean CE over every forget sequence. The retain side is a seeded sample of
    ``updater.retain_samples`` sequences (default 64) in one batch — the Hessian's sample, whose
    graph the solver keeps. Both counts go into the log."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    retain_samples = getattr(updater, "retain_samples", 64)
    retain_rows = [retain_encoded[i] for i in torch.randperm(len(retain_encoded), generator=generator)[:retain_samples].tolist()]
    retain = to_device(collate(retain_rows, pad_id), device)
    forget_batches = [collate(forget_encoded[i : i + settings.batch_size], pad_id)
                      for i in range(0, len(forget_encoded), settings.batch_size)]
    tokens = [int(answer_mask(b["labels"]).sum()) for b in forget_batches]
    total_tokens = sum(tokens)
    forget_parts = [(lambda b=b: mean_token_nll(model, to_device(b, device)), n / total_tokens)
                    for b, n in zip(forget_batches, tokens)]
    model.eval()  # no dropout: the Hessian-vector products must see one fixed function
    start = time.perf_counter()
    with autocast_context(device, settings.bf16):
        diagnostics = updater.unlearn(forget_parts, lambda: mean_token_nll(model, retain))
    model.eval()
    log = {"step": 0, **(diagnostics or {}), "forget_sequences": len(forget_encoded), "retain_sequences": len(retain_rows)}
    result = LoopResult(steps_done=1, log=[log], seconds=time.perf_counter() - start)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        result.failure = "one-shot update produced non-finite weights"
    return result
