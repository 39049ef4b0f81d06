"""Batched passes over a model: answer likelihoods (teacher forced) and greedy generation.

One likelihood pass scores every (question, answer-variant) pair a task needs — ground
truth, paraphrase, perturbations — sorted by length so padding stays small; every metric is
then computed from these per-item numbers.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from soul_bench.data import PromptFormat, collate, encode_prompt, encode_qa, to_device
from soul_bench.evaluate.sharing import Sharing, current_sharing
from soul_bench.lm import token_nll

STAT_KEYS = ("token_logprobs", "token_mu", "token_sigma", "argmax_match", "token_is_eos")


def batch_starts(n: int, batch_size: int, description: str, sharing: Sharing | None = None):
    """range(0, n, batch_size) — with ``sharing``, only this process's batches of it
    (``soul_bench.evaluate.sharing``) — with a transient rich progress bar (shown on a terminal, by
    the main process only): evaluating a 7B model takes minutes, the tiny one a second."""
    from rich import get_console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    starts = list(range(0, n, batch_size))
    if sharing is not None:
        starts = sharing.mine(starts)
    sizes = [min(batch_size, n - start) for start in starts]
    # off in logs (Slurm, CI, a pipe): a transient bar there leaves only empty lines
    hidden = not get_console().is_terminal or (sharing is not None and sharing.rank != 0)
    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                  disable=hidden) as bar:
        task = bar.add_task(description, total=sum(sizes))
        for start, size in zip(starts, sizes):
            yield start
            bar.update(task, advance=size)


@torch.no_grad()
def answer_nll(model, tokenizer, fmt: PromptFormat, pairs: list[tuple[str, str]], batch_size: int = 32,
               keep_token_logprobs: bool = False, keep_token_stats: bool | Collection[int] = False) -> dict:
    """For each (question, answer): sum NLL and token count over answer (+EOS) tokens.

    Returns ``{"sum_nll": array, "n_tokens": array, "avg_nll": array}`` (and ``token_logprobs``,
    a list of per-token log-prob arrays, when ``keep_token_logprobs``).

    ``keep_token_stats`` (True for every item, or a collection of item indices for just those)
    adds, per item, lists of float32/bool numpy arrays over the same answer (+EOS) tokens —
    ``None`` for items not asked for — computed from the same forward pass:

    * ``token_logprobs``  log p(x_t | x_<t)
    * ``token_mu``        μ_t = E_{v~p_t}[log p(v)]          (Min-K%++)
    * ``token_sigma``     σ_t = sqrt(E_{v~p_t}[(log p(v))²] − μ_t²)
    * ``argmax_match``    argmax_v p_t(v) == x_t (teacher forced; exact memorisation, extraction strength)
    * ``token_is_eos``    True at the EOS after the answer (the last position, when its label is
                          ``tokenizer.eos_token_id``; a truncated answer has none) — the position
                          the token-level MIA scores leave out (``soul_bench.evaluate.mia``)

    The vocabulary-wide statistics are computed one sequence at a time on its answer positions
    only (float32), so the extra memory is one (answer length × vocabulary) matrix.
    """
    encoded = [encode_qa(tokenizer, fmt, q, a) for q, a in pairs]
    return encoded_nll(model, tokenizer, encoded, batch_size, keep_token_logprobs, keep_token_stats)


@torch.no_grad()
def encoded_nll(model, tokenizer, encoded: list[tuple[list[int], list[int]]], batch_size: int = 32,
                keep_token_logprobs: bool = False, keep_token_stats: bool | Collection[int] = False) -> dict:
    """:func:`answer_nll` for examples already encoded as (input_ids, labels) — any shape
    (``soul_bench.data.encode_rows``: QA, completion, text windows); the labelled positions
    are the ones scored."""
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    sum_nll = np.zeros(len(encoded))
    n_tokens = np.zeros(len(encoded))
    token_logprobs: list = [None] * len(encoded)
    if keep_token_stats is True:
        wanted = set(range(len(encoded)))
    else:
        wanted = set(keep_token_stats or ())
        if any(not 0 <= i < len(encoded) for i in wanted):
            raise IndexError("keep_token_stats names an item index outside the examples")
    stats = {key: [None] * len(encoded) for key in STAT_KEYS} if keep_token_stats is not False else None
    sharing = current_sharing()
    model.eval()
    for start in batch_starts(len(order), batch_size, "evaluate: likelihoods", sharing):
        idx = order[start : start + batch_size]
        batch = to_device(collate([encoded[i] for i in idx], tokenizer.pad_token_id), device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, mask = token_nll(logits, batch["labels"])
        for row, item in enumerate(idx):
            sum_nll[item] = nll[row].sum().item()
            n_tokens[item] = mask[row].sum().item()
            if keep_token_logprobs:
                token_logprobs[item] = -nll[row][mask[row]].cpu().numpy()
            if item in wanted:
                _token_stats(logits[row, :-1][mask[row]], batch["labels"][row, 1:][mask[row]], -nll[row][mask[row]], stats, item,
                             tokenizer.eos_token_id)
    if sharing.shared:  # every process's items, in every process
        kept = {i: (sum_nll[i], n_tokens[i], token_logprobs[i],
                    {key: values[i] for key, values in stats.items()} if stats is not None else None)
                for i in sharing.items_of_mine(order, batch_size)}
        for i, (total, count, logprobs, item_stats) in sharing.gather(kept).items():
            sum_nll[i], n_tokens[i], token_logprobs[i] = total, count, logprobs
            for key, value in (item_stats or {}).items():
                stats[key][i] = value
    out = {"sum_nll": sum_nll, "n_tokens": n_tokens, "avg_nll": sum_nll / np.maximum(n_tokens, 1)}
    if keep_token_logprobs:
        out["token_logprobs"] = token_logprobs
    if stats is not None:
        if keep_token_logprobs:  # the same numbers; keep the full list the older option promised
            stats["token_logprobs"] = token_logprobs
        out.update(stats)
    return out


def _token_stats(logits: torch.Tensor, labels: torch.Tensor, logprobs: torch.Tensor, stats: dict, item: int,
                 eos_token_id: int | None = None) -> None:
    """Fill ``stats[key][item]`` from one sequence's answer-position logits (n, vocab) and labels
    (n,), in order. ``token_is_eos`` marks the last position when its label is ``eos_token_id``
    (the EOS ``encode_qa`` appends; absent when ``max_length`` cut the answer)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    finite = p > 0  # a -inf logit (masked vocabulary entry) contributes nothing, not NaN
    plogp = torch.where(finite, p * logp, 0.0)
    mu = plogp.sum(-1)
    # σ² = E[(log p)²] − μ², computed as E[(log p − μ)²]: the same number without float32 cancellation
    centered = logp - mu[:, None]
    sigma = torch.where(finite, p * centered * centered, 0.0).sum(-1).sqrt()
    stats["token_logprobs"][item] = logprobs.float().cpu().numpy()
    stats["token_mu"][item] = mu.cpu().numpy()
    stats["token_sigma"][item] = sigma.cpu().numpy()
    stats["argmax_match"][item] = (logp.argmax(dim=-1) == labels).cpu().numpy()
    is_eos = np.zeros(len(labels), dtype=bool)
    if len(labels) and eos_token_id is not None and int(labels[-1]) == eos_token_id:
        is_eos[-1] = True
    stats["token_is_eos"][item] = is_eos


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of prompts padded on the left, so generation continues every
    row from its last real token."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention[row, width - len(ids):] = 1
    return input_ids, attention


