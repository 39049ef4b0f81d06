"""LoRA (peft) for unlearning runs: the adapters train, and the frozen base — the same model
with its adapters switched off — is the reference that NPO, KL, DPO and RMU compare with, so
a LoRA run holds one copy of the weights, not two."""

from __future__ import annotations

import torch

from soul_bench.errors import UserError

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def apply_lora(model, options: dict):
    """Wrap ``model`` with LoRA adapters (peft); the optimiser then trains the adapters only."""
    from peft import LoraConfig, get_peft_model

    try:
        config = LoraConfig(task_type="CAUSAL_LM", **{**DEFAULT_LORA, **options})
    except TypeError as exc:
        raise UserError(f"bad LoRA setting ({exc}); see peft.LoraConfig (r, lora_alpha, lora_dropout, target_modules)") from exc
    return get_peft_model(model, config)


class AdaptersDisabled(torch.nn.Module):
    """The base model under a peft wrapper, as a frozen reference: every call runs the wrapped
    model with its adapters disabled and without gradients. It shares the wrapped model's
    modules (so a method that hooks a decoder layer of the reference, as RMU does, finds it);
    it has no parameters of its own to train or freeze."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, **inputs):
        with self.peft_model.disable_adapter(), torch.no_grad():
            return self.peft_model(**inputs)
