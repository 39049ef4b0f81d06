"""General utility through the real lm-evaluation-harness, on the model in memory.

``run_harness`` wraps ``lm_eval.simple_evaluate`` around an ``HFLM`` built from the model
and tokenizer objects (no save/reload). Tasks are lm-eval names: built-in (hub) tasks such
as ``arc_easy`` for real models, or local tasks found in ``include_dirs`` — e.g. the
embedded TOFU default's ``tofu_mc`` in ``tasks/tofu/harness/``.

Local task YAMLs name their data with paths relative to the YAML's folder
(``dataset_path: json`` + ``dataset_kwargs.data_files``); lm-eval would resolve those
against the working directory, so each include folder is mirrored into a temporary folder
(YAMLs rewritten with absolute paths, every other file symlinked) once per process and
content version. When every requested task is local, lm-eval's ~16 s index of its
built-in tasks is skipped; the index with built-ins is built once per process and reused.

BOS: ``add_bos_token=None`` (the default) leaves lm-eval's own default, which encodes with
the tokenizer's default special tokens — the embedded BPE tokenizer prepends ``<s>`` by
itself, so lm-eval scores ``<s> Question: …\\nAnswer:`` + `` <choice>`` exactly as
``soul_bench.data.encode_qa`` does (only without the EOS that our likelihoods add after
the answer): both tokenise context + continuation once and score the ids after the
context's own ids. ``True`` / ``False`` force ``add_special_tokens`` on or off. Published lm-eval
numbers use the default, so keep it unless a model was trained differently.

Inside ``soul_bench.evaluate.sharing.shared_among`` (every process holding the whole model)
the call runs lm-eval's own data parallelism — each process scores its share of each task's
documents, the per-document metrics are gathered to process 0 — through the rank, gather and
barrier of lm-eval's model API, answered with ``torch.distributed`` (HFLM builds its accelerate
``Accelerator`` only for a model it loads itself). Process 0 gets the results; the others get
empty ones.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from soul_bench.errors import UserError
from soul_bench.evaluate.sharing import Sharing, current_sharing

PREFIX = "harness"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_SKIP_RESULT_KEYS = {"alias", "name", "sample_len", "samples"}
_INLINE_KEYS = ("dataset_path", "class", "include", "custom_dataset")

# per-process caches: mirrored include folders (by source fingerprint) and task managers
_MIRROR_ROOT: Path | None = None
_MIRRORS: dict[tuple, Path] = {}
_MANAGERS: dict[tuple, Any] = {}
_MAX_MANAGERS = 4


# --------------------------------------------------------------------------- public API


def run_harness(model, tokenizer, tasks: list[str | dict], include_dirs: list[Path] | None = None,
                batch_size: int = 16, limit: int | float | None = None, add_bos_token: bool | None = None,
                offline: bool = True, *, num_fewshot: int | None = None, include_defaults: bool | None = None,
                bootstrap_iters: int = 1000, log_samples: bool = False, seed: int = 1234,
                quiet: bool = True) -> tuple[dict[str, float], dict]:
    """Run lm-eval's ``simple_evaluate`` on ``model`` (an in-memory HF causal LM).

    ``tasks``: lm-eval task / group / tag names, or dicts (``{"task": "arc_easy",
    "num_fewshot": 5}`` overrides a registered task's config; a dict with ``dataset_path``
    is an inline task config). ``include_dirs``: folders of local task YAMLs.
    ``include_defaults``: index lm-eval's built-in tasks — None: only when a requested name
    is not local. ``limit``: documents per task (int) or fraction (< 1), for quick runs.
    ``offline``: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE on for the call (hub tasks must then
    be in the local HF datasets cache). ``log_samples``: keep lm-eval's per-document records
    (arguments, log-likelihoods) in ``details["samples"]``.

    Returns ``(metrics, details)``: metrics flat as ``harness/<task>/<metric>`` (plus
    ``<metric>_stderr``; a filter other than lm-eval's ``none`` is appended as
    ``/<filter>``); details: versions, sample counts, n-shot, the run's config, seconds.
    Global RNG states, the model's train/eval mode and the tokenizer's pad token are
    restored afterwards. Unknown task names raise :class:`UserError`. Shared among processes
    (module doc), every process but 0 returns ``({}, {})``.
    """
    specs = _normalise_specs(tasks)
    dirs = _check_dirs(include_dirs)
    start = time.perf_counter()
    with _quiet(quiet), _offline(offline), _preserved_state(model, tokenizer):
        lm_eval, evaluator = _import_lm_eval()
        mirrors = [_mirror(d) for d in dirs]
        manager, used_defaults = _pick_manager(specs, mirrors, include_defaults)
        loaded = [_load_spec(manager, spec, offline) for spec in _expand_overrides(specs, manager)]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        from lm_eval.models.huggingface import HFLM

        sharing = current_sharing()
        model_class = _shared_lm_class(HFLM, sharing) if sharing.shared else HFLM
        with _logger_level("lm_eval", logging.ERROR):  # "pretrained is not a str" etc.: expected here
            lm = model_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=add_bos_token)
        with _skip_env_probes(evaluator):
            results = evaluator.simple_evaluate(
                model=lm, tasks=[obj for objs in loaded for obj in objs], task_manager=manager,
                num_fewshot=num_fewshot, limit=limit, bootstrap_iters=bootstrap_iters,
                log_samples=log_samples, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed,
            )
        max_length = lm.max_length
    if results is None:  # a process other than 0 of a shared evaluation: its documents' metrics went to 0
        return {}, {}
    metrics = flatten_results(results["results"])
    details = {
        "lm_eval_version": _version("lm_eval", lm_eval),
        "transformers_version": _version("transformers"),
        "task_versions": results.get("versions", {}),
        "n_samples": results.get("n-samples", {}),
        "n_shot": results.get("n-shot", {}),
        "higher_is_better": results.get("higher_is_better", {}),
        "config": {
            "tasks": [_spec_name(s) for s in specs],
            "include_dirs": [str(d) for d in dirs],
            "include_defaults": used_defaults,
            "batch_size": batch_size,
            "limit": limit,
            "num_fewshot": num_fewshot,
            "add_bos_token": add_bos_token,
            "bos_in_context": _bos_in_context(tokenizer, add_bos_token),
            "max_length": max_length,
            "bootstrap_iters": bootstrap_iters,
            "seed": seed,
            "offline": offline,
        },
        "seconds": round(time.perf_counter() - start, 3),
    }
    if log_samples:
        details["samples"] = results.get("samples", {})
    return metrics, details


def _shared_lm_class(hflm_class, sharing: Sharing):
    """``hflm_class`` answering lm-eval's data-parallel model API (rank, world size, all-gather,
    barrier) for the processes of ``sharing``; HFLM's own ``gather_object`` already uses
    ``torch.distributed`` with that rank."""
    import torch
    import torch.distributed

    class SharedHFLM(hflm_class):
        @property
        def rank(self) -> int:
            return sharing.rank

        @property
        def world_size(self) -> int:
            return sharing.world_size

        def all_gather(self, tensor):
            parts = [torch.zeros_like(tensor) for _ in range(sharing.world_size)]
            torch.distributed.all_gather(parts, tensor.contiguous())
            return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

        def barrier(self) -> None:
            torch.distributed.barrier()

    return SharedHFLM


def check_task_names(tasks: list[str | dict], include_dirs: list[Path] | None = None) -> None:
    """Raise :class:`UserError` (one line, with close matches) if a task name is unknown to
    lm-eval — before any model is evaluated. Local names are checked against ``include_dirs``
    alone (fast); lm-eval's index of built-in tasks is built only when a name is not local."""
    specs = _normalise_specs(tasks)
    dirs = _check_dirs(include_dirs)
    with _quiet(True):
        _import_lm_eval()
        _pick_manager(specs, [_mirror(d) for d in dirs], None)


