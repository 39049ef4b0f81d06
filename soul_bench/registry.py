"""Registries of tasks, methods and optimisers, with plugin discovery.

Tasks are folders (``task.yaml`` + ``task.py``) found two ways, both used by built-ins and
third parties alike: the ``soul_bench.tasks`` entry-point group (value = a package whose
folder is the task), and task directories named by ``--tasks-dir`` or the
``SOUL_BENCH_TASKS_PATH`` environment variable (``os.pathsep``-separated; each sub-folder
holding a ``task.yaml`` is a task). Methods and optimisers also accept plugins through the
``soul_bench.methods`` / ``soul_bench.optimizers`` entry-point groups.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from soul_bench.card import read_card
from soul_bench.engine.hparams import check_types
from soul_bench.engine.methods import UNLEARNING_METHODS, Method
from soul_bench.engine.optimizers import OPTIMIZERS
from soul_bench.errors import UserError
from soul_bench.task import Task, TaskCard

TASKS_PATH_ENV = "SOUL_BENCH_TASKS_PATH"


def _valid(kind: str, name: str, names) -> UserError:
    return UserError(f"unknown {kind} '{name}'; valid: {', '.join(sorted(names))}")


def task_folders(extra_dirs: list[str | Path] | None = None) -> dict[str, Path]:
    """name → folder of every discoverable task. Later sources win (a tasks dir can shadow a built-in)."""
    found: dict[str, Path] = {}
    for ep in entry_points(group="soul_bench.tasks"):
        try:
            spec = importlib.util.find_spec(ep.value)
        except ModuleNotFoundError:
            continue
        if spec and spec.submodule_search_locations:
            found[ep.name] = Path(list(spec.submodule_search_locations)[0])
    dirs = [d for d in os.environ.get(TASKS_PATH_ENV, "").split(os.pathsep) if d] + list(extra_dirs or [])
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"tasks directory '{directory}' does not exist")
        if (directory / "task.yaml").exists():  # the folder is itself a task
            found[_card_name(directory)] = directory
        for child in sorted(directory.iterdir()):
            if (child / "task.yaml").exists():
                found[_card_name(child)] = child
    return found


def builtin_task_names() -> list[str]:
    """Tasks registered through the ``soul_bench.tasks`` entry-point group (built-ins and installed plugins)."""
    return sorted(ep.name for ep in entry_points(group="soul_bench.tasks"))


def _card_name(folder: Path) -> str:
    return (_read_card(folder).get("name") or folder.name)


def _read_card(folder: Path) -> dict:
    return read_card(folder / "task.yaml")


def load_task(name: str, extra_dirs: list[str | Path] | None = None) -> Task:
    folders = task_folders(extra_dirs)
    if name not in folders:
        raise _valid("task", name, folders)
    folder = folders[name]
    raw = _read_card(folder)
    card = TaskCard(name=raw.get("name", name), description=raw.get("description", ""), folder=folder, raw=raw)
    module_file = folder / "task.py"
    if not module_file.exists():
        raise UserError(f"task '{name}' has no task.py in {folder}")
    spec = importlib.util.spec_from_file_location(f"soul_bench_task_{card.name}", module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so postponed annotations (pydantic section models) resolve
    spec.loader.exec_module(module)
    if not hasattr(module, "load"):
        raise UserError(f"{module_file} must define load(card) -> Task")
    return module.load(card)


def methods() -> dict[str, type[Method]]:
    found = dict(UNLEARNING_METHODS)
    for ep in entry_points(group="soul_bench.methods"):
        found[ep.name] = ep.load()
    return found


def optimizers() -> dict[str, tuple]:
    """name → (factory, description). Plugins (entry-point value: such a pair) join the one table
    ``engine.optimizers.build_optimizer`` reads, so they are built like the built-ins."""
    for ep in entry_points(group="soul_bench.optimizers"):
        OPTIMIZERS.setdefault(ep.name, ep.load())
    return dict(OPTIMIZERS)


def build_method(name: str, hparams: dict | None = None) -> Method:
    registry = methods()
    if name not in registry:
        raise _valid("method", name, registry)
    cls = registry[name]
    defaults = {f.name: f.default for f in getattr(cls, "__dataclass_fields__", {}).values()}
    try:
        check_types(name, defaults, hparams or {})
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    try:
        return cls(**(hparams or {}))
    except ValueError as exc:  # a value out of the method's bounds
        raise UserError(str(exc)) from exc
    except TypeError as exc:
        fields = ", ".join(cls.__dataclass_fields__) or "none"
        raise UserError(f"bad hyper-parameters for method '{name}' ({exc}); valid: {fields}") from exc


def check_names(kind: str, names: list[str], valid) -> None:
    for name in names:
        if name not in valid:
            raise _valid(kind, name, valid)
