"""The run folder: the whole interface between a training process and anything watching it.

    RUN_DIR/
      config.toml      the frozen RunConfig the run was started with
      events.jsonl     one JSON object per line, appended and flushed as they happen
      train.log        human-readable log lines
      status.json      the latest summary (state, step, loss, pid, …), rewritten atomically
      trainer.pid      pid of the training process while it runs, with its start time and command line
      trainer.lock     held (flock) by the training process for its whole life: the one owner
      checkpoints/     resumable checkpoints and the method's output files

One owner: the trainer (global rank 0) holds an exclusive `flock` on `trainer.lock` from before
its first write to its exit, and the kernel drops it when the process dies however it dies. So
the lock, not a pid, says whether a run is live: a reader that can take the lock itself knows
nobody trains there. The file stays after the run; only its lock matters. A pid is trusted only
from the lock's holder, or from a `trainer.pid` whose recorded start time and command line still
match (the moment between the launcher starting a trainer and the trainer taking the lock).

A folder "holds a run" once it has config.toml or events.jsonl (`RunFolder.exists`): a fresh
folder, or one the app's launcher just made (launch.toml, trainer.out, status.json), does not.
Run-folder files are opened without following symbolic links; a link there is an error.

The dashboard only reads these files, so it works the same on a live run, a finished
one and one that crashed, and it can attach after an SSH connection drops.

Run folders live under a root (`DEFAULT_RUNS_ROOT` unless `output.proj_dir` says otherwise)
and are named by `new_run_dir` alone, so every way of starting a run names them alike.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rwkv_tui.trainer.atomic import atomic_write_text, open_nofollow, remove_stale_temporaries
from rwkv_tui.trainer.errors import RwkvTuiError

EVENT_KINDS = ("start", "step", "epoch", "checkpoint", "warning", "error", "done", "info", "val", "sample",
               "best", "loading")
RUN_STATES = ("starting", "running", "stopping", "done", "failed", "stopped")
# The folder holding run folders when nothing else is said (output.proj_dir's default, the
# commands' --root, the runs screen).
DEFAULT_RUNS_ROOT = "runs"
# Local time to the second: names sort by start time and say when the run began.
RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"
LIVE_STATES = ("starting", "running", "stopping")
# A reader holds the lock for microseconds while it checks liveness: a trainer taking the lock
# retries this long before it calls the folder taken.
_LOCK_PATIENCE_S = 0.25
# status.json fields and the types a reader may rely on; a field of another type is dropped.
_STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "state": (str,), "step": (int,), "total_steps": (int,), "loss": (int, float), "smoothed_loss": (int, float),
    "eta_s": (int, float), "updated": (int, float), "pid": (int,), "error": (str,), "run_dir": (str,),
    "outputs": (list,)}


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
    def lock_file(self) -> Path:
        return self.path / "trainer.lock"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def run_files(self) -> tuple[Path, ...]:
        """What a trainer writes in the folder: none of these may be a symbolic link."""
        return (self.config, self.events, self.log, self.status, self.pid_file, self.lock_file, self.checkpoints)

    def create(self) -> "RunFolder":
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        """Whether the folder holds a run (config.toml or events.jsonl): see the module's docstring."""
        return self.config.exists() or self.events.exists()

    def read_status(self) -> dict[str, Any]:
        """status.json's fields of the expected types; anything malformed is left out (see `status_problems`)."""
        return read_status_file(self.status).fields

    def status_problems(self) -> list[str]:
        return read_status_file(self.status).problems

    def write_status(self, **fields: Any) -> None:
        status = self.read_status()
        status.update(fields, updated=time.time())
        atomic_write_text(self.status, json.dumps(status, indent=2))

    def trainer_pid(self) -> int | None:
        """The pid of the live trainer that owns this folder, or None.

        Trusted only from the holder of `trainer.lock`, or from a `trainer.pid` whose recorded start
        time and command line match the live process (a trainer just launched, not locked yet). A pid
        file whose process died, or whose pid now belongs to another process, gives None."""
        probe = probe_lock(self.lock_file)
        if probe.held and probe.pid is not None:
            return probe.pid
        record = read_pid_file(self.pid_file)
        return record.pid if record is not None and record.matches_live_process() else None

    def refuse_symlinks(self) -> None:
        """A link planted in the folder would redirect the trainer's writes: refuse to start."""
        for path in self.run_files:
            if path.is_symlink():
                raise RwkvTuiError("is a symbolic link in a run folder; the trainer does not follow links there",
                                   path=path, hint="remove the link, or choose another --run-dir")

    def remove_stale_temps(self) -> list[Path]:
        """Temporary files a killed save left behind (`*.tmp` in the folder and checkpoints/).
        Only the lock's holder may call this: a live save's temp file would go too."""
        return remove_stale_temporaries(self.path) + remove_stale_temporaries(self.checkpoints)

    def clear_run(self) -> None:
        """The old run's files, for `--force`: config, events, log, status, checkpoints and the
        trackers' folders (a new run's curves must not join the old one's)."""
        from rwkv_tui.trainer.training.trackers import TRACKER_FOLDERS

        for path in (self.config, self.events, self.log, self.status):
            path.unlink(missing_ok=True)
        for folder in (self.checkpoints, *(self.path / name for name in TRACKER_FOLDERS.values())):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)