@torch.no_grad()
def generate_answers(model, tokenizer, fmt: PromptFormat, questions: list[str], max_new_tokens: int | list[int],
                     batch_size: int = 32) -> list[str]:
    """Greedy answers (text after the prompt, up to EOS). Left-padded batches of similar length.

    ``max_new_tokens`` may be per question (TOFU: length of the reference answer + a margin)."""
    device = next(model.parameters()).device
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(questions)
    prompts = [encode_prompt(tokenizer, fmt, q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    pad, stops = tokenizer.pad_token_id, stop_token_ids(model, tokenizer)
    sharing = current_sharing()
    model.eval()
    for start in batch_starts(len(order), batch_size, "evaluate: generation", sharing):
        idx = order[start : start + batch_size]
        input_ids, attention = left_padded([prompts[i] for i in idx], pad)
        width = input_ids.shape[1]
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                max_new_tokens=max(limits[i] for i in idx), do_sample=False,
                                pad_token_id=pad, eos_token_id=stops)
        for row, i in enumerate(idx):
            answers[i] = _generated_text(tokenizer, output[row, width:].tolist(), limits[i], stops)
    if sharing.shared:
        mine = sharing.items_of_mine(order, batch_size)
        for i, answer in sharing.gather({i: answers[i] for i in mine}).items():
            answers[i] = answer
    return answers


@torch.no_grad()
def sample_continuations(model, tokenizer, fmt: PromptFormat, prompts: list[str], k: int, max_new_tokens: int,
                         seed: int = 0, temperature: float = 1.0, top_p: float = 0.9,
                         batch_size: int = 32) -> list[list[str]]:
    """``k`` sampled answers per prompt (nucleus sampling, as RealToxicityPrompts: top-p 0.9,
    temperature 1), text after the prompt up to EOS. Seeded: the same seed, model, prompts and
    batch size give the same samples; the caller's global RNG state is left as it was. Batches hold
    ``batch_size // k`` prompts (at least one), each repeated ``k`` times."""
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, fmt, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    samples: list[list[str]] = [[] for _ in prompts]
    pad, stops = tokenizer.pad_token_id, stop_token_ids(model, tokenizer)
    per_batch = max(1, batch_size // k)
    model.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in batch_starts(len(order), per_batch, "evaluate: sampling"):
            idx = order[start : start + per_batch]
            input_ids, attention = left_padded([encoded[i] for i in idx], pad)
            width = input_ids.shape[1]
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                    max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                    top_p=top_p, top_k=0, num_return_sequences=k, pad_token_id=pad, eos_token_id=stops)
            for row, i in enumerate(idx):
                samples[i] += [_generated_text(tokenizer, output[row * k + j, width:].tolist(), None, stops)
                               for j in range(k)]
    return samples


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's EOS and the model's own end tokens
    (``generation_config.eos_token_id``, an id or a list — e.g. Llama-3's ``<|eot_id|>`` beside
    ``<|end_of_text|>``), so a chat model stops at its end-of-turn marker."""
    stops = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    own = getattr(config, "eos_token_id", None) if config is not None else None
    stops += own if isinstance(own, (list, tuple)) else [own]
    return list(dict.fromkeys(i for i in stops if i is not None))


def _generated_text(tokenizer, new_tokens: list[int], limit: int | None = None, stops: list[int] | None = None) -> str:
    """The text of generated ids up to the first stop id (default: EOS), at most ``limit`` of them, stripped."""
    stops = set(stops if stops is not None else [tokenizer.eos_token_id])
    end = next((i for i, token in enumerate(new_tokens) if token in stops), len(new_tokens))
    return tokenizer.decode(new_tokens[:end][:limit], skip_special_tokens=True).strip()


def cut_to_tokens(tokenizer, texts: list[str], max_tokens: int) -> tuple[list[str], list[int]]:
    """Each text cut to its first ``max_tokens`` tokens (decoded back, stripped) and that token
    count (at least 1): the truth a greedy continuation with that budget is compared with, so
    the budget does not count against recall (MUSE's VerbMem cut; copyright's continuations)."""
    truths, budgets = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        truths.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        budgets.append(max(len(ids), 1))
    return truths, budgets