def local_tasks(include_dirs: list[Path]) -> list[str]:
    """Names (tasks, groups, tags) that lm-eval finds in ``include_dirs``."""
    dirs = _check_dirs(include_dirs)
    if not dirs:
        return []
    with _quiet(True):
        _import_lm_eval()
        return list(_manager(tuple(_mirror(d) for d in dirs), False).all_tasks)


def flatten_results(results: dict[str, dict]) -> dict[str, float]:
    """lm-eval's ``results["results"]`` → ``{"harness/<task>/<metric>": float}``.

    ``"acc,none"`` → ``harness/<task>/acc``; ``"exact_match,strict-match"`` →
    ``harness/<task>/exact_match/strict-match``; aliases, names, None and "N/A" are skipped.
    """
    flat: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            if key in _SKIP_RESULT_KEYS or value is None or isinstance(value, (str, bool, dict, list)):
                continue
            metric, _, filt = key.partition(",")
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            name = metric if filt in ("", "none") else f"{metric}/{filt}"
            flat[f"{PREFIX}/{task}/{name}"] = number
    return flat


# --------------------------------------------------------------------------- task resolution


def _normalise_specs(tasks) -> list[str | dict]:
    if isinstance(tasks, (str, dict)):
        tasks = [tasks]
    specs = list(tasks or [])
    if not specs:
        raise UserError("no lm-eval task given; name at least one (e.g. tofu_mc, arc_easy)")
    for spec in specs:
        if isinstance(spec, dict):
            if not isinstance(spec.get("task", spec.get("group")), str):
                raise UserError(f"an lm-eval task dict needs a 'task' (or 'group') name: {spec!r}")
        elif not isinstance(spec, str) or not spec.strip():
            raise UserError(f"an lm-eval task is a name or a dict, not {spec!r}")
    return specs


