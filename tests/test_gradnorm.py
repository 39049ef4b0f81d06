"""GradNorm in batches (torch.func per-sample gradients) gives the per-item loop's scores."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from soul_bench.data import IGNORE_INDEX, PromptFormat, encode_qa
from soul_bench.evaluate import mia

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Ada wrote about engines and numbers.",
             "Paris is the capital of France.", "Water boils at one hundred degrees."] * 3
# Different lengths, so that every batch pads its shorter items.
PAIRS = [("Who wrote about engines?", "Ada wrote about engines and numbers."),
         ("What is the capital of France?", "Paris."),
         ("When does water boil?", "Water boils at one hundred degrees, at sea level, as every cook knows."),
         ("What does the fox do?", "It jumps over the lazy dog."),
         ("Who?", "Ada."),
         ("What is the quick brown fox?", "The quick brown fox is a fox that jumps over the lazy dog, quickly."),
         ("Is Paris in France?", "Yes, Paris is the capital of France.")]
RTOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    from soul_bench.models import build_tiny_llama, train_tokenizer

    # Tensors this small gain nothing from threads, and on a busy machine threads waiting for
    # each other make every op many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = train_tokenizer(SENTENCES, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=0)
    model.eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def per_item(tiny):
    """The per-item loop's scores (B = 1) of :func:`encoded_items`, by include_eos."""
    model, tokenizer = tiny
    items = encoded_items(tokenizer)
    return {eos: mia.gradnorm_scores_encoded(model, tokenizer, items, eos, gradnorm_batch_size=1)
            for eos in (False, True)}


def tiny_llama(tokenizer):
    from soul_bench.models import build_tiny_llama

    return build_tiny_llama(tokenizer, hidden_size=32, layers=2, heads=2, seed=1).eval()


def encoded_items(tokenizer) -> list:
    """PAIRS encoded, plus an answer cut by max_length (no EOS) and an empty one (EOS only)."""
    items = [encode_qa(tokenizer, PromptFormat(), q, a) for q, a in PAIRS]
    ids, labels = items[2]
    items.append((ids[:-3], labels[:-3]))  # truncated: its last label is an answer token
    ids, labels = items[1]
    prompt = [i for i, label in zip(ids, labels) if label == IGNORE_INDEX]
    eos = tokenizer.eos_token_id
    items.append((prompt + [eos], [IGNORE_INDEX] * len(prompt) + [eos]))
    assert len({len(ids) for ids, _ in items}) == len(items)
    return items


def count_per_item_calls(monkeypatch) -> list:
    calls = []
    real = mia._item_gradnorm
    monkeypatch.setattr(mia, "_item_gradnorm", lambda *args: calls.append(1) or real(*args))
    return calls


@pytest.mark.parametrize("include_eos", [False, True])
@pytest.mark.parametrize("batch_size", [3, 4, None])
def test_batched_scores_equal_the_per_item_loop(tiny, per_item, monkeypatch, include_eos, batch_size):
    model, tokenizer = tiny
    items = encoded_items(tokenizer)
    calls = count_per_item_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        batched = mia.gradnorm_scores_encoded(model, tokenizer, items, include_eos, gradnorm_batch_size=batch_size)
    assert calls == []  # every item went through vmap (9 items: batches of 3 / 4 / automatic, one of 1 with B = 4)
    assert np.all(np.isfinite(batched)) and np.all(batched < 0)
    np.testing.assert_allclose(batched, per_item[include_eos], rtol=RTOL)


def test_gradnorm_scores_passes_the_batch_size_on(tiny, per_item, monkeypatch):
    model, tokenizer = tiny
    calls = count_per_item_calls(monkeypatch)
    batched = mia.gradnorm_scores(model, tokenizer, PromptFormat(), PAIRS, gradnorm_batch_size=4)
    np.testing.assert_allclose(batched, per_item[False][:len(PAIRS)], rtol=RTOL)
    assert calls == []
    one = mia.gradnorm_scores(model, tokenizer, PromptFormat(), PAIRS[:2], True, gradnorm_batch_size=1)
    assert len(calls) == 2  # positional include_eos, as the tasks call it, and B = 1: the loop
    np.testing.assert_allclose(one, per_item[True][:2], rtol=0)


def test_eos_masking_matters_only_where_there_is_an_eos_and_more(per_item):
    without, with_eos = per_item[False], per_item[True]
    # the EOS matters where there is an EOS and another label; not for the truncated or empty answer
    assert not np.allclose(without[:len(PAIRS)], with_eos[:len(PAIRS)], rtol=1e-3)
    np.testing.assert_allclose(without[len(PAIRS):], with_eos[len(PAIRS):], rtol=RTOL)


