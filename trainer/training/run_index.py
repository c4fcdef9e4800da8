"""The run index: every run folder this user started, wherever its root, so `rwkv-tui runs` and
`attach` find a run from any directory (after an SSH reconnect in another folder, or the demo's
run under ./rwkv-tui-demo/runs).

    <state dir>/runs-index.jsonl   one {"path": ..., "started": ...} line per run start
    <state dir>/runs-index.lock    flock'd around every append and rewrite

Appends and the rewrite that drops vanished folders both hold the lock, so two trainers starting
at once, or a reader pruning while a trainer appends, never lose a line; the rewrite itself is
atomic (temporary file + rename). A run resumed is recorded again; readers keep each path once.
Recording is best effort: a read-only home must not stop a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from rwkv_tui.trainer.atomic import atomic_write_text
from rwkv_tui.trainer.user_dirs import state_dir

INDEX_FILE = "runs-index.jsonl"
_LOCK_FILE = "runs-index.lock"


def index_path() -> Path:
    return state_dir() / INDEX_FILE


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory / INDEX_FILE
    finally:
        os.close(fd)  # drops the flock


def record_run(run_dir: str | Path, started: float | None = None) -> bool:
    """Add a run folder to the index; False (and nothing raised) when the state folder is not writable."""
    line = json.dumps({"path": str(Path(run_dir).expanduser().resolve()),
                       "started": round(time.time() if started is None else started, 3)}) + "\n"
    try:
        with _locked() as index:
            with open(index, "a", encoding="utf-8") as handle:
                handle.write(line)
        return True
    except OSError:
        return False


def indexed_runs() -> list[Path]:
    """The indexed run folders that still exist, newest start first, each once. Folders that are
    gone (deleted, on an unmounted disk) are dropped from the index quietly."""
    index = index_path()
    if not index.is_file():
        return []
    try:
        with _locked() as index:
            entries = _read(index)
            kept = {path: started for path, started in entries.items() if Path(path).is_dir()}
            if len(kept) < len(entries) or _has_duplicates(index, len(entries)):
                atomic_write_text(index, "".join(json.dumps({"path": p, "started": s}) + "\n"
                                                 for p, s in sorted(kept.items(), key=lambda kv: kv[1])))
    except OSError:
        return []
    return [Path(p) for p, _ in sorted(kept.items(), key=lambda kv: kv[1], reverse=True)]


def forget_run(run_dir: str | Path) -> None:
    """Drop a run folder from the index (after the app deletes it)."""
    target = str(Path(run_dir).expanduser().resolve())
    try:
        with _locked() as index:
            if not index.is_file():
                return
            entries = _read(index)
            entries.pop(target, None)
            atomic_write_text(index, "".join(json.dumps({"path": p, "started": s}) + "\n"
                                             for p, s in sorted(entries.items(), key=lambda kv: kv[1])))
    except OSError:
        pass


def _read(index: Path) -> dict[str, float]:
    """path -> latest start time; malformed lines (a crash mid-append on an odd filesystem) skipped."""
    entries: dict[str, float] = {}
    for raw in index.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(raw)
            path, started = item["path"], float(item.get("started", 0.0))
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(path, str):
            entries[path] = max(started, entries.get(path, 0.0))
    return entries


def _has_duplicates(index: Path, unique: int) -> bool:
    """More lines than runs (resumes recorded again): worth compacting while the lock is held."""
    with open(index, "rb") as handle:
        return sum(1 for _ in handle) > unique
