"""The run folder: the whole interface between a training process and anything watching it.

    RUN_DIR/
      config.toml      the frozen RunConfig the run was started with
      events.jsonl     one JSON object per line, appended and flushed as they happen
      train.log        human-readable log lines
      status.json      the latest summary (state, step, loss, pid, …), rewritten atomically
      trainer.pid      pid of the training process while it runs
      checkpoints/     resumable checkpoints and the method's output files

The dashboard only reads these files, so it works the same on a live run, a finished
one and one that crashed, and it can attach after an SSH connection drops.

Run folders live under a root (`DEFAULT_RUNS_ROOT` unless `output.proj_dir` says otherwise)
and are named by `new_run_dir` alone, so every way of starting a run names them alike.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rwkv_tui.trainer.atomic import atomic_write_text

EVENT_KINDS = ("start", "step", "epoch", "checkpoint", "warning", "error", "done", "info")
RUN_STATES = ("starting", "running", "stopping", "done", "failed", "stopped")
# The folder holding run folders when nothing else is said (output.proj_dir's default, the
# commands' --root, the runs screen).
DEFAULT_RUNS_ROOT = "runs"
# Local time to the second: names sort by start time and say when the run began.
RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"


def new_run_dir(root: str | Path, prefix: str, when: float | None = None) -> Path:
    """The path of a fresh run folder, ROOT/PREFIX-YYYYmmdd-HHMMSS (not created here).
    `when` (seconds since the epoch) defaults to now."""
    stamp = time.strftime(RUN_STAMP_FORMAT, time.localtime(when))
    return Path(root).expanduser() / f"{prefix}-{stamp}"


def config_run_dir(config: Any, when: float | None = None) -> Path:
    """Where a run of `config` (a RunConfig) goes by default: output.proj_dir/METHOD-time."""
    return new_run_dir(config.output.proj_dir, config.method.name, when)


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def at(cls, path: str | Path) -> "RunFolder":
        return cls(Path(path).expanduser().resolve())

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def pid_file(self) -> Path:
        return self.path / "trainer.pid"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def create(self) -> "RunFolder":
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.config.exists() or self.events.exists()

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}

    def write_status(self, **fields: Any) -> None:
        status = self.read_status()
        status.update(fields, updated=time.time())
        atomic_write_text(self.status, json.dumps(status, indent=2))

    def trainer_pid(self) -> int | None:
        """The pid of a live trainer for this folder, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EventWriter:
    """Appends events to `events.jsonl` (flushed per line, so a reader never waits) and
    mirrors them into `train.log`."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._events = folder.events.open("a", encoding="utf-8")
        self._log = folder.log.open("a", encoding="utf-8")

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = {"t": round(time.time(), 3), "kind": kind, **fields}
        self._events.write(json.dumps(event, default=_jsonable) + "\n")
        self._events.flush()
        if kind != "step":
            self.log(f"[{kind}] " + ", ".join(f"{k}={v}" for k, v in fields.items()))
        return event

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"{stamp} {message}\n")
        self._log.flush()

    def close(self) -> None:
        self._events.close()
        self._log.close()


def _jsonable(value: Any):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class EventReader:
    """Reads new complete lines from `events.jsonl` since the last call (a tail -f for the UI).

    A partially written last line is left for the next call; a corrupt line becomes a
    `warning` event rather than stopping the reader.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.offset = 0
        self._pending = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with self.folder.events.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()  # incomplete tail, or b"" after a final newline
        events = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                events.append(json.loads(raw))
            except ValueError:
                events.append({"kind": "warning", "message": f"unreadable event line: {raw[:80]!r}"})
        return events


def read_all_events(folder: RunFolder) -> list[dict[str, Any]]:
    return EventReader(folder).read_new()