def _spec_name(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else spec.get("task", spec.get("group"))


def _is_inline(spec) -> bool:
    return isinstance(spec, dict) and any(k in spec for k in _INLINE_KEYS)


def _check_dirs(include_dirs) -> list[Path]:
    if include_dirs is None:
        return []
    if isinstance(include_dirs, (str, Path)):
        include_dirs = [include_dirs]
    dirs = []
    for d in include_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"lm-eval include folder '{d}' does not exist")
        dirs.append(path)
    return dirs


def _pick_manager(specs, mirrors: list[Path], include_defaults: bool | None):
    """The TaskManager to use: local folders only when that suffices (fast), else with built-ins."""
    names = [_spec_name(s) for s in specs if not _is_inline(s)]
    local = _manager(tuple(mirrors), False) if mirrors else None
    local_names = set(local.all_tasks) if local else set()
    missing = [n for n in names if n not in local_names]
    if include_defaults is None:
        include_defaults = bool(missing)
    if not include_defaults:
        manager, known = local, local_names
    else:
        manager = _manager(tuple(mirrors), True)
        known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            raise UserError(_unknown_message(name, sorted(local_names), known, include_defaults))
    if manager is None:  # only inline configs and no include folder
        manager = _manager((), False)
    return manager, include_defaults


def _unknown_message(name: str, local_names: list[str], known: set[str], searched_defaults: bool) -> str:
    local = ", ".join(local_names) if local_names else "none"
    where = "built-in tasks: `lm-eval ls tasks`" if searched_defaults else "built-in tasks were not searched"
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown lm-eval task '{name}'; local tasks: {local} ({where}){hint}"


def _expand_overrides(specs, manager) -> list[str | dict]:
    """``{"task": <registered name>, **overrides}`` → the registered YAML config with the overrides
    (lm-eval itself treats every dict as a complete inline config)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    out = []
    for spec in specs:
        entry = manager.task_index.get(spec["task"]) if isinstance(spec, dict) and "task" in spec else None
        if (entry is not None and not _is_inline(spec) and getattr(entry, "yaml_path", None)
                and getattr(entry.kind, "name", "") in ("TASK", "PY_TASK")):
            cfg = dict(load_yaml(entry.yaml_path, resolve_func=True))
            cfg.update(spec)
            out.append(cfg)
        else:
            out.append(spec)
    return out


def _load_spec(manager, spec, offline: bool) -> list:
    """Build one spec's Task / Group objects (so load errors name the task)."""
    name = _spec_name(spec)
    try:
        loaded = manager.load([spec])
    except UserError:
        raise
    except Exception as exc:  # datasets/hub errors, bad YAML, …
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        extra = " (offline: is its dataset in the local HF datasets cache?)" if offline else ""
        raise UserError(f"cannot load lm-eval task '{name}'{extra}: {first}") from exc
    groups = loaded.get("groups") or {}
    if name in groups:
        return [groups[name]]
    return list(loaded["tasks"].values())