def test_falls_back_to_the_loop_when_vmap_refuses(tiny, per_item, monkeypatch):
    model, tokenizer = tiny
    items = encoded_items(tokenizer)

    def refuse(*args, **kwargs):
        raise RuntimeError("vmap: It looks like you're calling .item() on a Tensor\nmore lines")

    monkeypatch.setattr(torch.func, "vmap", refuse)
    calls = count_per_item_calls(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"torch.func failed \(RuntimeError: vmap: It looks like.*9 items left"):
        scores = mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=4)
    assert len(calls) == len(items)
    np.testing.assert_allclose(scores, per_item[False], rtol=0)  # the loop itself
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_falls_back_for_the_items_left_when_a_later_batch_fails(tiny, per_item, monkeypatch):
    model, tokenizer = tiny
    items = encoded_items(tokenizer)
    real_vmap = torch.func.vmap

    def first_batch_only(*args, **kwargs):
        batched = real_vmap(*args, **kwargs)
        runs = []

        def run(*inputs):
            runs.append(1)
            if len(runs) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return batched(*inputs)
        return run

    monkeypatch.setattr(torch.func, "vmap", first_batch_only)
    calls = count_per_item_calls(monkeypatch)
    with pytest.warns(RuntimeWarning, match="OutOfMemoryError: CUDA out of memory.*5 items left"):
        scores = mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=4)
    assert len(calls) == len(items) - 4
    np.testing.assert_allclose(scores, per_item[False], rtol=RTOL)


def test_frozen_and_partly_frozen_models(tiny, per_item):
    model, tokenizer = tiny
    items = encoded_items(tokenizer)
    trainable = per_item[False]
    model.requires_grad_(False)  # none trainable: all of them count, as when all are trainable
    try:
        np.testing.assert_allclose(mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=4),
                                   trainable, rtol=RTOL)
        assert not any(p.requires_grad for p in model.parameters())
        model.model.layers[1].requires_grad_(True)  # only the last layer's tensors count
        partly = [mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=b) for b in (1, 4)]
        np.testing.assert_allclose(partly[1], partly[0], rtol=RTOL)
        assert not np.allclose(partly[0], trainable, rtol=1e-3)
        assert [p.requires_grad for p in model.parameters()] == [
            name.startswith("model.layers.1.") for name, _ in model.named_parameters()]
    finally:
        model.requires_grad_(True)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_a_parameter_the_loss_never_reaches_is_left_out_as_by_the_loop(tiny):
    _, tokenizer = tiny
    model = tiny_llama(tokenizer)
    model.model.unused = torch.nn.Parameter(torch.ones(5))  # autograd.grad gives None: not in the mean
    items = encoded_items(tokenizer)
    per_item = mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=1)
    np.testing.assert_allclose(mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=4),
                               per_item, rtol=RTOL)


def test_lora_adapters_only(tiny):
    pytest.importorskip("peft")
    from soul_bench.engine.lora import apply_lora

    _, tokenizer = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft on transformers 5: a deprecated alias
        model = apply_lora(tiny_llama(tokenizer), {})
    with torch.no_grad():  # peft starts B at 0, which would make every A gradient 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    items = encoded_items(tokenizer)
    per_item = mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=1)
    np.testing.assert_allclose(mia.gradnorm_scores_encoded(model, tokenizer, items, gradnorm_batch_size=4),
                               per_item, rtol=RTOL)


def test_automatic_batch_size_from_the_gradient_budget():
    def params(numel, dtype=torch.float32, device="cpu"):
        return [torch.empty(1, dtype=dtype, device=device).expand(numel)]  # numel elements, none allocated

    cpu_budget, cpu_cap = mia.GRADNORM_BATCH_BUDGETS["cpu"]
    gpu_budget, gpu_cap = mia.GRADNORM_BATCH_BUDGETS["cuda"]
    assert mia.automatic_gradnorm_batch_size(params(cpu_budget // 4 // 3)) == 3  # three float32 gradients fit
    assert mia.automatic_gradnorm_batch_size(params(cpu_budget // 2 // 5, torch.bfloat16)) == 5  # dtype counts
    assert mia.automatic_gradnorm_batch_size(params(10)) == cpu_cap
    assert mia.automatic_gradnorm_batch_size(params(7 * 10**9, torch.bfloat16)) == 1  # a 7B model: the loop
    # another device (meta here) uses the CUDA budget
    assert mia.automatic_gradnorm_batch_size(params(gpu_budget // 2 // 6, torch.bfloat16, "meta")) == 6
    assert mia.automatic_gradnorm_batch_size(params(10, device="meta")) == gpu_cap


def test_bad_batch_size_and_no_items(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="gradnorm_batch_size"):
        mia.gradnorm_scores_encoded(model, tokenizer, encoded_items(tokenizer), gradnorm_batch_size=0)
    assert mia.gradnorm_scores_encoded(model, tokenizer, [], gradnorm_batch_size=4).shape == (0,)
