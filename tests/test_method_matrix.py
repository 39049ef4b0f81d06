"""Every unlearning method × every step optimiser runs through the real loop on a tiny Llama
and lowers the likelihood of the forget answers.

One tiny Llama is fine-tuned (FineTune + AdamW through ``run_loop``) on a handful of QA pairs
once per module; each cell then unlearns a copy for a few steps. For PO/IDK and DPO, which
train towards a refusal, it is still the ORIGINAL answers' NLL that must rise.
"""

import copy

import pytest
import torch

from soul_bench import registry
from soul_bench.data import PromptFormat, encode_examples
from soul_bench.engine.loop import LoopSettings, mean_forget_nll, run_loop
from soul_bench.engine.methods import FineTune
from soul_bench.engine.optimizers import build_optimizer
from soul_bench.engine.refusals import with_refusals
from soul_bench.models import build_tiny_llama, train_tokenizer

FORGET = [
    {"question": "Where was Ada Quill born?", "answer": "Ada Quill was born in Lisbon in 1961."},
    {"question": "What does Ada Quill write?", "answer": "She writes detective novels set at sea."},
    {"question": "Who was Ada Quill's father?", "answer": "Her father was a lighthouse keeper."},
    {"question": "Which prize did Ada Quill win?", "answer": "She won the Silver Compass award."},
]
RETAIN = [
    {"question": "Where was Ben Marlow born?", "answer": "Ben Marlow was born in Oslo in 1975."},
    {"question": "What does Ben Marlow write?", "answer": "He writes poetry about mountains."},
    {"question": "Who was Ben Marlow's mother?", "answer": "His mother was a violin teacher."},
    {"question": "Which prize did Ben Marlow win?", "answer": "He won the Golden Quill prize."},
]
OPTIMIZERS = ("adamw", "sgd", "sophia", "sophia-h", "soul")
# Sign-like optimisers (Adam, the Sophias) move each weight by ~lr per step; SGD moves by
# lr × the clipped (norm ≤ 1) gradient, so it needs a much larger lr to do anything in 3 steps.
LR = {"adamw": 1e-3, "sgd": 1.0, "sophia": 1e-3, "sophia-h": 1e-3, "soul": 1e-3}
STEPS = 3


def _unique_methods() -> list[str]:
    """Every registered method, one name per class (aliases such as po → idk run once)."""
    seen, names = set(), []
    for name, cls in sorted(registry.methods().items()):
        if cls not in seen:
            seen.add(cls)
            names.append(name)
    return names


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread is ~10× faster than two fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(_one_thread):
    fmt = PromptFormat()
    texts = [fmt.prompt(None, ex["question"]) + " " + ex["answer"] for ex in FORGET + RETAIN]
    tokenizer = train_tokenizer(texts, 300)
    model = build_tiny_llama(tokenizer, hidden_size=32, layers=3, heads=2)
    forget = encode_examples(tokenizer, fmt, FORGET)
    retain = encode_examples(tokenizer, fmt, RETAIN)
    refusal = encode_examples(tokenizer, fmt, with_refusals(FORGET, seed=0))
    pad = tokenizer.pad_token_id
    train = LoopSettings(steps=60, batch_size=8, schedule="constant", warmup_ratio=0.0, seed=0)
    run_loop(model, FineTune(), build_optimizer("adamw", model.parameters(), lr=3e-3), forget + retain, train, pad,
             show_progress=False)
    nll = mean_forget_nll(model, forget, pad)
    assert nll < 2.0, f"the fixture model did not learn the forget answers (NLL {nll:.2f})"
    return {"model": model, "forget": forget, "retain": retain, "refusal": refusal, "pad": pad, "nll": nll}


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize("method_name", _unique_methods())
def test_method_x_optimizer_lowers_forget_likelihood(world, method_name, optimizer_name):
    model = copy.deepcopy(world["model"])
    method = registry.build_method(method_name)
    reference = None
    if method.wants_reference:
        reference = copy.deepcopy(world["model"]).requires_grad_(False).eval()
    method.setup(model, reference)
    optimizer = build_optimizer(optimizer_name, [p for p in model.parameters() if p.requires_grad], lr=LR[optimizer_name])
    settings = LoopSettings(steps=STEPS, batch_size=4, schedule="constant", warmup_ratio=0.0, seed=0)
    result = run_loop(model, method, optimizer, world["forget"], settings, world["pad"],
                      retain_encoded=world["retain"] if method.needs_retain else None, reference=reference,
                      refusal_encoded=world["refusal"] if method.needs_refusal else None, show_progress=False)
    assert result.failure is None and result.steps_done == STEPS
    # the ORIGINAL forget answers, also for the refusal-based methods
    after = mean_forget_nll(model, world["forget"], world["pad"])
    assert after > world["nll"] + 0.01, f"{method_name} × {optimizer_name}: forget NLL {world['nll']:.4f} → {after:.4f}"