@dataclass(frozen=True)
class StatusRead:
    fields: dict[str, Any]
    problems: list[str]


def read_status_file(path: Path) -> StatusRead:
    """status.json as a dict of correctly typed fields, and what was wrong with it, if anything.
    A missing file is no problem (a run that has not started); a malformed one is reported."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return StatusRead({}, [])
    except (OSError, RwkvTuiError) as exc:
        return StatusRead({}, [f"{path}: unreadable ({_reason(exc)})"])
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        return StatusRead({}, [f"{path}: not valid JSON ({_reason(exc)}); skipped"])
    if not isinstance(data, dict):
        return StatusRead({}, [f"{path}: not a JSON object; skipped"])
    fields, problems = {}, []
    for key, value in data.items():
        expected = _STATUS_TYPES.get(key)
        if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            problems.append(f"{path}: field {key!r} has a malformed value {value!r:.40}; skipped")
            continue
        fields[key] = value
    return StatusRead(fields, problems)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RwkvTuiError) else (getattr(exc, "strerror", None) or str(exc))


# ---------------------------------------------------------------------------------------------
# Who owns the folder: the lock, and pids that can be trusted


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells a process from a later one that got its pid: its start time (clock ticks since
    boot, from /proc) and its command line. None where /proc is missing (not Linux)."""
    start_ticks: int
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> "ProcessIdentity | None":
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
        # starttime is field 22; after the ")" the fields start at 3.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return cls(start_ticks, [part.decode(errors="replace") for part in cmdline.split(b"\0")[:-1]])


