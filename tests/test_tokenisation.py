"""Prompt/answer tokenisation (soul_bench.data): the whole text is tokenised once and only the
tokens after the prompt are labelled (+ EOS), so SentencePiece and chat-template models are
scored on the ids they actually see. Tokenizers are built offline with ``tokenizers``."""

from __future__ import annotations

import pytest
import torch
from toy_tokenizers import sentencepiece_like
from transformers import PreTrainedTokenizerFast

from soul_bench.data import IGNORE_INDEX, PINNED_DATE, PromptFormat, answer_length, encode_examples, encode_prompt, encode_qa
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
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|end|>", "<|assistant|>"]
# zephyr-like: BOS, one "<|role|>\n content <|end|>\n" block per message; the template's own
# default system prompt when none is given (as SmolLM2's); the date when the template is told one
CHAT_TEMPLATE = ("{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|system|>\nYou are Toy.<|end|>\n{% endif %}"
                 "{% if date_string is defined %}<|system|>\nToday: {{ date_string }}<|end|>\n{% endif %}"
                 "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
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


def _rendered(tokenizer, fmt, question, answer=None):
    messages = ([{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt is not None else [])
    messages += [{"role": "user", "content": question}] + ([{"role": "assistant", "content": answer}] if answer is not None else [])
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None,
                                         date_string=fmt.date_string)


@pytest.mark.parametrize("layout", ["llama2", "metaspace"])
@pytest.mark.parametrize("system_prompt", [None, "Answer briefly."])
def test_chat_labels_are_the_joint_tokenisation_of_the_rendered_conversation(layout, system_prompt):
    """open-unlearning's preprocess_chat_instance: the conversation with the answer is rendered by
    the template and tokenised once; labels are its ids after the generation prompt — the answer
    as the model writes it after ``<|assistant|>\n`` (no space before it) and the template's
    end-of-turn marker, not the newline after it and no EOS the template did not write."""
    tokenizer, fmt = _chat(layout), PromptFormat(template="chat", system_prompt=system_prompt)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for question, answer in PAIRS:
        ids, labels = encode_qa(tokenizer, fmt, question, answer)
        prompt = encode_prompt(tokenizer, fmt, question)
        joint = tokenizer(_rendered(tokenizer, fmt, question, answer).rstrip(), add_special_tokens=False)["input_ids"]
        assert ids == joint
        assert prompt == tokenizer(_rendered(tokenizer, fmt, question), add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt)] == prompt and labels == [IGNORE_INDEX] * len(prompt) + ids[len(prompt):]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1  # the template's, not doubled
        assert labels[-1] == end and tokenizer.eos_token_id not in ids
        assert tokenizer.decode(ids[len(prompt):-1]).strip() == answer.strip()
        assert answer_length(tokenizer, fmt, question, answer) == len(ids) - len(prompt) - 1
        if answer:  # the old way labelled " " + answer + EOS after the generation prompt
            assert old_encode_qa(tokenizer, fmt, question, answer) != (ids, labels)
            if not answer[0].isspace():  # right after "<|assistant|>\n": a word start, no space token
                assert not tokenizer.convert_ids_to_tokens(ids[len(prompt)]).startswith("▁")


def test_chat_system_prompt_replaces_the_template_default_and_the_date_is_pinned():
    tokenizer = _chat("metaspace")
    default, own = PromptFormat(template="chat"), PromptFormat(template="chat", system_prompt="Be terse.")
    assert "You are Toy." in default.prompt(tokenizer, "Q?")  # no system message: the template's default
    rendered = own.prompt(tokenizer, "Q?")
    assert "Be terse." in rendered and "You are Toy." not in rendered
    assert f"Today: {PINNED_DATE}" in rendered  # a date-printing template never sees today's date
    assert own.identity()["system_prompt"] == "Be terse." and "system_prompt" not in PromptFormat().identity()


def test_template_without_an_end_marker_gets_eos():
    tokenizer = _chat("metaspace")
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
                               "{% else %}{{ m['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}{% endif %}")
    fmt = PromptFormat(template="chat")
    ids, labels = encode_qa(tokenizer, fmt, *PAIRS[0])
    assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id


def test_bos_text_in_a_plain_template_is_not_doubled():
    """TOFU's Llama-2 prompt written out in full: ``<s>[INST] … [/INST]`` — one BOS, not two."""
    tokenizer = sentencepiece_like("llama2", corpus=CORPUS)
    fmt = PromptFormat(template="<s>[INST] {question} [/INST]", answer_prefix="")
    ids, _ = encode_qa(tokenizer, fmt, *PAIRS[0])
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert encode_prompt(tokenizer, fmt, PAIRS[0][0]).count(tokenizer.bos_token_id) == 1


def test_generation_stops_at_the_models_own_end_tokens():
    """A chat model ends its turn with a token that is not the tokenizer's EOS (Llama-3's
    ``<|eot_id|>``); ``generation_config.eos_token_id`` lists it, and the answer ends there."""
    from types import SimpleNamespace

    from soul_bench.evaluate.likelihood import _generated_text, stop_token_ids

    tokenizer = _chat("metaspace")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[end, tokenizer.eos_token_id]))
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, end]
    words = tokenizer("Paris is big", add_special_tokens=False)["input_ids"]
    tail = tokenizer("and more", add_special_tokens=False)["input_ids"]
    assert _generated_text(tokenizer, words + [end] + tail, None, stop_token_ids(model, tokenizer)) == "Paris is big"
    assert _generated_text(tokenizer, words + [end] + tail) != "Paris is big"  # EOS alone runs past the turn's end


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
        return torch.cat([input_ids, torch.full((len(input_ids), 1), eos_token_id[0])], dim=1)


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
