"""Membership-inference probes (as in open-unlearning, ``src/evals/metrics/mia.py``): per-sequence attack scores, the
attack AUC, PrivLeak, and the two memorisation measures of open-unlearning.

Conventions used throughout:

* **Members** are the forget set (the model was trained on them), **non-members** never-trained
  items (TOFU's holdout authors). Every score is oriented so that *higher = more likely a
  member*; the AUC labels members 1 (sklearn ``roc_auc_score``). An AUC of 1 means the attack
  picks out the forget set perfectly (nothing was unlearned), ≈ 0.5 means the forget set looks
  like never-seen data (the retain model's level), < 0.5 that it now looks *less* familiar
  than never-seen data (over-unlearning, a tell-tale of its own).
* Token statistics come over the **answer tokens and the EOS after them**, never the prompt —
  the label mask every soul-bench likelihood uses (``soul_bench.data``).
* **EOS.** The sequence-level attacks LOSS and ZLib use the mean NLL over that whole mask
  (answer + EOS), as open-unlearning's ``evaluate_probability`` does. The token-level scores —
  Min-K%, Min-K%++, GradNorm, exact memorisation, extraction strength — leave the EOS position
  out by default, as open-unlearning's ``tokenwise_logprobs`` / ``tokenwise_vocab_logprobs``
  do (they drop the last labelled position), so AUCs and PrivLeak compare with published MUSE /
  open-unlearning numbers. They take ``is_eos`` (a bool per position, from ``answer_nll``'s
  ``token_is_eos``): those positions are dropped; ``is_eos=None`` keeps every position (the
  TOFU card's ``mia.include_eos: true``). Unlike open-unlearning, which drops the last position
  blindly, only a position that *is* the EOS is dropped: an answer cut by ``max_length`` has
  none and keeps all its tokens. A sequence whose only scored position is EOS (an empty answer)
  keeps it — the score is then the EOS token's — rather than having nothing to score
  (open-unlearning returns 0 / None there).
* Empty token arrays are an error (every answer has at least its EOS).

Everything here is numpy except :func:`gradnorm_scores`, which needs the model.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib

import numpy as np

from soul_bench.evaluate.sharing import current_sharing

MAX_ROC_POINTS = 101
_MIN_SIGMA = 1e-3  # σ_t floor for Min-K%++: variance ≥ 1e-6, as open-unlearning clamps it


def _tokens(values, name: str = "token_logprobs") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty: a sequence needs at least one scored token")
    return array


def scored_positions(is_eos, n: int) -> np.ndarray:
    """Bool mask of the n positions a token-level score uses: every non-EOS position
    (``is_eos`` True marks the EOS after the answer). ``is_eos=None`` keeps all of them; so does
    a sequence with nothing but EOS (an empty answer: the EOS is all there is to score)."""
    if is_eos is None:
        return np.ones(n, dtype=bool)
    eos = np.asarray(is_eos, dtype=bool).reshape(-1)
    if eos.size != n:
        raise ValueError(f"is_eos has {eos.size} positions, the token statistics {n}")
    keep = ~eos
    return keep if keep.any() else np.ones(n, dtype=bool)


def _without_eos(array: np.ndarray, is_eos) -> np.ndarray:
    return array[scored_positions(is_eos, len(array))]


def _k_lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the ⌊k·n⌋ smallest values (at least one), as Min-K% and open-unlearning count."""
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be in (0, 1], got {k}")
    count = max(1, int(len(values) * k))
    return float(np.mean(np.sort(values)[:count]))


# ------------------------------------------------------------------ per-sequence scores
def loss_score(token_logprobs) -> float:
    """LOSS attack (Yeom et al. 2018, "Privacy risk in machine learning"):
    score = −avg NLL = (1/n) Σ_t log p(x_t | x_<t) over every scored position (answer + EOS, as
    open-unlearning). Members have low loss → high score."""
    return float(np.mean(_tokens(token_logprobs)))