# --------------------------------------------------------------------------- include folders


def _fingerprint(directory: Path) -> tuple:
    files = []
    for root, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for fn in sorted(filenames):
            path = Path(root) / fn
            with contextlib.suppress(OSError):
                st = path.stat()
                files.append((str(path.relative_to(directory)), st.st_mtime_ns, st.st_size))
    return (str(directory), tuple(files))


def _mirror(directory: Path) -> Path:
    """A copy of ``directory`` whose YAMLs carry absolute data paths (cached per content version)."""
    global _MIRROR_ROOT
    key = _fingerprint(directory)
    if key in _MIRRORS and _MIRRORS[key].is_dir():
        return _MIRRORS[key]
    if _MIRROR_ROOT is None or not _MIRROR_ROOT.is_dir():
        _MIRROR_ROOT = Path(tempfile.mkdtemp(prefix="soul-bench-lm-eval-"))
        atexit.register(shutil.rmtree, _MIRROR_ROOT, True)
    dest = _MIRROR_ROOT / f"{len(_MIRRORS)}-{directory.name}"
    for root, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        src_dir = Path(root)
        out_dir = dest / src_dir.relative_to(directory)
        out_dir.mkdir(parents=True, exist_ok=True)
        for fn in filenames:
            src, out = src_dir / fn, out_dir / fn
            if fn.endswith((".yaml", ".yml")):
                out.write_text(_rewrite_yaml(src), encoding="utf-8")
            else:  # helper modules (!function) and data files stay where they are
                try:
                    out.symlink_to(src)
                except OSError:
                    shutil.copy2(src, out)
    _MIRRORS[key] = dest
    return dest


class _Function(str):
    """A ``!function module.name`` reference, kept verbatim through load → dump."""


def _yaml_io():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
    Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))
    return yaml, Loader, Dumper


