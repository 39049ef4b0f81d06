"""Tokenizers for tests, built offline with ``tokenizers`` (no hub): a Llama-style SentencePiece
BPE in the layouts real checkpoints use."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def sentencepiece_like(layout: str, corpus: list[str], append_eos: bool = False) -> PreTrainedTokenizerFast:
    """A Llama-style SentencePiece BPE (words start with ▁, BOS added).

    ``llama2``: the pipeline of Llama-2's hub tokenizer.json (and TOFU's fine-tunes): normaliser
    Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer — ``" The"`` alone becomes ``▁ ▁The``.
    ``metaspace``: a Metaspace pre-tokenizer (prepend_scheme "first").
    ``merging``: Metaspace without splitting (transformers 5 builds Llama like this) with a vocabulary
    trained across spaces, so tokens span the prompt/answer border."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=layout != "merging")
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                               show_progress=False))
    if layout == "llama2":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    single = "<s> $A </s>" if append_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, tok.token_to_id(t)) for t in ("<s>", "</s>")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    return tokenizer