@dataclass(frozen=True)
class PidRecord:
    """trainer.pid: line 1 the pid (as before), then the process's start ticks and its command line
    (JSON), so a reader can tell that pid's process from a later one that reused it."""
    pid: int
    identity: ProcessIdentity | None = None

    def text(self) -> str:
        if self.identity is None:
            return f"{self.pid}\n"
        return f"{self.pid}\n{self.identity.start_ticks}\n{json.dumps(self.identity.cmdline)}\n"

    def matches_live_process(self) -> bool:
        """Only a recorded identity can vouch for a pid: a bare pid may belong to anyone by now."""
        return self.identity is not None and ProcessIdentity.of(self.pid) == self.identity


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        fd = open_nofollow(path, os.O_RDONLY)
        with os.fdopen(fd, "r", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        pid = int(lines[0].strip())
    except (OSError, ValueError, IndexError, RwkvTuiError):
        return None
    try:
        identity = ProcessIdentity(int(lines[1]), list(json.loads(lines[2])))
    except (ValueError, IndexError, TypeError):
        identity = None
    return PidRecord(pid, identity)


def write_pid_file(path: Path, pid: int, cmdline: list[str] | None = None) -> None:
    """trainer.pid for `pid`, with its identity; `cmdline` for a process just started (the launcher
    knows the command it ran), else the one /proc shows. Never written through a symbolic link."""
    identity = ProcessIdentity.of(pid)
    if identity is not None and cmdline is not None:
        identity = ProcessIdentity(identity.start_ticks, list(cmdline))
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(PidRecord(pid, identity).text())


@dataclass(frozen=True)
class LockProbe:
    held: bool
    pid: int | None = None  # the holder's pid, as it wrote it in the lock file


def probe_lock(path: Path) -> LockProbe:
    """Whether someone holds `trainer.lock`: a non-blocking shared lock succeeds only if nobody does."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except (OSError, RwkvTuiError):  # no lock file (no trainer ever ran), or a planted link
        return LockProbe(held=False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockProbe(held=True, pid=_pid_in(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockProbe(held=False)
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None  # the holder has the lock but has not written its pid yet


class RunLock:
    """The exclusive `flock` on a run folder's `trainer.lock`, held by its one trainer. The kernel
    releases it when the process ends, even by kill -9, so it never goes stale."""

    def __init__(self, folder: RunFolder, fd: int) -> None:
        self.folder = folder
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: RunFolder) -> "RunLock":
        """Take the folder, or raise naming the trainer that has it."""
        folder.path.mkdir(parents=True, exist_ok=True)
        fd = open_nofollow(folder.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _LOCK_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _pid_in(fd)
                    os.close(fd)
                    raise folder_in_use(folder, holder) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def folder_in_use(folder: RunFolder, pid: int | None) -> RwkvTuiError:
    status = folder.read_status()
    state = status.get("state", "starting")
    step = f", step {status['step']}" if "step" in status else ""
    who = f"trainer pid {pid}" if pid is not None else "another trainer"
    return RwkvTuiError(f"this run folder is in use by {who} ({state}{step}); one run folder has one trainer",
                        path=folder.path, hint=f"follow it with `rwkv-tui attach {folder.path}`, stop it first, "
                                               "or choose another --run-dir")


def signal_trainer(folder: RunFolder, signum: int = signal.SIGINT) -> bool:
    """Send `signum` to the folder's trainer if, and only if, it is still the folder's trainer;
    False (and no signal) otherwise. The process is pinned by a pidfd before the second check,
    so the pid cannot be reused between the check and the signal."""
    pid = folder.trainer_pid()
    if pid is None:
        return False
    pidfd = _pidfd(pid)
    try:
        if pidfd == -1 or folder.trainer_pid() != pid:
            return False
        if pidfd is None:  # no pidfd on this system: the window is the few microseconds above
            os.kill(pid, signum)
        else:
            signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd not in (None, -1):
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid`; -1 if the process is gone; None where pidfds do not exist (not Linux ≥ 5.3)."""
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return None
        raise


class EventWriter:
    """Appends events to `events.jsonl` (flushed per line, so a reader never waits) and
    mirrors them into `train.log`."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._events = _append_nofollow(folder.events)
        self._log = _append_nofollow(folder.log)

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


def _append_nofollow(path: Path):
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), "a", encoding="utf-8")


def _jsonable(value: Any):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class EventReader:
    """Reads new complete lines from `events.jsonl` since the last call (a tail -f for the UI).

    A partially written last line is left for the next call; a malformed line (not JSON, not an
    object with a `kind`) is skipped and reported as a `warning` event rather than stopping the reader.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.offset = 0
        self._pending = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with os.fdopen(open_nofollow(self.folder.events, os.O_RDONLY), "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        except (OSError, RwkvTuiError) as exc:
            return [_unreadable(f"cannot read {self.folder.events}: {_reason(exc)}")]
        self.offset += len(chunk)
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()  # incomplete tail, or b"" after a final newline
        return [_parse_event(raw) for raw in lines if raw.strip()]


def _parse_event(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except ValueError:
        return _unreadable(f"unreadable event line skipped: {raw[:80]!r}")
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
        return _unreadable(f"malformed event line skipped (not an object with a kind): {raw[:80]!r}")
    return event


def _unreadable(message: str) -> dict[str, Any]:
    return {"kind": "warning", "message": message}


def read_all_events(folder: RunFolder) -> list[dict[str, Any]]:
    return EventReader(folder).read_new()