def _rewrite_yaml(path: Path) -> str:
    """The YAML's text, with relative data paths made absolute against its own folder."""
    text = path.read_text(encoding="utf-8")
    yaml, Loader, Dumper = _yaml_io()
    try:
        cfg = yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError:
        return text  # not ours to fix; lm-eval reports it if the task is used
    if not isinstance(cfg, dict) or not _absolutise(cfg, path.parent):
        return text
    return yaml.dump(cfg, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _is_relative_path(value) -> bool:
    return (isinstance(value, str) and bool(value) and "://" not in value and not value.startswith("hf:")
            and not Path(value).expanduser().is_absolute())


def _absolutise(cfg: dict, base: Path) -> bool:
    """Rewrite ``dataset_kwargs.data_files`` / ``data_dir`` (and a local ``dataset_path``) in place."""
    changed = False

    def fix(value):
        nonlocal changed
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if _is_relative_path(value):
            changed = True
            return str((base / value).resolve())
        return value

    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        for key in ("data_files", "data_dir"):
            if key in kwargs:
                kwargs[key] = fix(kwargs[key])
    path = cfg.get("dataset_path")
    if _is_relative_path(path) and (base / path).exists():
        cfg["dataset_path"] = fix(path)
    return changed


def _manager(mirrors: tuple[Path, ...], include_defaults: bool):
    from lm_eval.tasks import TaskManager

    key = (tuple(str(m) for m in mirrors), include_defaults)
    if key not in _MANAGERS:
        if len(_MANAGERS) >= _MAX_MANAGERS:
            _MANAGERS.pop(next(iter(_MANAGERS)))
        _MANAGERS[key] = TaskManager(include_path=[str(m) for m in mirrors] or None,
                                     include_defaults=include_defaults)
    return _MANAGERS[key]


# --------------------------------------------------------------------------- environment


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval import evaluator
    except ImportError as exc:
        raise UserError(f"lm-eval is not installed ({exc}); pip install 'lm-eval>=0.4.5'") from exc
    return lm_eval, evaluator


def _version(dist: str, module=None) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return getattr(module, "__version__", None)


def _bos_in_context(tokenizer, add_bos_token: bool | None) -> bool:
    """Whether lm-eval's contexts start with BOS under this setting (HFLM.tok_encode's rule)."""
    if tokenizer.bos_token_id is None:
        return False
    kwargs = {} if add_bos_token is None else {"add_special_tokens": add_bos_token}
    ids = tokenizer.encode("Question:", **kwargs)
    return bool(ids) and ids[0] == tokenizer.bos_token_id


@contextlib.contextmanager
def _offline(offline: bool) -> Iterator[None]:
    """HF offline mode for the call: the env vars and the flags huggingface_hub/datasets read at import."""
    if not offline:
        yield
        return
    import datasets.config as ds_config
    import huggingface_hub.constants as hub_constants

    old_env = {k: os.environ.get(k) for k in OFFLINE_ENV}
    flags = [(hub_constants, "HF_HUB_OFFLINE"), (ds_config, "HF_HUB_OFFLINE"), (ds_config, "HF_DATASETS_OFFLINE")]
    old_flags = [(mod, attr, getattr(mod, attr)) for mod, attr in flags if hasattr(mod, attr)]
    try:
        for k in OFFLINE_ENV:
            os.environ[k] = "1"
        for mod, attr, _ in old_flags:
            setattr(mod, attr, True)
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for mod, attr, value in old_flags:
            setattr(mod, attr, value)


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(level, old) if old else level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _silent_tqdm(tqdm_cls):
    def make(*args, **kwargs):
        kwargs["disable"] = True
        return tqdm_cls(*args, **kwargs)

    return make


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """lm-eval logging at WARNING, no progress bars from lm-eval or datasets."""
    if not quiet:
        yield
        return
    import datasets.utils as ds_utils

    bars_were_on = not ds_utils.are_progress_bars_disabled()
    ds_utils.disable_progress_bars()
    patched = []
    try:
        from tqdm import tqdm

        for name in ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface"):
            __import__(name)
            module = sys.modules[name]
            if getattr(module, "tqdm", None) is tqdm:
                patched.append((module, module.tqdm))
                module.tqdm = _silent_tqdm(tqdm)
    except ImportError:
        pass
    try:
        with _logger_level("lm_eval", logging.WARNING):
            yield
    finally:
        for module, original in patched:
            module.tqdm = original
        if bars_were_on:
            ds_utils.enable_progress_bars()


@contextlib.contextmanager
def _skip_env_probes(evaluator) -> Iterator[None]:
    """simple_evaluate runs ``git describe`` in the working directory (meaningless here, and it
    prints "not a git repository" outside one) and torch's ``collect_env`` (subprocesses incl.
    ``pip list``: ~1 s a call, 15x the whole tiny-model evaluation). soul-bench records its own
    environment, so both are skipped for the call."""
    stubs = {"get_git_commit_hash": lambda: None, "add_env_info": lambda storage: None}
    originals = {name: getattr(evaluator, name) for name in stubs if hasattr(evaluator, name)}
    for name in originals:
        setattr(evaluator, name, stubs[name])
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(evaluator, name, original)


@contextlib.contextmanager
def _preserved_state(model, tokenizer) -> Iterator[None]:
    """simple_evaluate seeds random/numpy/torch globally and HFLM puts the model in eval mode:
    give the caller back its RNG streams, train/eval mode and pad token."""
    import numpy as np
    import torch

    was_training = model.training
    pad_token = tokenizer.pad_token
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        model.train(was_training)
        if tokenizer.pad_token != pad_token:
            tokenizer.pad_token = pad_token
