"""Unlearning objectives. Each is a small class whose ``loss`` reads like its formula.

``loss(model, inputs, reference)`` gets a :class:`~soul_bench.engine.loop.StepInputs`
(``inputs.forget``, ``inputs.retain``, ``inputs.forget_refusal``) and the frozen reference
model (None unless ``needs_reference``). A method that needs only the reference's likelihood of
whole rows (NPO, DPO) names those batches in ``reference_nll_of`` instead and reads
:func:`reference_nll`: the engine scores each row under the reference once, before training,
rather than once per epoch, and keeps no reference model in memory while training.

Notation: F a forget batch, R a retain batch, CE the mean answer-token
cross-entropy, log π(y|x) = −(sum NLL over answer tokens), π_ref the frozen model before
unlearning. A method declares what it needs (``needs_retain``, ``needs_reference``,
``needs_refusal``) and the example ``shapes`` it fits, so the engine builds only that — GA
gets no reference copy and no retain batches; PO/IDK and DPO get ``inputs.forget_refusal``, the forget questions with refusal
answers, aligned row by row with ``inputs.forget``. ``setup(model, reference)`` runs once
before the optimiser is built (RMU freezes all but a few MLPs there).

Methods: GA, GradDiff, KL, NPO, NPO+RT, SimNPO, PO/IDK (``idk``, alias ``po``), DPO, RMU.
``influence_compatible`` is True only where the forget objective is the plain forget CE
(GA, GradDiff): the one-shot influence update (IU) may stand in for those alone.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from soul_bench.lm import answer_mask, mean_token_nll, sequence_nll


@dataclass
class Method:
    """Base: hyper-parameters are dataclass fields, so they validate and serialise for free."""

    name = "method"
    description = ""
    needs_retain = False
    needs_reference = False
    needs_refusal = False  # the engine then also builds inputs.forget_refusal
    # batches ("forget", "forget_refusal") whose per-row reference NLL the loss reads (reference_nll);
    # no annotation: a class attribute, not a hyper-parameter
    reference_nll_of = ()
    # example shapes (soul_bench.data) the objective makes sense on; a task of another shape refuses the method
    shapes = ("qa", "completion", "text")  # no annotation: a class attribute, not a hyper-parameter
    influence_compatible = False  # True only when the forget objective is the plain forget CE (IU may stand in)
    # hyper-parameter bounds, checked when the method is built: name → "positive" or "non-negative"
    # (a negative retain weight would ascend on the retain set; NPO's β ≤ 0 divides by zero or flips it)
    bounds = {"retain_weight": "non-negative"}

    def __post_init__(self):
        for key, bound in self.bounds.items():
            value = getattr(self, key, None)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # absent here, or a type error reported by the registry's check
            if value < 0 or (bound == "positive" and value == 0):
                raise ValueError(f"{self.name}.{key} must be {'> 0' if bound == 'positive' else '>= 0'}, got {value!r}")

    @property
    def wants_reference(self) -> bool:
        """Whether the engine must build the frozen reference: the loss reads the model, or its
        likelihood of whole rows (``reference_nll_of``)."""
        return self.needs_reference or bool(self.reference_nll_of)

    def setup(self, model, reference=None) -> None:
        """Called once before the optimiser is built: e.g. freeze what the method must not train."""

    def loss(self, model, inputs, reference=None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def hparams(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FineTune(Method):
    """Plain supervised fine-tuning, L = CE(F). Used to *train* the embedded target/retain
    models through the same loop; not an unlearning method."""

    name = "finetune"
    description = "supervised fine-tuning on the given data (builds target/retain models)"

    def loss(self, model, inputs, reference=None):
        ce = mean_token_nll(model, inputs.forget)
        return ce, {"ce_forget": ce.item()}


@dataclass
class GradientAscent(Method):
    """GA: L = −CE(F) — push the likelihood of the forget answers down."""

    name = "ga"
    influence_compatible = True  # its objective is the forget CE the IU update removes
    description = "gradient ascent on the forget set: L = -CE(F)"

    def loss(self, model, inputs, reference=None):
        ce_f = mean_token_nll(model, inputs.forget)
        return -ce_f, {"ce_forget": ce_f.item()}


@dataclass
class GradDiff(Method):
    """GradDiff: L = −CE(F) + λ·CE(R)."""

    name = "graddiff"
    influence_compatible = True
    description = "gradient difference: L = -CE(F) + λ·CE(R)"
    needs_retain = True
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        ce_f = mean_token_nll(model, inputs.forget)
        ce_r = mean_token_nll(model, inputs.retain)
        return -ce_f + self.retain_weight * ce_r, {"ce_forget": ce_f.item(), "ce_retain": ce_r.item()}


def reference_nll(inputs, name: str, reference=None) -> torch.Tensor:
    """Per-row sum answer NLL of batch ``name`` ("forget", "forget_refusal") under the frozen
    reference π_ref: the engine's once-per-row table (``inputs.reference_nll``, for a method whose
    ``reference_nll_of`` names the batch), else a forward of ``reference`` (a loss called outside
    the engine's loop)."""
    table = inputs.reference_nll or {}
    if name in table:
        return table[name]
    if reference is None:
        raise ValueError(f"no reference NLL of '{name}' in the step's inputs and no reference model to compute it")
    with torch.no_grad():
        return sequence_nll(reference, getattr(inputs, name))[0]


def _npo_term(model, inputs, reference, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """(2/β)·E_F[log(1 + (π_θ(y|x)/π_ref(y|x))^β)] = (2/β)·E_F[softplus(β·(NLL_ref − NLL_θ))]
    with NLL the sum over answer tokens."""
    nll_theta, _, _ = sequence_nll(model, inputs.forget)
    nll_ref = reference_nll(inputs, "forget", reference).to(nll_theta.dtype)
    npo = (2.0 / beta) * F.softplus(beta * (nll_ref - nll_theta)).mean()
    return npo, {"npo": npo.item(), "nll_forget": nll_theta.mean().item()}


@dataclass
class NPO(Method):
    """NPO (Zhang et al. 2024): L = (2/β)·E_F[ log(1 + (π_θ(y|x)/π_ref(y|x))^β) ], β default 0.1."""

    name = "npo"
    bounds = {"beta": "positive", "retain_weight": "non-negative"}
    description = "negative preference optimisation against the frozen target (β=0.1)"
    reference_nll_of = ("forget",)  # π_ref(y|x) of the forget rows, scored once
    beta: float = 0.1

    def loss(self, model, inputs, reference=None):
        return _npo_term(model, inputs, reference, self.beta)


@dataclass
class NPORetain(Method):
    """NPO+RT: L = (2/β)·E_F[ log(1 + (π_θ/π_ref)^β) ] + λ·CE(R)."""

    name = "npo-rt"
    bounds = {"beta": "positive", "retain_weight": "non-negative"}
    description = "NPO plus λ·CE on the retain set"
    reference_nll_of = ("forget",)
    needs_retain = True
    beta: float = 0.1
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        npo, terms = _npo_term(model, inputs, reference, self.beta)
        ce_r = mean_token_nll(model, inputs.retain)
        return npo + self.retain_weight * ce_r, {**terms, "ce_retain": ce_r.item()}


@dataclass
class SimNPO(Method):
    """SimNPO (Fan et al. 2024): L = −(2/β)·E_F[ log σ( −(β/|y|)·log π_θ(y|x) − γ ) ] + λ·CE(R),
    β = 2.5, γ = 0; length-normalised, no reference model."""

    name = "simnpo"
    bounds = {"beta": "positive", "retain_weight": "non-negative"}
    description = "reference-free, length-normalised NPO plus λ·CE(R) (β=2.5, γ=0)"
    needs_retain = True
    beta: float = 2.5
    gamma: float = 0.0
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        nll_sum, n_tokens, _ = sequence_nll(model, inputs.forget)
        avg_nll = nll_sum / n_tokens.clamp(min=1)  # = −log π_θ(y|x) / |y|
        simnpo = -(2.0 / self.beta) * F.logsigmoid(self.beta * avg_nll - self.gamma).mean()
        ce_r = mean_token_nll(model, inputs.retain)
        return simnpo + self.retain_weight * ce_r, {"simnpo": simnpo.item(), "ce_retain": ce_r.item()}


@dataclass
class KL(Method):
    """KL: L = −CE(F) + λ·KL(π_ref(·|R) ‖ π_θ(·|R)).

    The KL is taken per token over the full vocabulary at the retain batch's supervised
    (answer) positions — Σ_v π_ref(v)·(log π_ref(v) − log π_θ(v)) — and averaged over those
    positions, so it is on the same per-token scale as CE(R)."""

    name = "kl"
    description = "gradient ascent on F plus λ·KL(π_ref ‖ π_θ) per answer token of the retain set"
    needs_retain = True
    needs_reference = True
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        ce_f = mean_token_nll(model, inputs.forget)
        kl_r = _mean_token_kl(model, reference, inputs.retain)
        return -ce_f + self.retain_weight * kl_r, {"ce_forget": ce_f.item(), "kl_retain": kl_r.item()}


def _mean_token_kl(model, reference, batch) -> torch.Tensor:
    """KL(π_ref(·|x_<t) ‖ π_θ(·|x_<t)) summed over the vocabulary, averaged over the batch's
    supervised positions (position t scores labels[:, t+1], as in ``token_nll``). float32."""
    mask = answer_mask(batch["labels"])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        ref_logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_p = F.log_softmax(logits[:, :-1, :].float()[mask], dim=-1)
    log_q = F.log_softmax(ref_logits[:, :-1, :].float()[mask], dim=-1)
    per_token = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(dim=-1)  # Σ q·(log q − log p)
    return per_token.sum() / mask.sum().clamp(min=1)


@dataclass
class IDK(Method):
    """PO / IDK (preference optimisation to a refusal): L = CE(F with refusal answers) + λ·CE(R).

    The forget questions keep their text, their answers become refusals
    (``inputs.forget_refusal``, see ``engine/refusals.py``); the original answers are not used."""

    name = "idk"
    description = "fine-tune the forget questions to a refusal ('I don't know.') plus λ·CE(R)"
    needs_retain = True
    needs_refusal = True
    shapes = ("qa", "completion")  # a refusal answers a prompt: raw text has none to answer
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        ce_idk = mean_token_nll(model, inputs.forget_refusal)
        ce_r = mean_token_nll(model, inputs.retain)
        return ce_idk + self.retain_weight * ce_r, {"ce_refusal": ce_idk.item(), "ce_retain": ce_r.item()}


@dataclass
class DPO(Method):
    """DPO with the refusal preferred and the original answer dispreferred:

        L = −(2/β)·E_F[ log σ( β·[log π_θ(y_idk|x) − log π_ref(y_idk|x)]
                              − β·[log π_θ(y|x)     − log π_ref(y|x)] ) ] + λ·CE(R),

    log π(y|x) = −(sum NLL over answer tokens), β default 0.1. The 2/β scale follows the
    SPEC (as NPO's), so β → 0 keeps the loss on an O(1) scale."""

    name = "dpo"
    bounds = {"beta": "positive", "retain_weight": "non-negative"}
    description = "DPO: refusal preferred over the original forget answer, plus λ·CE(R) (β=0.1)"
    needs_retain = True
    needs_refusal = True
    reference_nll_of = ("forget", "forget_refusal")
    shapes = ("qa", "completion")  # a refusal answers a prompt: raw text has none to answer
    beta: float = 0.1
    retain_weight: float = 1.0

    def loss(self, model, inputs, reference=None):
        nll_win, _, _ = sequence_nll(model, inputs.forget_refusal)
        nll_lose, _, _ = sequence_nll(model, inputs.forget)
        ref_win = reference_nll(inputs, "forget_refusal", reference)
        ref_lose = reference_nll(inputs, "forget", reference)
        margin = (ref_win - nll_win) - (ref_lose - nll_lose)  # log-ratio(refusal) − log-ratio(original)
        dpo = -(2.0 / self.beta) * F.logsigmoid(self.beta * margin).mean()
        ce_r = mean_token_nll(model, inputs.retain)
        return dpo + self.retain_weight * ce_r, {"dpo": dpo.item(), "nll_forget": nll_lose.mean().item(),
                                                 "nll_refusal": nll_win.mean().item(), "ce_retain": ce_r.item()}


_LAYER_MODULE = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)$")
_LAYER_PARAM = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.mlp\.(\w+)\.")


def _decoder_layers(model) -> dict[int, torch.nn.Module]:
    """index → decoder layer module, found by name (``model.layers.{i}`` in Llama/Mistral/Qwen,
    ``transformer.h.{i}`` in GPT-2; any prefix, so a peft wrapper's ``base_model.model.`` too)."""
    found = {}
    for name, module in model.named_modules():
        match = _LAYER_MODULE.search(name)
        if match:
            found.setdefault(int(match.group(1)), module)
    return found


def _layer_output(model, batch, layer: int) -> torch.Tensor:
    """Output hidden state (residual stream) of decoder layer ``layer``, (batch, seq, hidden).

    Read with a forward hook on the layer module, as the WMDP reference (``forward_with_cache``)
    does. This equals ``output_hidden_states=True``'s ``hidden_states[layer + 1]`` (index 0 is
    the embeddings) for every layer but the last, where transformers returns the state *after*
    the final norm instead of the layer's own output."""
    layers = _decoder_layers(model)
    if layer not in layers:
        raise ValueError(f"RMU: the model has no decoder layer {layer} (found {len(layers)} layers named *.layers.N / *.h.N)")
    captured = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, (tuple, list)) else output

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.remove()
    return captured["h"]


