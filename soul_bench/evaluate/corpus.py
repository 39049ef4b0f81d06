"""Likelihood probes over raw text: the evaluation every text-shaped task shares.

One likelihood pass over the windows (``soul_bench.data.encode_text``) of a few named
corpora — e.g. ``forget``, ``retain`` and ``holdout`` — gives each corpus's perplexity and
mean NLL, exact memorisation / extraction strength of the members, and the membership-
inference attacks members vs non-members (``soul_bench.evaluate.mia.membership_probes``).
WMDP (hazard corpus vs never-trained hazard-style text) and copyright (the book's passages
vs its held-out passages) both evaluate this way.
"""

from __future__ import annotations

import time

import numpy as np

from soul_bench.card import MiaSpec
from soul_bench.data import IGNORE_INDEX, PromptFormat, encode_rows
from soul_bench.evaluate import mia
from soul_bench.evaluate.likelihood import encoded_nll
from soul_bench.evaluate.metrics import corpus_perplexity


def corpus_probes(model, tokenizer, fmt: PromptFormat, corpora: dict[str, list[dict] | None], mia_options: MiaSpec,
                  max_length: int | None, batch_size: int = 32, members: str = "forget", nonmembers: str = "holdout",
                  missing_note: str = "") -> tuple[dict, dict]:
    """→ (metrics, per-item values) for ``corpora`` (name → ``{"text": ...}`` rows; None or empty
    rows are left out). Metrics: ``<name>/ppl`` (perplexity over all the corpus's tokens),
    ``<name>/avg_nll`` (mean over windows), the ``membership_probes`` metrics of ``members``
    vs ``nonmembers``; per-item: ``<name>: {avg_nll}``, ``mia`` (the probes' record) and
    ``timings``."""
    windows, slots = [], {}
    for name, rows in corpora.items():
        if not rows:
            continue
        encoded = encode_rows(tokenizer, fmt, rows, "text", max_length)
        slots[name] = list(range(len(windows), len(windows) + len(encoded)))
        windows += encoded
    member_slots, nonmember_slots = slots[members], slots.get(nonmembers)
    clock = time.perf_counter()
    likelihood = encoded_nll(model, tokenizer, windows, batch_size=batch_size,
                             keep_token_stats=member_slots + (nonmember_slots or []))
    timings = {"likelihood_s": time.perf_counter() - clock, "likelihood_sequences": len(windows)}

    results, per_item = {}, {}
    for name, group_slots in slots.items():
        results[f"{name}/ppl"] = corpus_perplexity(likelihood["sum_nll"][group_slots], likelihood["n_tokens"][group_slots])
        results[f"{name}/avg_nll"] = float(np.mean(likelihood["avg_nll"][group_slots]))
        per_item[name] = {"avg_nll": likelihood["avg_nll"][group_slots].tolist()}

    def text_of(slot: int) -> str:  # what ZLib compresses: the window's scored text
        ids, labels = windows[slot]
        return tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX], skip_special_tokens=True)

    def gradnorm(group):
        return mia.gradnorm_scores_encoded(model, tokenizer, [windows[i] for i in slots[group]], mia_options.include_eos)

    clock = time.perf_counter()
    mia_metrics, per_item["mia"] = mia.membership_probes(
        likelihood, member_slots, [text_of(i) for i in member_slots],
        nonmember_slots, [text_of(i) for i in nonmember_slots or []],
        k=mia_options.k, include_eos=mia_options.include_eos, privleak_attack=mia_options.privleak_attack,
        gradnorm=gradnorm if mia_options.gradnorm else None, members=members, nonmembers=nonmembers,
        missing_note=missing_note)
    timings["mia_s"] = time.perf_counter() - clock
    results.update(mia_metrics)
    per_item["timings"] = timings
    return results, per_item