def zlib_score(token_logprobs, text: str) -> float:
    """ZLib attack (Carlini et al. 2021, "Extracting training data from large language models"),
    as mimir and open-unlearning compute it: the likelihood calibrated by the text's zlib entropy,

        score = −( avg NLL / len(zlib.compress(text.encode("utf-8"))) ),

    avg NLL = −(1/n) Σ_t log p(x_t | x_<t) over every scored position (answer + EOS, as LOSS).
    ``text`` is the scored text (for TOFU: the answer string; open-unlearning compresses the
    answer decoded from its label ids, special tokens skipped — the same text up to the
    tokenizer's round trip)."""
    lp = _tokens(token_logprobs)
    entropy = len(zlib.compress(text.encode("utf-8")))
    return float(np.mean(lp) / entropy)  # = −(avg NLL / entropy)


def min_k_score(token_logprobs, k: float = 0.4, is_eos=None) -> float:
    """Min-K% Prob (Shi et al. 2024, "Detecting pretraining data from large language models"):
    mean of the k-fraction lowest token log-probs, max(1, ⌊k·n⌋) tokens, n counted after the
    ``is_eos`` positions are dropped (module docstring). An unseen text has a few very unlikely
    tokens; a memorised one has none. k = 0.4 as in open-unlearning's TOFU / MUSE configs."""
    return _k_lowest_mean(_without_eos(_tokens(token_logprobs), is_eos), k)


def min_k_plus_plus_score(token_logprobs, mu, sigma, k: float = 0.4, is_eos=None) -> float:
    """Min-K%++ (Zhang et al. 2024, "Min-K%++: improved baseline for detecting pre-training
    data from large language models"): each token's log-prob is standardised by the model's
    next-token distribution p_t at that position,

        z_t = (log p(x_t) − μ_t) / σ_t,   μ_t = E_{v~p_t}[log p(v)],
        σ_t² = E_{v~p_t}[(log p(v))²] − μ_t²,

    and the score is the mean of the max(1, ⌊k·n⌋) lowest z_t (σ_t floored at 1e-3, i.e.
    σ_t² ≥ 1e-6 as open-unlearning clamps), over the positions left after dropping ``is_eos``.
    Training on x pushes x_t towards a local mode of p_t, so members have high z_t."""
    lp = _tokens(token_logprobs)
    mu, sigma = _tokens(mu, "mu"), _tokens(sigma, "sigma")
    if not (len(lp) == len(mu) == len(sigma)):
        raise ValueError(f"token_logprobs, mu and sigma differ in length ({len(lp)}, {len(mu)}, {len(sigma)})")
    z = (lp - mu) / np.maximum(sigma, _MIN_SIGMA)
    return _k_lowest_mean(_without_eos(z, is_eos), k)


