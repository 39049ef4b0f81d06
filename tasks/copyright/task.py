"""Copyright: what the card (task.yaml) cannot say — cutting books into prompted passages, and
the leakage evaluation of SOUL (Jia et al. 2024, arXiv 2404.18239; ``OPTML-Group/SOUL``,
``src/metrics/copyright.py``), after Eldan & Russinovich's "Who's Harry Potter?".

A model that memorised a book must stop reproducing it verbatim. The book is cut into
passages; a passage becomes a *completion*: an instruction template, then the passage's first
L words (the prompt), then the rest of the passage (the continuation), as SOUL's
``hp_{train,test}_qa_{100,300}`` files are built. Templates come in two sets (card
``data.templates``): unlearning sees the ``train`` set, evaluation prompts with the unseen
``test`` set too, so a method that only learned to dodge a phrasing does not pass.

Data sets after loading (whatever the source):
  forget_text, retain_text   the passages of the forget / retain book (``{"text"}``)
  holdout_text               never-trained passages of the forget book's kind (MIA non-members),
                             when the source has them
  forget, retain             completions with the train templates — what unlearning uses
  forget_probe, retain_probe completions with the test templates — evaluation prompts

Every passage yields one completion per prompt length L (card ``prefix_words``); the template
cycles through its set with the passage and L, so each template is used equally often and the
sets stay the size of the book.

Evaluation, per set of completions (``forget_probe`` → ``forget/*``, ``forget`` →
``forget_seen/*``, ``retain_probe`` → ``retain/*``): the model continues each prompt greedily
for as many tokens as the true continuation has (at most ``evaluation.max_new_tokens``; the
truth is cut to the same tokens), scored by ROUGE-L recall (stemmer on, as SOUL) and
per-item BLEU (``soul_bench.evaluate.metrics.sentence_bleu``, SOUL's definition). Then one
likelihood pass over the passages (``soul_bench.evaluate.corpus.corpus_probes``):
perplexities, exact memorisation, and membership inference of the forget passages against the
held-out ones, with PrivLeak against the retain model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from soul_bench.data import PLAIN_TEXT
from soul_bench.errors import UserError
from soul_bench.evaluate.corpus import corpus_probes
from soul_bench.evaluate.likelihood import cut_to_tokens, generate_answers
from soul_bench.evaluate.metrics import rouge_l_recall, sentence_bleu
from soul_bench.task import DataSource, Task, TaskData, chosen_forget_split, load_sibling, read_json_records

MIN_CONTINUATION_WORDS = 8  # a prompt must leave this much of its passage to continue
BOOKS = ("forget", "retain", "holdout")
# metric prefix → the completions it is measured on
PROBES = {"forget": "forget_probe", "forget_seen": "forget", "retain": "retain_probe"}


class Templates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: list[str] = Field(min_length=1)
    test: list[str] = Field(min_length=1)


class CopyrightData(BaseModel):
    """Card section ``data``."""

    model_config = ConfigDict(extra="forbid")
    # a hub dataset with the books as text rows (configs below); None: books are user-supplied
    hub: str | None = None
    # hub configs of the books (holdout: optional, for the privacy columns)
    hub_configs: dict[str, str] = Field(default_factory=lambda: {"forget": "forget", "retain": "retain", "holdout": "holdout"})
    passage_words: int = Field(default=400, ge=MIN_CONTINUATION_WORDS + 1)   # a user's book is cut into passages this long
    prefix_words: list[int] = Field(default_factory=lambda: [100, 300], min_length=1)  # L: prompt lengths, in words
    synthetic_prefix_words: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)  # L for the embedded books
    templates: Templates

    @field_validator("prefix_words", "synthetic_prefix_words")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values):
            raise ValueError("prompt lengths are word counts ≥ 1")
        return values


class CopyrightEvaluation(BaseModel):
    """Card section ``evaluation``."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(default=128, ge=1)       # continuation budget (MUSE's VerbMem: 128)
    max_probes: int | None = Field(default=200, ge=1)    # completions per probe set
    max_passages: int | None = Field(default=200, ge=1)  # passages per book in the likelihood pass


