"""Load any HF causal LM, or build the embedded tiny Llama and its BPE tokenizer.

The embedded default exists so the whole protocol runs offline on a laptop: a tokenizer
trained with ``tokenizers`` on the task's own corpus and a few-million-parameter Llama.
Real models go through exactly the same ``AutoModelForCausalLM`` path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from soul_bench.errors import UserError

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def cache_root() -> Path:
    """Where prepared models live: $SOUL_BENCH_CACHE or ~/.cache/soul-bench."""
    return Path(os.environ.get("SOUL_BENCH_CACHE", Path.home() / ".cache" / "soul-bench"))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device '{name}'; valid: auto, cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for but CUDA is not available; use --device cpu or auto")
    return device


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, float32 elsewhere (a speed/precision setting only)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``, wrapped as a transformers fast tokenizer (adds BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_llama(tokenizer, hidden_size: int, layers: int, heads: int, intermediate_size: int | None = None,
                     max_positions: int = 256, seed: int = 0):
    """A small Llama with tied embeddings, initialised from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings from transformers (we show our own progress)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model(name_or_path: str, device: torch.device, dtype: torch.dtype | None = None, gguf_file: str | None = None):
    """Any HF causal LM (hub id or local folder) and its tokenizer, with a pad token defined."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or compute_dtype(device), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model '{name_or_path}': {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_fingerprint(name_or_path: str) -> str:
    """What identifies the weights a model name stands for, so a record says which target and
    retain model it came from (the same path can hold other weights: the same commit prepared
    on another CPU gives another embedded target).

    A local folder: ``sha256:<16 hex>`` of its weight files' bytes (name + content, sorted),
    remembered per file size and mtime in the cache, so a 7B folder is read once. A hub id:
    ``<id>@<commit>`` of the revision its config resolves to (config.json only is fetched)."""
    path = Path(name_or_path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode())
            digest.update(_file_sha256(file).encode())
        return f"sha256:{digest.hexdigest()[:16]}"
    try:
        from transformers import AutoConfig

        commit = getattr(AutoConfig.from_pretrained(name_or_path), "_commit_hash", None)
    except (OSError, ValueError):
        commit = None
    return f"{name_or_path}@{commit or 'unknown-revision'}"


def _file_sha256(file: Path) -> str:
    """sha256 of a file, memoised in the cache by (path, size, mtime)."""
    stat = file.stat()
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = cache_root() / "weight-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        memo[key] = digest.hexdigest()
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_path)
        except OSError:
            pass  # a read-only cache only costs re-hashing
    return memo[key]


def save_model(model, tokenizer, directory: Path, meta: dict) -> None:
    """save_pretrained into a temp folder, then rename: a cache entry is complete or absent."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "soul_bench.json").write_text(json.dumps(meta, indent=1, default=str))
    tmp.rename(directory)
