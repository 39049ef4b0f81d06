"""Robustness probes: is the unlearning real, or is the knowledge only hidden?

Each probe turns an unlearned model into an attacked copy; the runner evaluates the copy with
the task's own evaluation and records its metrics as ``<probe>/<metric>``.

* ``relearn`` (Hu et al. 2024, "Jogging the memory of unlearned LLMs through targeted relearning
  attacks", arXiv 2406.13356): fine-tune on a small part of the forget set for a few steps. Knowledge
  that was only suppressed comes back from far less data than the forget set; knowledge that is
  gone has to be learnt again.
* ``quant`` (Zhang et al. 2024, "Catastrophic failure of LLM unlearning via quantization",
  arXiv 2410.16454): round every linear layer's weights to ``bits``-bit integers (round-to-nearest,
  symmetric, one scale per group of ``group_size`` input weights of an output row), as 4-bit
  post-training quantisation does. Unlearning with a small learning rate moves the weights less
  than one quantisation step, so the quantised model can land back on the target's knowledge.
  The weights are quantised and dequantised in place (simulated quantisation: the same numbers an
  int kernel computes with, on any device and dtype, with no quantisation library).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

PROBES = ("relearn", "quant")


@dataclass
class RelearnSettings:
    steps: int = 10
    fraction: float = 0.25        # of the forget set the attacker holds (the first items of a seeded shuffle)
    lr: float | None = None       # None: the cell's own unlearning learning rate
    batch_size: int = 8

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"probe setting relearn.steps must be an integer >= 1, got {self.steps!r}")
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"probe setting relearn.fraction must be in (0, 1], got {self.fraction!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"probe setting relearn.lr must be a number > 0, got {self.lr!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"probe setting relearn.batch_size must be an integer >= 1, got {self.batch_size!r}")


@dataclass
class QuantSettings:
    bits: int = 4
    group_size: int = 128

    def __post_init__(self):
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise ValueError(f"probe setting quant.bits must be an integer in [2, 8], got {self.bits!r}")
        if not (isinstance(self.group_size, int) and self.group_size >= 1):
            raise ValueError(f"probe setting quant.group_size must be an integer >= 1, got {self.group_size!r}")


SETTINGS = {"relearn": RelearnSettings, "quant": QuantSettings}


def probe_settings(name: str, options: dict | None):
    """The settings of probe ``name`` from a run's ``probe_options`` (ValueError names a bad key)."""
    cls = SETTINGS[name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown probe setting {name}.{unknown[0]}; valid: {', '.join(cls.__dataclass_fields__)}")
    return cls(**options)


def relearned(model, forget_encoded, pad_id: int, settings: RelearnSettings, lr: float, seed: int):
    """A copy of ``model`` fine-tuned (plain CE, AdamW, constant LR, no warm-up) for
    ``settings.steps`` steps on ``settings.fraction`` of the forget examples. Every weight of the
    copy trains, whatever the unlearning trained: the attacker holds the weights and does not know
    which layers a method changed (RMU trains three MLPs; a LoRA cell's merged weights were frozen)."""
    from soul_bench.engine.loop import LoopSettings, run_loop
    from soul_bench.engine.methods import FineTune

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(forget_encoded), generator=generator).tolist()
    held = [forget_encoded[i] for i in order[: max(1, math.ceil(settings.fraction * len(forget_encoded)))]]
    attacked = copy.deepcopy(model)
    attacked.requires_grad_(True)
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=settings.lr or lr, weight_decay=0.0)
    loop = LoopSettings(steps=settings.steps, batch_size=settings.batch_size, schedule="constant", warmup_ratio=0.0,
                        seed=seed)
    result = run_loop(attacked, FineTune(), optimizer, held, loop, pad_id, description="probe: relearn",
                      show_progress=False)
    if result.failure:
        raise RuntimeError(f"relearning probe failed: {result.failure}")
    attacked.eval()
    return attacked


@torch.no_grad()
def quantise_rtn(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Round-to-nearest symmetric quantisation, dequantised: each output row is cut into groups
    of ``group_size`` input weights (the last may be shorter); a group's scale is max|w| / qmax,
    qmax = 2^(bits−1) − 1; w → clamp(round(w / scale), −qmax, qmax) · scale."""
    qmax = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    width = math.ceil(cols / group_size) * group_size
    padded = torch.nn.functional.pad(weight.float(), (0, width - cols))
    groups = padded.view(rows, width // group_size, group_size)
    scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / qmax
    quantised = (groups / scale).round().clamp(-qmax, qmax) * scale
    return quantised.view(rows, width)[:, :cols].to(weight.dtype)


def quantised(model, settings: QuantSettings):
    """A copy of ``model`` whose every ``nn.Linear`` weight is RTN-quantised, but the LM head:
    embeddings (tied or not), the head and norms stay as they are, as 4-bit weight-only
    quantisation leaves them (bitsandbytes' and GPTQ's defaults)."""
    attacked = copy.deepcopy(model)
    head = attacked.get_output_embeddings() if hasattr(attacked, "get_output_embeddings") else None
    with torch.no_grad():
        for module in attacked.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                module.weight.copy_(quantise_rtn(module.weight, settings.bits, settings.group_size))
    attacked.eval()
    return attacked