def _masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """mean over tokens (attention mask) of mean over hidden dims of (hidden − target)², float32."""
    per_token = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    mask = attention_mask.bool()
    return per_token[mask].sum() / mask.sum().clamp(min=1)


@dataclass
class RMU(Method):
    """RMU (Li et al. 2024, WMDP — "representation misdirection"):

        L = mean_t ‖h_ℓ^θ(F)_t − c·u‖² + α·mean_t ‖h_ℓ^θ(R)_t − h_ℓ^ref(R)_t‖²

    * h_ℓ = the output hidden state of decoder layer ℓ (a forward hook on ``*.layers.ℓ``; the
      same as ``output_hidden_states``' ``hidden_states[ℓ+1]`` — index 0 is the embeddings —
      except at the last layer, where transformers reports the final-normed state instead).
    * ‖·‖² is averaged over the hidden dimensions, not summed: the reference implementation
      (centerforaisafety/wmdp ``rmu/unlearn.py``) uses ``F.mse_loss`` (mean over every element);
      the paper writes a plain squared norm, i.e. hidden_size × ours.
    * mean_t runs over ALL tokens of the text (the attention-mask positions: prompt, answer,
      BOS/EOS), not only the answer — RMU works on representations, not on answer likelihoods.
      The reference averages over padding too; we do not.
    * u: a fixed random unit vector, entries drawn uniformly from [0, 1) as in the paper and
      reference code (then normalised), from a ``torch.Generator`` seeded with ``seed``.
    * c (``steering_coeff``) default 20 (open-unlearning; the WMDP runs use 6.5 on Zephyr-7B,
      300 on Mixtral): it must exceed the natural activation scale at ℓ to mean anything —
      tune it (and α, ℓ) for small models.
    * ``layer`` ℓ: None → min(7, num_hidden_layers − 1), resolved in ``setup``.
    * setup freezes every parameter except the MLP weights (``train_modules``, default
      gate/up/down proj) of layers ℓ−2..ℓ (clamped at 0); the reference trains only
      ``down_proj`` (its ``param_ids=[6]``): ``train_modules="down_proj"`` reproduces that.
      On a model already wrapped by peft (LoRA) setup freezes nothing: the adapters are what
      trains (the runner applies LoRA before setup; the frozen base is then the reference).
    """

    name = "rmu"
    bounds = {"steering_coeff": "non-negative", "alpha": "non-negative", "layer": "non-negative"}
    description = "representation misdirection: layer-ℓ activations on F → c·u, on R → the reference's (α=100, c=20)"
    needs_retain = True
    needs_reference = True
    layer: int | None = None
    steering_coeff: float = 20.0
    alpha: float = 100.0
    seed: int = 0
    train_modules: str = "gate_proj,up_proj,down_proj"

    def resolved_layer(self, model) -> int:
        if self.layer is not None:
            return int(self.layer)
        return min(7, int(model.config.num_hidden_layers) - 1)

    def direction(self, hidden_size: int) -> torch.Tensor:
        """The fixed unit vector u (cached on the method; the same for a given seed and size)."""
        u = getattr(self, "_u", None)
        if u is None or u.numel() != hidden_size:
            u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(self.seed))
            u = u / u.norm()
            self._u = u
        return u

    def trainable_layers(self, model) -> range:
        layer = self.resolved_layer(model)
        return range(max(0, layer - 2), layer + 1)

    def setup(self, model, reference=None) -> None:
        self.direction(int(model.config.hidden_size))
        if hasattr(model, "peft_config"):  # LoRA: the adapters train, the base stays frozen
            return
        layers = set(self.trainable_layers(model))
        leaves = {m.strip() for m in self.train_modules.split(",") if m.strip()}
        kept = 0
        for name, param in model.named_parameters():
            match = _LAYER_PARAM.search(name)
            train = bool(match) and int(match.group(1)) in layers and match.group(2) in leaves
            param.requires_grad_(train)
            kept += train
        if not kept:
            raise ValueError(f"RMU: no parameter named *.layers.N.mlp.{{{self.train_modules}}} for layers "
                             f"{sorted(layers)}; this architecture needs other module names")

    def loss(self, model, inputs, reference=None):
        layer = self.resolved_layer(model)
        h_forget = _layer_output(model, inputs.forget, layer)
        target = self.steering_coeff * self.direction(h_forget.shape[-1]).to(h_forget.device)
        forget = _masked_mse(h_forget, target, inputs.forget["attention_mask"])
        h_retain = _layer_output(model, inputs.retain, layer)
        with torch.no_grad():
            h_ref = _layer_output(reference, inputs.retain, layer)
        retain = _masked_mse(h_retain, h_ref, inputs.retain["attention_mask"])
        return forget + self.alpha * retain, {"rmu_forget": forget.item(), "rmu_retain": retain.item()}


UNLEARNING_METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (GradientAscent, GradDiff, KL, NPO, NPORetain, SimNPO, IDK, DPO, RMU)
}
UNLEARNING_METHODS["po"] = IDK  # SOUL's name for the same objective
