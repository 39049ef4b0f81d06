"""Examples → token ids with labels, and the collator.

Three example shapes (a task card's ``examples`` section says which each data set has):
``qa`` (question → answer through a prompt template; :func:`encode_qa`), ``completion``
(prefix → continuation as plain text; :func:`encode_completion`) and ``text`` (documents
cut into windows; :func:`encode_text`). :func:`encode_rows` dispatches on the shape. The
rest of this docstring describes the QA / completion border, which both share.

Convention used everywhere in soul-bench (training, unlearning, every likelihood):
the label mask covers the answer tokens *and the EOS token after them* (as TOFU's own
code does), never the prompt. EOS counts because a model that stops after the answer
has learned where the answer ends; leaving it out would let a model "forget" only by
rambling on.

Tokenisation (as TOFU and open-unlearning do): the whole text ``prompt + answer_prefix +
answer`` is tokenised once, and only the tokens after the prompt are labelled. Tokenising
the answer on its own and appending it would bias every likelihood on SentencePiece
tokenizers — Llama-2's turns ``" The"`` alone into ``▁ ▁The`` (an extra label token and a
different first token) — and the same goes for text after a chat template.

* Border. ``n`` = length of the longest common prefix of the prompt's ids (tokenised
  alone) and the full text's ids; labels start at ``n``. For a tokenizer that does not
  merge across the prompt/answer border (every usual case: the prompt ends a word and
  ``answer_prefix`` starts the next one) the prompt's ids *are* that prefix, ``n`` is
  their length, and :func:`encode_prompt` — the generation prompt — is exactly the ids the
  labels start after, so the model generates from the very ids its answers are scored
  after. If a token spans the border, the full text's ids from ``n`` on are labelled: the
  whole answer stays scored, together with the merged token's bit of prompt text;
  generation (which cannot know the answer) then starts from the prompt's own ids. A
  prompt ending in whitespace invites such merges: put the space in ``answer_prefix``.
* BOS: first whenever the tokenizer has one (its post-processor's, else prepended) — never
  doubled, also when a template holds the BOS text itself (``"<s>[INST] …"``);
  ``template="chat"`` tokenises the rendered template without special tokens, since chat
  templates carry their own BOS.
* Chat (``template="chat"``, as open-unlearning's ``preprocess_chat_instance``): the prompt is
  the conversation (optional system message, the user's question) rendered with the
  generation prompt; the full text is the same conversation with the assistant's answer,
  rendered by the template itself. The labels are what follows the prompt in it: the answer
  exactly as the template places it (no ``answer_prefix``: after ``assistant\n`` the model
  writes ``The``, not ``ĠThe``) and the template's end-of-turn marker (``<|im_end|>``,
  ``<|eot_id|>``, ``</s>``) — what the model produces before it stops. Whitespace the
  template puts after that marker is not the model's to predict and is left out. Templates
  that insert today's date (Llama-3.x) get a pinned ``date_string``, so prompts do not change
  from day to day. A template whose full conversation does not start with its generation
  prompt falls back to prompt + answer + EOS.
* EOS: ``eos_token_id`` is appended after the answer unless the full ids already end with
  it (a tokenizer that appends EOS itself) or a chat template closed the turn with its own
  marker; a tokenizer-appended EOS is dropped from the generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


# Llama-3.x chat templates render today's date unless given one; open-unlearning pins this
# value in its model configs (configs/model/Llama-3.2-1B-Instruct.yaml), so its TOFU models
# were fine-tuned with it.
PINNED_DATE = "10 Apr 2025"


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt. ``template`` has one ``{question}`` field; the answer
    follows after ``answer_prefix``. ``template="chat"`` uses the tokenizer's chat template,
    with ``system_prompt`` as a system message (None: no system message, so the template's own
    default, if it has one, applies) and ``date_string`` for templates that print a date."""

    template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    system_prompt: str | None = None
    date_string: str = PINNED_DATE

    @property
    def is_chat(self) -> bool:
        return self.template == "chat"

    def identity(self) -> dict:
        """What a record's identity holds of the format: the chat settings only in chat mode,
        so records of plain-template runs keep the ids they had before chat settings existed."""
        fields = {"template": self.template, "answer_prefix": self.answer_prefix}
        if self.is_chat:
            fields.update(system_prompt=self.system_prompt, date_string=self.date_string)
        return fields

    def _conversation(self, question: str, answer: str | None = None) -> list[dict]:
        messages = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        messages.append({"role": "user", "content": question})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def _render(self, tokenizer, messages: list[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                             date_string=self.date_string)

    def prompt(self, tokenizer, question: str) -> str:
        if self.is_chat:
            return self._render(tokenizer, self._conversation(question), generation_prompt=True)
        return self.template.format(question=question)

    def answer_text(self, tokenizer, question: str, answer: str) -> tuple[str, bool]:
        """(the text that follows :meth:`prompt` when the model answers, whether it already
        closes the answer with an end-of-turn marker) — see the module docstring."""
        if not self.is_chat:
            return self.answer_prefix + answer, False
        prompt = self.prompt(tokenizer, question)
        full = self._render(tokenizer, self._conversation(question, answer), generation_prompt=False)
        if not full.startswith(prompt):
            return answer, False
        rest = full[len(prompt):].rstrip()
        # closed: the template wrote something after the answer (its end-of-turn marker)
        answer_end = answer.strip()
        return rest, bool(rest) and (not answer_end or not rest.endswith(answer_end))


def _encode_text(tokenizer, fmt: PromptFormat, text: str) -> list[int]:
    """Ids of ``text`` with one BOS when the tokenizer adds one (chat templates carry their own)."""
    add_special = not fmt.is_chat
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    bos = tokenizer.bos_token_id
    if add_special and bos is not None:
        if not ids or ids[0] != bos:
            ids = [bos] + ids
        elif len(ids) > 1 and ids[1] == bos and not text.startswith(2 * str(tokenizer.bos_token)):
            ids = ids[1:]  # the template's own BOS text after the tokenizer's BOS
    return ids


def _prompt_ids(tokenizer, fmt: PromptFormat, prompt: str) -> list[int]:
    """The prompt's own ids, less an EOS the tokenizer appended (a prompt must not end the text)."""
    ids = _encode_text(tokenizer, fmt, prompt)
    eos = tokenizer.eos_token_id
    if len(ids) > 1 and eos is not None and ids[-1] == eos and not prompt.endswith(str(tokenizer.eos_token)):
        ids = ids[:-1]
    return ids


def _encode_border(tokenizer, fmt: PromptFormat, prompt: str, rest: str, closed: bool = False) -> tuple[list[int], int]:
    """(ids of ``prompt + rest``, ending in EOS unless ``closed`` (a chat template's end-of-turn
    marker ends ``rest``); index of the first labelled id)."""
    prompt_ids = _prompt_ids(tokenizer, fmt, prompt)
    ids = _encode_text(tokenizer, fmt, prompt + rest)
    start = 0
    for a, b in zip(prompt_ids, ids):
        if a != b:
            break
        start += 1
    if not closed and (not ids or ids[-1] != tokenizer.eos_token_id or len(ids) == start):
        ids = ids + [tokenizer.eos_token_id]
    return ids, start


def _encode_full(tokenizer, fmt: PromptFormat, question: str, answer: str) -> tuple[list[int], int]:
    """(ids of the prompt and the answer after it, ending the turn; index of the first labelled id)."""
    rest, closed = fmt.answer_text(tokenizer, question, answer)
    return _encode_border(tokenizer, fmt, fmt.prompt(tokenizer, question), rest, closed)


def encode_prompt(tokenizer, fmt: PromptFormat, question: str) -> list[int]:
    """Generation prompt: the prompt's own ids, with BOS when the tokenizer adds one (chat
    templates carry their own). Unless a token spans the prompt/answer border, these are
    exactly the ids :func:`encode_qa` labels after (see the module docstring)."""
    return _prompt_ids(tokenizer, fmt, fmt.prompt(tokenizer, question))


def _labelled(input_ids: list[int], start: int, max_length: int | None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the ids before ``start`` masked, both cut to ``max_length``."""
    labels = [IGNORE_INDEX] * start + input_ids[start:]
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return input_ids, labels


def encode_qa(tokenizer, fmt: PromptFormat, question: str, answer: str, max_length: int | None = None):
    """Return (input_ids, labels): ``prompt + answer_prefix + answer`` tokenised once, EOS
    appended; the prompt is masked, the ids after it (answer + EOS) are labelled. Both are
    cut to ``max_length`` when given."""
    return _labelled(*_encode_full(tokenizer, fmt, question, answer), max_length)


def answer_length(tokenizer, fmt: PromptFormat, question: str, answer: str) -> int:
    """Number of answer tokens :func:`encode_qa` labels, without the EOS."""
    input_ids, start = _encode_full(tokenizer, fmt, question, answer)
    return len(input_ids) - start - 1


def encode_examples(tokenizer, fmt: PromptFormat, examples, answer_key: str = "answer", max_length: int | None = None):
    """Encode a list of QA dicts; ``answer_key`` picks the answer field (e.g. a refusal)."""
    return [encode_qa(tokenizer, fmt, ex["question"], ex[answer_key], max_length) for ex in examples]


PLAIN_TEXT = PromptFormat(template="{question}", answer_prefix="")


def encode_completion(tokenizer, prefix: str, continuation: str, max_length: int | None = None):
    """(input_ids, labels) of ``prefix + continuation`` as plain text (BOS first when the
    tokenizer has one, EOS appended); labels on the continuation + EOS, the border found on
    token ids as for QA (a continuation that starts mid-word keeps its merged token scored)."""
    return _labelled(*_encode_border(tokenizer, PLAIN_TEXT, prefix, continuation), max_length)


def encode_text(tokenizer, text: str, max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
    """A document for language modelling: tokenised once (BOS first when the tokenizer has one,
    EOS last) and cut into windows of at most ``max_length`` tokens, each window after the
    first starting with BOS again so every window has the start-of-text context the model
    saw in training. Every token after BOS is labelled. A window holding nothing to predict
    (a lone BOS) is dropped."""
    ids = _encode_text(tokenizer, PLAIN_TEXT, text)
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    bos = tokenizer.bos_token_id
    has_bos = bos is not None and ids[0] == bos
    body = ids[1:] if has_bos else ids
    width = (max_length - int(has_bos)) if max_length else len(body)
    windows = []
    for start in range(0, len(body), max(width, 1)):
        piece = ([bos] if has_bos else []) + body[start : start + width]
        labels = ([IGNORE_INDEX] if has_bos else []) + piece[int(has_bos):]
        if len(piece) >= 2:
            windows.append((piece, labels))
    return windows


def encode_rows(tokenizer, fmt: PromptFormat, rows, shape: str = "qa", max_length: int | None = None,
                answer_key: str = "answer") -> list[tuple[list[int], list[int]]]:
    """Encode a data set of the given shape (``qa``: question / ``answer_key``; ``completion``:
    prefix / continuation; ``text``: text, one or more windows per row)."""
    if shape == "qa":
        return encode_examples(tokenizer, fmt, rows, answer_key, max_length)
    if shape == "completion":
        return [encode_completion(tokenizer, row["prefix"], row["continuation"], max_length) for row in rows]
    if shape == "text":
        return [window for row in rows for window in encode_text(tokenizer, row["text"], max_length)]
    raise ValueError(f"unknown example shape '{shape}'; valid: qa, completion, text")


def collate(encoded, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of (input_ids, labels) into a batch."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def batches(encoded, batch_size: int, pad_id: int, generator: torch.Generator | None = None, shuffle: bool = True):
    """One epoch of batches (shuffled with ``generator`` when asked)."""
    order = torch.randperm(len(encoded), generator=generator).tolist() if shuffle else list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        yield collate([encoded[i] for i in order[start : start + batch_size]], pad_id)


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
