"""LoRA (peft) for unlearning runs: the adapters train, and the frozen base — the same model
with its adapters switched off — is the reference that NPO, KL, DPO and RMU compare with, so
a LoRA run holds one copy of the weights, not two."""

from __future__ import annotations

import torch

from soul_bench.errors import UserError

DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def lora_config(options: dict):
    """peft's ``LoraConfig`` of a run's ``lora`` settings; a bad one (unknown key, r = 0, …) is
    one line — checked when the run starts, before any model is loaded."""
    from peft import LoraConfig

    try:
        config = LoraConfig(task_type="CAUSAL_LM", **{**DEFAULT_LORA, **options})
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad LoRA setting ({exc}); see peft.LoraConfig (r, lora_alpha, lora_dropout, target_modules)") from exc
    if isinstance(config.r, bool) or not isinstance(config.r, int) or config.r < 1:  # peft finds out only on the model
        raise UserError(f"bad LoRA setting: r (the adapters' rank) must be an integer >= 1, got {config.r!r}")
    return config


def apply_lora(model, options: dict):
    """Wrap ``model`` with LoRA adapters (peft); the optimiser then trains the adapters only."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(options))
    except ValueError as exc:  # e.g. target_modules that name no module of this model
        raise UserError(f"bad LoRA setting for this model: {str(exc).splitlines()[0]}") from exc


def check_lora_fits(model_path: str, options: dict) -> None:
    """Adapters whose ``target_modules`` name no module of the model at ``model_path`` are one line
    now, not after the baselines when the first cell loads the model: checked on the model's
    skeleton (built from its config on the meta device, no weights read). A model whose config
    cannot be read here is left to the loader, which says what is wrong."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 — not this check's to report (hub offline, custom code, ...)
        return
    apply_lora(skeleton, options)


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