def passages(text: str, words: int | None) -> list[str]:
    """A book's text as passages of ``words`` whitespace-separated words (None: the text is one
    passage); whitespace is normalised to single spaces, and a last piece too short to prompt
    and continue (< ``MIN_CONTINUATION_WORDS`` + 1 words) is dropped."""
    tokens = text.split()
    if words is None:
        pieces = [tokens]
    else:
        pieces = [tokens[i:i + words] for i in range(0, len(tokens), words)]
    return [" ".join(p) for p in pieces if len(p) > MIN_CONTINUATION_WORDS]


def completions(rows: list[dict], prefix_words: list[int], templates: list[str]) -> list[dict]:
    """One completion per (passage, L) whose passage leaves ≥ ``MIN_CONTINUATION_WORDS`` words
    after the first L: ``prefix`` = template + the first L words, ``continuation`` = " " + the rest.
    The template cycles with the completion's index, so every template is used about equally."""
    out = []
    for row in rows:
        words = row["text"].split()
        for length in prefix_words:
            if len(words) - length < MIN_CONTINUATION_WORDS:
                continue
            template = templates[len(out) % len(templates)]
            out.append({"id": f"{row['id']}-L{length}", "passage_id": row["id"], "prefix_words": length,
                        "template": template, "prefix": f"{template} {' '.join(words[:length])}",
                        "continuation": " " + " ".join(words[length:])})
    return out