def reference_score(avg_nll, reference_avg_nll):
    """Reference-model attack (Carlini et al. 2021; "Ref" in mimir / open-unlearning):
    score = −(avg NLL_model(x) − avg NLL_reference(x)). The reference (here: the retain model,
    which never saw the forget set) calibrates away how hard x is for any model. Works on scalars
    or arrays (element-wise)."""
    out = -(np.asarray(avg_nll, dtype=np.float64) - np.asarray(reference_avg_nll, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


# Automatic GradNorm batch size, per device type: (bytes of per-sample gradients one batch may
# hold, most items per batch). On CPU a batch is no faster than the per-item loop once its
# gradients and activations leave the caches: benchmarks/gradnorm_speed.py (one thread) peaks
# near B = 8 on the TOFU 'tiny' Llama (18 MiB a gradient) and B = 16 on 'micro' (0.6 MiB), and
# B = 58 (1 GiB) runs at half the loop's speed. On a GPU the per-item loop of a small model is
# bound by kernel launches, which a batch shares.
GRADNORM_BATCH_BUDGETS = {"cpu": (128 * 2**20, 16), "cuda": (2**30, 64)}


def gradnorm_scores(model, tokenizer, fmt, pairs: list[tuple[str, str]], include_eos: bool = False, *,
                    gradnorm_batch_size: int | None = None) -> np.ndarray:
    """GradNorm attack (Wang et al. 2024, "Pandora's white-box: precise training data detection
    and extraction in large language models"; as open-unlearning's ``GradNormAttack``,
    ``src/evals/metrics/mia/gradnorm.py``, with p = 2): per (question, answer) pair,

        score = −(1/|P|) Σ_{θ ∈ P} ‖∇_θ NLL(x)‖₂,

    NLL(x) the *mean* NLL over the answer tokens, P the parameter tensors that receive a
    gradient (the trainable ones the loss reaches; all of them if none is trainable), each
    tensor's own L2 norm (not the norm of the whole gradient). A member sits near a minimum of
    the loss, so its gradient is small → negated so that higher = member.

    The EOS label after the answer is masked unless ``include_eos`` (open-unlearning's
    ``tokenwise_logprobs`` drops it too); an answer with no other label keeps it (module
    docstring). Unlike open-unlearning, which runs this in train mode, dropout stays off.

    ``gradnorm_batch_size`` B: items whose per-sample gradients are computed together
    (:func:`gradnorm_scores_encoded`); None picks B from :data:`GRADNORM_BATCH_BUDGETS`,
    1 is one forward + backward per item. Every B gives the same scores (up to float rounding).
    """
    from soul_bench.data import encode_qa

    encoded = [encode_qa(tokenizer, fmt, q, a) for q, a in pairs]
    return gradnorm_scores_encoded(model, tokenizer, encoded, include_eos, gradnorm_batch_size=gradnorm_batch_size)


def gradnorm_scores_encoded(model, tokenizer, encoded: list[tuple[list[int], list[int]]],
                            include_eos: bool = False, *, gradnorm_batch_size: int | None = None) -> np.ndarray:
    """:func:`gradnorm_scores` of examples already encoded as (input_ids, labels), any shape.

    B = ``gradnorm_batch_size`` (None: :func:`automatic_gradnorm_batch_size`). B = 1: one
    forward + backward per item (batch of one, no padding), gradients from
    ``torch.autograd.grad``. B > 1: the per-sample gradients of B items at a time from
    ``torch.func`` — ``vmap(grad(loss))`` over a right-padded batch, the parameters passed
    through ``functional_call`` — and only their per-tensor norms are kept. The same numbers:
    each item's loss is computed alone (vmap gives the model a batch of one), and right padding
    cannot reach its labelled positions through causal attention. Items are grouped by length
    (less padding). A model that vmap cannot run (data-dependent control flow in its forward,
    out of memory, ...) falls back to the per-item loop for the items left, with a warning.
    Inside ``soul_bench.evaluate.sharing.shared_among`` each process scores its share of those
    length groups and every process gets all the scores.

    Model in eval mode (no dropout) throughout. No ``.grad`` is accumulated and no optimiser
    state is touched; afterwards every ``.grad`` is None, the ``requires_grad`` flags are
    restored and the model is left in eval mode.
    """
    if gradnorm_batch_size is not None and gradnorm_batch_size < 1:
        raise ValueError(f"gradnorm_batch_size must be ≥ 1 or None, got {gradnorm_batch_size}")
    if not include_eos:
        encoded = [(ids, mask_eos_label(labels, tokenizer.eos_token_id)) for ids, labels in encoded]
    scores = np.zeros(len(encoded))
    sharing = current_sharing()
    with _gradients_enabled(model) as trainable:
        batch_size = gradnorm_batch_size or automatic_gradnorm_batch_size(trainable)
        # this process's batches of the length-sorted items (all of them in one process)
        mine = sharing.items_of_mine(sorted(range(len(encoded)), key=lambda i: len(encoded[i][0])), batch_size)
        examples, own_scores = [encoded[i] for i in mine], np.zeros(len(mine))
        left = list(range(len(examples)))
        # checkpointed layers call requires_grad_ inside the forward, which torch.func refuses
        checkpointed = getattr(model, "is_activation_checkpointing", None)
        if checkpointed is None:  # transformers < 5
            checkpointed = getattr(model, "is_gradient_checkpointing", False)
        if batch_size > 1 and len(examples) > 1 and not checkpointed:
            left = _score_in_batches(model, tokenizer.pad_token_id, examples, trainable, batch_size, own_scores)
        for i in left:
            own_scores[i] = _item_gradnorm(model, tokenizer.pad_token_id, examples[i], trainable)
    for i, score in sharing.gather(dict(zip(mine, own_scores.tolist()))).items():
        scores[i] = score
    return scores


def automatic_gradnorm_batch_size(parameters) -> int:
    """How many items' per-sample gradients fit into the budget of the parameters' device
    (:data:`GRADNORM_BATCH_BUDGETS`; other devices as CUDA): one item holds a gradient of every
    parameter, in the parameter's dtype, and vmap keeps B of them at once. At least 1 — a 7B
    model in bf16 (14 GB a gradient) gets the per-item loop — and at most the device's cap."""
    parameters = list(parameters)
    device = parameters[0].device.type if parameters else "cpu"
    budget_bytes, most_items = GRADNORM_BATCH_BUDGETS.get(device, GRADNORM_BATCH_BUDGETS["cuda"])
    per_item = sum(p.numel() * p.element_size() for p in parameters)
    return int(min(most_items, max(1, budget_bytes // max(per_item, 1))))


@contextlib.contextmanager
def _gradients_enabled(model):
    """The model in eval mode, yielding the parameters to differentiate: the trainable ones, or
    all of them (made trainable for the while) when none is. Restores the ``requires_grad``
    flags and clears every ``.grad`` on exit."""
    import torch

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    if not any(flags):
        for p in params:
            p.requires_grad_(True)
    model.eval()
    try:
        with torch.enable_grad():
            yield [p for p in params if p.requires_grad]
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
        model.eval()


def _item_gradnorm(model, pad_id: int, example, trainable) -> float:
    """One item's GradNorm score by a forward + backward on it alone (batch of one)."""
    import torch

    from soul_bench.data import collate, to_device
    from soul_bench.lm import token_nll

    batch = to_device(collate([example], pad_id), next(model.parameters()).device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, mask = token_nll(logits, batch["labels"])
    loss = nll.sum() / mask.sum().clamp(min=1)
    grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    norms = [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]
    return -torch.stack(norms).mean().item()


# vmap's refusals (data-dependent control flow, missing batching rules raised as errors, an
# argument a model does not take) and out-of-memory (a RuntimeError) all end in the loop.
_VMAP_FAILURES = (RuntimeError, TypeError, ValueError)


def _score_in_batches(model, pad_id: int, encoded, trainable, batch_size: int, scores: np.ndarray) -> list[int]:
    """Fill ``scores`` with per-sample gradient norms, ``batch_size`` items of similar length at
    a time; → the indices left unscored (all of them from the first batch vmap fails on)."""
    from soul_bench.data import collate, to_device

    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    chunks = [by_length[start:start + batch_size] for start in range(0, len(by_length), batch_size)]
    done = 0
    try:
        per_sample_norms = _per_sample_norms_function(model, pad_id, encoded[chunks[0][0]], trainable)
        device = next(model.parameters()).device
        for chunk in chunks:
            batch = to_device(collate([encoded[i] for i in chunk], pad_id), device)
            norms = per_sample_norms(batch["input_ids"], batch["labels"])  # (B, tensors)
            scores[chunk] = (-norms.mean(dim=1)).cpu().numpy()
            done += 1
    except _VMAP_FAILURES as exc:
        reason = (str(exc).splitlines() or [""])[0]
        warnings.warn(f"GradNorm: per-sample gradients with torch.func failed ({type(exc).__name__}: {reason}); "
                      f"scoring the {len(encoded) - sum(map(len, chunks[:done]))} items left one at a time",
                      RuntimeWarning, stacklevel=3)
    return [i for chunk in chunks[done:] for i in chunk]


def _per_sample_norms_function(model, pad_id: int, probe_example, trainable):
    """(input_ids, labels) of a right-padded batch → (B, |P|) float32 per-tensor L2 norms of
    each item's own ∇_θ mean NLL, via ``vmap(grad(...))`` over ``functional_call``; P as in
    :func:`_reached_parameters`."""
    import torch
    from torch.func import functional_call, grad, vmap

    from soul_bench.lm import math_attention, token_nll

    reached = _reached_parameters(model, pad_id, probe_example, trainable)
    names = {id(p): name for name, p in model.named_parameters()}
    # A tied weight (embedding = LM head) is one entry; functional_call ties it back.
    differentiated = {names[id(p)]: p.detach() for p in reached}

    def item_loss(params, ids, labels):
        # No attention mask: under causal attention a right-padded item's real positions never
        # see the padding, and the padding carries no label. (The mask would send transformers'
        # mask builder into data-dependent checks that vmap refuses.)
        logits = functional_call(model, params, args=(), kwargs={"input_ids": ids[None]}).logits
        nll, mask = token_nll(logits, labels[None])
        return nll.sum() / mask.sum().clamp(min=1)

    def item_norms(params, ids, labels):
        grads = grad(item_loss)(params, ids, labels)
        return torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads.values()])

    batched = vmap(item_norms, in_dims=(None, 0, 0))

    def per_sample_norms(input_ids, labels):
        with math_attention():  # the fused SDPA backward kernels have no vmap batching rule
            return batched(differentiated, input_ids, labels)

    return per_sample_norms


def _reached_parameters(model, pad_id: int, example, trainable) -> list:
    """The ``trainable`` tensors that one item's loss reaches in the autograd graph — those
    ``torch.autograd.grad(..., allow_unused=True)`` gives a gradient, not None, so the batched
    mean runs over the same P as the per-item loop (``torch.func.grad`` returns zeros for an
    unused one, which would lower the mean). One forward, no backward. A model whose used
    parameters depend on the input (routing) has data-dependent control flow, which vmap
    refuses anyway."""
    from soul_bench.data import collate, to_device
    from soul_bench.lm import token_nll

    batch = to_device(collate([example], pad_id), next(model.parameters()).device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, _ = token_nll(logits, batch["labels"])
    leaves = _graph_leaves(nll.sum().grad_fn)
    return [p for p in trainable if id(p) in leaves]


def _graph_leaves(root) -> set[int]:
    """ids of the leaf tensors (``AccumulateGrad`` nodes' variables) an autograd graph reaches."""
    leaves, seen, stack = set(), set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def mask_eos_label(labels: list[int], eos_token_id: int | None) -> list[int]:
    """``labels`` (an ``encode_qa`` label list) with the EOS after the answer set to the ignore
    index: the last labelled position, when it is ``eos_token_id`` (an answer cut by
    ``max_length`` has no EOS and is returned unchanged, as is one whose only label is EOS)."""
    from soul_bench.data import IGNORE_INDEX

    labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    if len(labelled) < 2 or eos_token_id is None or labels[labelled[-1]] != eos_token_id:
        return list(labels)
    out = list(labels)
    out[labelled[-1]] = IGNORE_INDEX
    return out


# ------------------------------------------------------------------ attack summaries
def attack_auc(member_scores, nonmember_scores) -> tuple[float, dict[str, list[float]]]:
    """ROC AUC of an attack (members labelled 1, higher score = member): the probability that
    a random member outscores a random non-member (ties count ½). Returns (auc, roc) with roc =
    {"fpr": [...], "tpr": [...]} from sklearn ``roc_curve``, thinned to ≤ 101 points (first and
    last kept) so records stay small."""
    from sklearn.metrics import roc_auc_score, roc_curve

    members = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("an attack AUC needs at least one member and one non-member score")
    if not (np.all(np.isfinite(members)) and np.all(np.isfinite(nonmembers))):
        raise ValueError("attack scores must be finite")
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    scores = np.concatenate([members, nonmembers])
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores)
    if len(fpr) > MAX_ROC_POINTS:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, MAX_ROC_POINTS)).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return auc, {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]}


def privleak(auc_unlearned: float, auc_retain: float | None = None) -> float:
    """PrivLeak (Shi et al. 2024, MUSE, "Six-way evaluation for machine unlearning"), computed
    as open-unlearning does: with A' = 1 − AUC (AUC in the usual convention, 1 = members
    perfectly detected),

        PrivLeak = (A'_unlearned − A'_retain) / A'_retain × 100.

    ≈ 0 is ideal (the forget set is as detectable as for a model never trained on it); the
    target model scores near −100; under-unlearning shows as negative, over-unlearning as
    positive values. Without a retain model A'_retain = 0.5 (a chance-level attack), the
    open-unlearning default. As open-unlearning, the denominator gets +1e-10 so a retain AUC of
    exactly 1 gives a huge but finite number. (MUSE's own code writes AUC in the inverted
    convention, so its hard-coded retain AUCs — News 0.4772, Books 0.5393 — are A' values.)"""
    reference = 0.5 if auc_retain is None else 1.0 - float(auc_retain)
    return float(((1.0 - float(auc_unlearned)) - reference) / (reference + 1e-10) * 100.0)


# ------------------------------------------------------------------ memorisation
def _matches(argmax_match) -> np.ndarray:
    array = np.asarray(argmax_match, dtype=bool).reshape(-1)
    if array.size == 0:
        raise ValueError("argmax_match is empty: a sequence needs at least one scored token")
    return array


def exact_memorisation(argmax_match, is_eos=None) -> float:
    """Exact memorisation (Tirumala et al. 2022, "Memorization without overfitting"; as in
    open-unlearning): the fraction of answer tokens whose teacher-forced argmax prediction is the
    true token, EM = (1/|y|) Σ_t 1[argmax p(·|y_<t) = y_t], y without the ``is_eos`` positions."""
    return float(np.mean(_without_eos(_matches(argmax_match), is_eos)))


def extraction_strength(argmax_match, is_eos=None) -> float:
    """Extraction strength (Carlini et al. 2021 / open-unlearning): ES = 1 − k*/|y|, k* the
    smallest prefix length such that, teacher-forced on y_<k*, the argmax predictions reproduce
    the whole rest y_k*… (matches[k*:] all true). All tokens right → k* = 0 → ES = 1; the last
    token wrong → k* = |y| → ES = 0. y leaves out the ``is_eos`` positions.

    open-unlearning's loop only tries k < |y| and keeps the last k when none works, giving
    1/|y| instead of 0 when not even the last token matches; here k* = |y| (the empty suffix)
    and ES = 0, as the definition says."""
    matches = _without_eos(_matches(argmax_match), is_eos)
    wrong = np.flatnonzero(~matches)
    k_star = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    return 1.0 - k_star / len(matches)


# ------------------------------------------------------------------ probes of a task
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm")  # from one model; "reference" needs two


def membership_probes(likelihood: dict, member_slots: list[int], member_texts: list[str],
                      nonmember_slots: list[int] | None = None, nonmember_texts: list[str] | None = None, *,
                      k: float = 0.4, include_eos: bool = False, privleak_attack: str = "min_k",
                      gradnorm=None, members: str = "forget", nonmembers: str = "holdout",
                      missing_note: str = "") -> tuple[dict, dict]:
    """Memorisation of the members and membership-inference attacks, members vs non-members,
    from one likelihood pass (``soul_bench.evaluate.likelihood.encoded_nll`` / ``answer_nll``
    with ``keep_token_stats`` for the member and non-member slots). Any task uses it: a slot is
    an item of that pass, its text what ZLib compresses (the scored text: an answer, a
    continuation, a document window).

    ``gradnorm``: None (attack off) or a function group name → per-item GradNorm scores (it runs
    the backward passes; ``include_eos`` is the caller's to pass on). → (metrics, record) with
    metrics ``<members>/exact_memorisation``, ``<members>/extraction_strength`` and
    ``mia/<attack>_auc`` (None without non-members), and the record — JSON lists, items in slot
    order — that :func:`reference_probes` and the report's ROC figure read:

    ``members``, ``nonmembers`` (group names; None without non-members), ``k``,
    ``privleak_attack``, ``include_eos``, ``notes`` (why a metric is None),
    ``exact_memorisation`` / ``extraction_strength`` per member, ``avg_nll`` {group: list},
    ``scores`` {attack: {group: list}} (higher = member), ``auc`` {attack: float|None},
    ``roc`` {attack: {fpr, tpr}|None}.
    """
    eos = [None if include_eos else flags for flags in likelihood["token_is_eos"]]  # None keeps EOS
    em = [exact_memorisation(likelihood["argmax_match"][i], eos[i]) for i in member_slots]
    es = [extraction_strength(likelihood["argmax_match"][i], eos[i]) for i in member_slots]
    metrics = {f"{members}/exact_memorisation": float(np.mean(em)), f"{members}/extraction_strength": float(np.mean(es))}
    metrics.update({f"mia/{attack}_auc": None for attack in ATTACKS})
    record = {"members": members, "nonmembers": None, "k": k, "privleak_attack": privleak_attack,
              "include_eos": include_eos, "notes": [], "exact_memorisation": em, "extraction_strength": es,
              "avg_nll": {members: likelihood["avg_nll"][member_slots].tolist()}, "scores": {}, "auc": {}, "roc": {}}
    if not nonmember_slots:
        record["notes"].append(missing_note or "no non-members in the task data: every mia/* metric is None")
        return metrics, record
    record["nonmembers"] = nonmembers
    record["avg_nll"][nonmembers] = likelihood["avg_nll"][nonmember_slots].tolist()
    groups = {members: (member_slots, member_texts), nonmembers: (nonmember_slots, nonmember_texts)}

    def per_group(score):
        return {group: [score(i, text) for i, text in zip(slots, texts)] for group, (slots, texts) in groups.items()}

    lp, mu, sigma = likelihood["token_logprobs"], likelihood["token_mu"], likelihood["token_sigma"]
    record["scores"]["loss"] = per_group(lambda i, text: loss_score(lp[i]))
    record["scores"]["zlib"] = per_group(lambda i, text: zlib_score(lp[i], text))
    record["scores"]["min_k"] = per_group(lambda i, text: min_k_score(lp[i], k, eos[i]))
    record["scores"]["min_k_plus_plus"] = per_group(lambda i, text: min_k_plus_plus_score(lp[i], mu[i], sigma[i], k, eos[i]))
    if gradnorm is not None:
        record["scores"]["gradnorm"] = {group: np.asarray(gradnorm(group)).tolist() for group in groups}
    else:
        record["notes"].append("gradnorm is off (mia.gradnorm: false): mia/gradnorm_auc is None")
    for attack, scores in record["scores"].items():
        metrics[f"mia/{attack}_auc"] = record_auc(record, attack, scores)
    return metrics, record


def record_auc(record: dict, attack: str, scores: dict) -> float | None:
    """AUC of one attack (members vs non-members) into ``record``; None, with a note, when it cannot be computed."""
    try:
        auc, roc = attack_auc(scores[record["members"]], scores[record["nonmembers"]])
    except ValueError as exc:
        record["notes"].append(f"{attack}: no AUC ({exc})")
        record["auc"][attack], record["roc"][attack] = None, None
        return None
    record["auc"][attack], record["roc"][attack] = auc, roc
    return auc


def reference_probes(mine: dict | None, theirs: dict | None) -> dict:
    """The probes that compare with the reference (retain) model's :func:`membership_probes`
    record ``theirs`` (None without one), written into ``mine``:

    * ``mia/privleak``: PrivLeak of ``mine["privleak_attack"]``'s AUC, A'_retain from the
      reference's AUC (0.5 without one); ``mine["privleak_retain_auc"]`` says which was used;
    * ``mia/reference_auc``: the reference attack, −(avg NLL − reference avg NLL) per item, when
      the reference scored the same members and non-members.
    Both None without non-members."""
    out = {"mia/reference_auc": None, "mia/privleak": None}
    if not mine or mine.get("nonmembers") is None:
        return out
    theirs = theirs or {}
    attack = mine.get("privleak_attack", "min_k")
    auc = mine["auc"].get(attack)
    retain_auc = (theirs.get("auc") or {}).get(attack)
    if auc is not None:
        out["mia/privleak"] = privleak(auc, retain_auc)
        mine["privleak_retain_auc"] = retain_auc  # None: A'_retain = 0.5 was used
    groups = (mine["members"], mine["nonmembers"])
    ref_nll = theirs.get("avg_nll") or {}
    if all(len(ref_nll.get(group) or []) == len(mine["avg_nll"][group]) > 0 for group in groups):
        mine["scores"]["reference"] = {group: reference_score(mine["avg_nll"][group], ref_nll[group]).tolist()
                                       for group in groups}
        out["mia/reference_auc"] = record_auc(mine, "reference", mine["scores"]["reference"])
    elif theirs:
        mine["notes"].append("the reference model's records do not cover the same members / non-members: no reference attack")
    return out
