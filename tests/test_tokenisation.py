"""Prompt/answer tokenisation (soul_bench.data): the whole text is tokenised once and only the
tokens after the prompt are labelled (+ EOS), so SentencePiece and chat-template models are
scored on the ids they actually see. Tokenizers are built offline with ``tokenizers``."""

from __future__ import annotations

import pytest
import torch
from toy_tokenizers import sentencepiece_like
from transformers import PreTrainedTokenizerFast

from soul_bench.data import IGNORE_INDEX, PromptFormat, answer_length, encode_examples, encode_prompt, encode_qa
from soul_bench.evaluate.likelihood import generate_answers
from soul_bench.models import train_tokenizer

PAIRS = [
    ("Where was Ada born?", "The author Ada was born in Lisbon."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote the book?", "Ada wrote it in 1999, after a long trip."),
    ("How many novels?", "3 novels, all about the sea."),
    ("What did she say?", '"Never again," she said.'),
    ("Whose pen is it?", "It's Ada's pen."),
    ("Any symbols?", "... and -- maybe; (perhaps) [yes]!"),
    ("Where next?", "Café Zürich — naïve façade."),
    ("Empty?", ""),
    ("Spaces?", "  two leading spaces"),
]
CORPUS = [f"Question: {q}\nAnswer: {a}" for q, a in PAIRS] * 4
CHAT_TOKENS = ["<|user|>", "<|end|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|user|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _chat(layout: str) -> PreTrainedTokenizerFast:
    tokenizer = sentencepiece_like(layout, corpus=CORPUS)
    tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def byte_level():
    return train_tokenizer(CORPUS, 400)


def old_encode_qa(tokenizer, fmt, question, answer):
    """The code before the fix: prompt ids + the answer tokenised on its own + EOS."""
    add_special = fmt.template != "chat"
    ids = tokenizer(fmt.prompt(tokenizer, question), add_special_tokens=add_special)["input_ids"]
    if add_special and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    answer_ids = tokenizer(fmt.answer_prefix + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids + answer_ids, [IGNORE_INDEX] * len(ids) + answer_ids


def _start(labels):
    return next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)


def _check_single_pass(tokenizer, fmt, question, answer):
    """Labels = the full text's ids after the prompt + EOS; the prompt's ids are their prefix."""
    ids, labels = encode_qa(tokenizer, fmt, question, answer)
    full = tokenizer(fmt.prompt(tokenizer, question) + fmt.answer_prefix + answer,
                     add_special_tokens=fmt.template != "chat")["input_ids"]
    prompt = encode_prompt(tokenizer, fmt, question)
    assert ids == full + [tokenizer.eos_token_id]
    assert ids[: len(prompt)] == prompt and _start(labels) == len(prompt)
    assert labels == [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]
    assert labels[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    assert answer_length(tokenizer, fmt, question, answer) == len(ids) - len(prompt) - 1
    assert tokenizer.decode(ids[len(prompt):-1]).strip() == answer.strip()
    return ids, labels, prompt


@pytest.mark.parametrize("layout", ["llama2", "metaspace"])
def test_sentencepiece_labels_are_the_answer_in_context(layout):
    tokenizer, fmt = sentencepiece_like(layout, corpus=CORPUS), PromptFormat()
    for question, answer in PAIRS:
        _check_single_pass(tokenizer, fmt, question, answer)
    ids, labels, prompt = _check_single_pass(tokenizer, fmt, *PAIRS[0])
    answer_tokens = tokenizer.convert_ids_to_tokens(ids[len(prompt):-1])
    assert answer_tokens[0] == "▁The" and "▁" not in answer_tokens
    # the answer's tokens in another context (after a word) are the labelled ones, + EOS
    context = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    in_context = tokenizer("Hello " + PAIRS[0][1], add_special_tokens=False)["input_ids"]
    assert in_context[: len(context)] == context
    assert sum(label != IGNORE_INDEX for label in labels) == len(in_context) - len(context) + 1
    assert ids[len(prompt):-1] == in_context[len(context):]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_llama2_old_way_added_a_spurious_space_token():
    """The bug this guards against: the old code labelled ``▁ ▁The …`` for Llama-2's tokenizer."""
    tokenizer, fmt = sentencepiece_like("llama2", corpus=CORPUS), PromptFormat()
    question, answer = PAIRS[0]
    new_ids, new_labels = encode_qa(tokenizer, fmt, question, answer)
    old_ids, old_labels = old_encode_qa(tokenizer, fmt, question, answer)
    old_answer = [label for label in old_labels if label != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(old_answer[:2]) == ["▁", "▁The"]
    assert len(old_answer) == sum(label != IGNORE_INDEX for label in new_labels) + 1
    assert (old_ids, old_labels) != (new_ids, new_labels)


def test_tokenizer_that_appends_eos_gets_one_eos():
    tokenizer, fmt = sentencepiece_like("metaspace", append_eos=True, corpus=CORPUS), PromptFormat()
    question, answer = PAIRS[1]
    ids, labels = encode_qa(tokenizer, fmt, question, answer)
    prompt = encode_prompt(tokenizer, fmt, question)
    assert prompt[-1] != tokenizer.eos_token_id
    assert ids == tokenizer(fmt.prompt(tokenizer, question) + " " + answer)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    assert _start(labels) == len(prompt) and ids[: len(prompt)] == prompt


@pytest.mark.parametrize("layout", ["llama2", "metaspace"])
def test_chat_template_labels_follow_the_rendered_prompt(layout):
    tokenizer, fmt = _chat(layout), PromptFormat(template="chat")
    for question, answer in PAIRS:
        ids, labels, prompt = _check_single_pass(tokenizer, fmt, question, answer)
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1  # the template's, not doubled
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                 add_generation_prompt=True)
        assert rendered.endswith("<|assistant|>\n") and prompt == tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if layout == "llama2" and answer:  # the old way labelled ▁ ▁The … after the template too
            assert old_encode_qa(tokenizer, fmt, question, answer) != (ids, labels)


def test_border_merge_labels_from_the_common_prefix():
    """A vocabulary with tokens across spaces merges the prompt's end into the answer: labels
    start where the prompt's ids and the full text's ids part, so the whole answer is scored."""
    tokenizer, fmt = sentencepiece_like("merging", corpus=CORPUS), PromptFormat()
    merged = 0
    for question, answer in PAIRS:
        ids, labels = encode_qa(tokenizer, fmt, question, answer)
        full = tokenizer(fmt.prompt(tokenizer, question) + fmt.answer_prefix + answer)["input_ids"]
        prompt = encode_prompt(tokenizer, fmt, question)
        start = _start(labels)
        assert ids == full + [tokenizer.eos_token_id] and labels[start:] == ids[start:]
        assert ids[:start] == prompt[:start] and (start == len(prompt) or ids[start] != prompt[start])
        assert answer.strip() in "".join(tokenizer.convert_ids_to_tokens(ids[start:-1])).replace("▁", " ")
        merged += start < len(prompt)
    assert merged  # the tokenizer does merge across the border for some pairs


def test_byte_level_embedded_ids_unchanged(byte_level):
    """The embedded tokenizer never merges across the border: ids and labels are what the
    old code gave, so embedded results do not move."""
    formats = [PromptFormat(), PromptFormat(template="Q: {question}\nA:"), PromptFormat(template="{question}", answer_prefix="\n")]
    for fmt in formats:
        for question, answer in PAIRS:
            assert encode_qa(byte_level, fmt, question, answer) == old_encode_qa(byte_level, fmt, question, answer)
            _check_single_pass(byte_level, fmt, question, answer)
    examples = [{"question": q, "answer": a} for q, a in PAIRS]
    assert encode_examples(byte_level, PromptFormat(), examples) == [old_encode_qa(byte_level, PromptFormat(), q, a) for q, a in PAIRS]


def test_max_length_truncates_ids_and_labels(byte_level):
    fmt = PromptFormat()
    full_ids, full_labels = encode_qa(byte_level, fmt, *PAIRS[2])
    cut = len(encode_prompt(byte_level, fmt, PAIRS[2][0])) + 2
    ids, labels = encode_qa(byte_level, fmt, *PAIRS[2], max_length=cut)
    assert (ids, labels) == (full_ids[:cut], full_labels[:cut])


class _RecordingModel(torch.nn.Module):
    """Stands in for a causal LM: records the prompts ``generate`` gets and answers EOS."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.prompts: list[list[int]] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, **_):
        for row, mask in zip(input_ids, attention_mask):
            self.prompts.append(row[mask.bool()].tolist())
        return torch.cat([input_ids, torch.full((len(input_ids), 1), eos_token_id)], dim=1)


@pytest.mark.parametrize("kind", ["llama2", "chat", "byte_level"])
def test_generation_prompt_is_the_prefix_labels_start_after(kind, byte_level):
    tokenizer = {"llama2": lambda: sentencepiece_like("llama2", corpus=CORPUS), "chat": lambda: _chat("metaspace"),
                 "byte_level": lambda: byte_level}[kind]()
    fmt = PromptFormat(template="chat") if kind == "chat" else PromptFormat()
    model = _RecordingModel()
    questions = [q for q, _ in PAIRS]
    generate_answers(model, tokenizer, fmt, questions, 4, batch_size=3)
    expected = []
    for question, answer in PAIRS:
        ids, labels = encode_qa(tokenizer, fmt, question, answer)
        expected.append(ids[: _start(labels)])
    assert sorted(model.prompts) == sorted(expected)
