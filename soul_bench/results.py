"""Result records: one JSON per cell, written atomically, and the environment they came from."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

RECORD_SCHEMA = 1


def content_hash(*parts) -> str:
    """Stable short hash of JSON-serialisable parts: cache keys (recipe + data) and cell ids."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: Path, payload) -> None:
    """Write to a temp file in the same folder, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / "records" / f"{cell_id}.json"


def finished_record(out_dir: Path, cell_id: str) -> dict | None:
    """The record of a cell that already finished (status ok or skipped, and every probe it asked
    for in it), else None — failed cells, and cells stopped while their probes ran, rerun."""
    path = record_path(out_dir, cell_id)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("status") in ("ok", "skipped") and not record.get("probes_pending") else None


def recorded_tasks(out_dir: Path) -> set[str]:
    """The tasks whose records an output folder holds (records that cannot be read are the
    report's to name)."""
    tasks = set()
    for path in (Path(out_dir) / "records").glob("*.json"):
        try:
            task = json.loads(path.read_text()).get("task")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
            continue
        if isinstance(task, str):
            tasks.add(task)
    return tasks


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(model_ran: bool = True) -> dict:
    """Where a record was made. ``model_ran=False`` (results imported from elsewhere): no torch /
    transformers versions or GPU, since no model ran here."""
    from soul_bench import __version__

    env = {"soul_bench": __version__, "git_sha": git_sha(), "python": platform.python_version(),
           "platform": platform.platform(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if model_ran:
        import torch
        import transformers

        env.update(torch=torch.__version__, transformers=transformers.__version__,
                   cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return env


def files_fingerprint(*folders: Path, suffixes: tuple[str, ...] = (".py", ".yaml", ".yml", ".json", ".txt")) -> str:
    """Hash of the source files under ``folders`` (relative name + bytes, sorted): changes when any
    code or card that could move a number changes."""
    digest = hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        for file in sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in suffixes
                           and "__pycache__" not in f.parts):
            digest.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class EvaluationCache:
    """Finished baseline evaluations (target, retain), kept across run folders.

    A baseline's record depends only on its identity (the cell id: task, split, data source,
    weights fingerprint, prompt, evaluation and harness settings) and on what computes it. The
    key adds that: ``context`` names the code (fingerprints of the package and the task folder),
    the data's content, library versions and the device; any change is a miss. So a second sweep
    on the same models skips the two baseline evaluations instead of repeating them exactly."""

    def __init__(self, folder: Path, context: dict):
        self.folder = Path(folder)
        self.key = content_hash(context)

    def path(self, cell_id: str) -> Path:
        return self.folder / f"{cell_id}-{self.key}.json"

    def get(self, cell_id: str) -> dict | None:
        path = self.path(cell_id)
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if record.get("status") == "ok" and record.get("cell_id") == cell_id else None

    def put(self, record: dict) -> None:
        if record.get("status") == "ok":
            write_json_atomic(self.path(record["cell_id"]), record)


LOCK_NAME = ".soul-bench.lock"


def lock_run_folder(out_dir: Path):
    """Hold an exclusive lock on ``out_dir`` for this process's lifetime (returns the open lock
    file; closing it, or the process ending in any way — SIGKILL included — releases it), so two
    sweeps never write the same records at once. Raises RuntimeError naming the holder's pid."""
    path = Path(out_dir) / LOCK_NAME
    handle = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, run unguarded
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(f"another soul-bench run (pid {holder}) is writing '{out_dir}'; wait for it to end "
                           "or give another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