class Copyright(Task):
    section_models = {"data": CopyrightData, "evaluation": CopyrightEvaluation}

    # -------------------------------------------------------------- data
    def load_data(self, source: DataSource, forget_split: str | None, limit: int | None, generator_options: dict) -> TaskData:
        chosen_forget_split(forget_split, ["book"])  # one forget set
        card = self.options["data"]
        notes = []
        if source.kind == "hub":
            hub_id = source.hub(card.hub)
            if hub_id is None:
                if not source.auto:
                    raise UserError("the copyright task ships no books and names no hub dataset: pass --data hub:ID "
                                    f"(configs {', '.join(card.hub_configs.values())} with 'text' rows) or --data FOLDER "
                                    "with forget.txt and retain.txt (or .jsonl rows with 'text')")
                notes.append("no hub dataset for copyright: using the embedded synthetic books")
                source = DataSource("synthetic")
            else:
                books, source = source.load_hub(lambda: self._from_hub(hub_id, card.hub_configs, card.passage_words),
                                                hub_id, "books", notes)
        if source.kind == "synthetic":
            generated = load_sibling(__file__, "synthetic").generate_books(**generator_options)
            books = {book: generated[f"{book}_book"] for book in BOOKS}
            prefix_words = card.synthetic_prefix_words
            if source.auto:
                notes.append("no --data/--model given: using the embedded synthetic books and tiny model")
        else:
            prefix_words = card.prefix_words
            if source.kind == "local":
                books = self._from_folder(source.path, card.passage_words)
        where = source.describe()
        sets = {}
        for book, rows in books.items():
            if rows is None:
                continue
            rows = rows[:limit]  # None: all
            if not rows:
                raise UserError(f"the {book} book from {where} has no passage of more than {MIN_CONTINUATION_WORDS} words")
            sets[f"{book}_text"] = [{"id": row["id"], "text": row["text"]} for row in rows]
        for book in ("forget", "retain"):
            sets[book] = completions(sets[f"{book}_text"], prefix_words, card.templates.train)
            sets[f"{book}_probe"] = completions(sets[f"{book}_text"], prefix_words, card.templates.test)
            if not sets[book]:
                raise UserError(f"no passage of the {book} book from {where} is longer than a prompt of "
                                f"{min(prefix_words)} words + {MIN_CONTINUATION_WORDS}; lower data.prefix_words "
                                "or raise data.passage_words")
        return TaskData(sets=sets, source=where, forget_split="book", notes=notes)

    @staticmethod
    def _passage_rows(texts: list[str], book: str, words: int | None) -> list[dict]:
        pieces = [p for text in texts for p in passages(text, words)]
        return [{"id": f"{book}-{i:04d}", "text": p} for i, p in enumerate(pieces)]

    def _from_hub(self, hub_id: str, configs: dict[str, str], words: int) -> dict:
        import datasets

        books = {}
        for book in BOOKS:
            if book not in configs:
                books[book] = None
                continue
            try:
                rows = datasets.load_dataset(hub_id, configs[book], split="train").to_list()
            except ValueError:  # no such config: the holdout book is optional
                if book != "holdout":
                    raise
                books[book] = None
                continue
            books[book] = self._passage_rows(_texts(rows, book, hub_id), book, words)
        return books

    def _from_folder(self, folder: Path, words: int) -> dict:
        """``forget`` and ``retain`` (required) and ``holdout`` (optional): ``<name>.txt`` (the whole
        book) or ``<name>.jsonl`` / ``.json`` (rows with ``text``, each cut into passages)."""
        books = {}
        for book in BOOKS:
            found = [folder / f"{book}{suffix}" for suffix in (".txt", ".jsonl", ".json") if (folder / f"{book}{suffix}").is_file()]
            if not found:
                if book == "holdout":
                    books[book] = None
                    continue
                raise UserError(f"copyright data folder {folder} lacks {book}.txt (the book's text) "
                                f"or {book}.jsonl (rows with a 'text' field)")
            path = found[0]
            texts = [path.read_text(encoding="utf-8")] if path.suffix == ".txt" else _texts(read_json_records(path), book, str(path))
            books[book] = self._passage_rows(texts, book, words)
        return books

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model, tokenizer, fmt, data: TaskData, reference: dict | None = None, batch_size: int = 32):
        options = self.options["evaluation"]
        results, generations = {}, {}
        for name, set_name in PROBES.items():
            rows = data.sets[set_name][:options.max_probes]
            truths, budgets = cut_to_tokens(tokenizer, [row["continuation"] for row in rows], options.max_new_tokens)
            predicted = generate_answers(model, tokenizer, PLAIN_TEXT, [row["prefix"] for row in rows], budgets, batch_size)
            rouge, bleu = rouge_l_recall(predicted, truths, use_stemmer=True), sentence_bleu(predicted, truths)
            results[f"{name}/rouge_l"], results[f"{name}/bleu"] = float(np.mean(rouge)), float(np.mean(bleu))
            generations[name] = {"id": [row["id"] for row in rows], "rouge_l": rouge.tolist(), "bleu": bleu.tolist(),
                                 "generation": predicted}

        cap = options.max_passages
        corpora = {book: (data.sets.get(f"{book}_text") or [])[:cap] for book in BOOKS}
        corpus_metrics, per_item = corpus_probes(
            model, tokenizer, PLAIN_TEXT, corpora, self.card.spec.mia, self.card.spec.examples.max_length, batch_size,
            missing_note=f"no held-out passages in the task data ({data.source}): membership inference needs "
                         "never-trained text of the forget book's kind (holdout.txt), so every mia/* metric is None")
        results.update(corpus_metrics)
        per_item["generations"] = generations
        results.update(self.reference_metrics(per_item, reference))
        return results, per_item


def _texts(rows: list[dict], book: str, where: str) -> list[str]:
    for i, row in enumerate(rows):
        if not isinstance(row.get("text"), str):
            raise UserError(f"copyright {book} book from {where}: row {i} has no 'text' string")
    return [row["text"] for row in rows]


def load(card):
    return Copyright(card)
