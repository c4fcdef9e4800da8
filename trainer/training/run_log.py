"""The run folder's shared files, written by global rank 0 alone."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import EventWriter, RunFolder, RunLock, write_pid_file
from rwkv_tui.trainer.training.run_index import record_run


@dataclass
class RunOpening:
    """How a run takes its folder. `run()` fills it in; `RunLog.start` carries it out once the
    settings are validated, so nothing in the folder is written before that."""
    resume: bool = False
    overwrite: bool = False          # --force: an old run in the folder is replaced
    config: Any = None               # the RunConfig to freeze into config.toml (None: keep the folder's)
    notes: list[str] = field(default_factory=list)  # settings changed on resume, logged as info events


class RunLog:
    """The run folder's shared files (events.jsonl, train.log, status.json, trainer.pid), written
    by global rank 0 alone; on the other ranks every call does nothing, so each event appears once.

    Rank 0 also holds the folder's lock (`RunLock`) from construction to `close`, so a second
    trainer is refused at once; other ranks never touch it. Given an `opening`, the first write
    waits for `start()` (after validation); without one the files open at once.

    Before Fabric exists the rank comes from the launcher's environment (`launch_rank_is_zero`);
    `follow_rank` then defers to Fabric's, should the two differ."""

    def __init__(self, folder: RunFolder, writes: bool, opening: RunOpening | None = None) -> None:
        self.folder = folder
        self.opening = opening
        self._events: EventWriter | None = None
        self._wrote_pid = False
        self._lock: RunLock | None = None
        self._made_folder = not folder.path.exists()
        self._made_lock_file = not folder.lock_file.exists()
        self._started = opening is None
        if writes:
            self._take_folder()
            if self._started:
                self._open()

    @property
    def writes(self) -> bool:
        return self._events is not None

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """The run's first writes, once its settings are known to work: the old run's files (with
        --force), stale temporary files, checkpoints/, config.toml, the pid file and events."""
        if self._started:
            return
        self._started = True
        if self._lock is None:  # another rank: it only needs checkpoints/ to exist
            self.folder.create()
            return
        opening = self.opening or RunOpening()
        self.folder.refuse_symlinks()
        if opening.overwrite:
            self.folder.clear_run()
        removed = self.folder.remove_stale_temps()
        self.folder.create()
        if opening.config is not None:
            from rwkv_tui.trainer.config import save_config

            save_config(opening.config, self.folder.config, only_changes=False)
        self._open()
        if removed:
            self.emit("info", message=f"removed {len(removed)} stale temporary file(s) a killed save left: "
                                      + ", ".join(p.name for p in removed))
        for note in opening.notes:
            self.emit("info", message=note)
        self.status(state="starting", pid=os.getpid(), run_dir=str(self.folder.path))
        record_run(self.folder.path)  # `runs` and `attach` find it from any directory

    def follow_rank(self, is_global_zero: bool) -> None:
        if is_global_zero == self.writes:
            return
        self.close()
        if is_global_zero:
            self._take_folder()
            self._open()

    def emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.emit(kind, **fields)

    def log(self, message: str) -> None:
        if self._events is not None:
            self._events.log(message)

    def status(self, **fields: Any) -> None:
        if self.writes:
            self.folder.write_status(**fields)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._wrote_pid:
            self.folder.pid_file.unlink(missing_ok=True)
            self._wrote_pid = False
        if self._lock is not None:
            self._drop_unused_folder()
            self._lock.release()
            self._lock = None

    def _take_folder(self) -> None:
        """The lock, then (for a new run) the check that the folder holds no other run."""
        self._lock = RunLock.acquire(self.folder)
        opening = self.opening
        if opening is None or opening.resume or opening.overwrite or not self.folder.exists():
            return
        self.close()
        raise RwkvTuiError("this folder already holds a run (it has config.toml or events.jsonl); a new run "
                           "would overwrite its checkpoints", path=self.folder.path,
                           hint=f"continue it with `rwkv-tui train --resume {self.folder.path}`, replace it with "
                                "--force, or choose another --run-dir")

    def _drop_unused_folder(self) -> None:
        """A run refused before its first write leaves no trace: the folder it made goes again."""
        if self._started:
            return
        if self._made_lock_file:
            self.folder.lock_file.unlink(missing_ok=True)
        if not self._made_folder:
            return
        try:
            self.folder.path.rmdir()
        except OSError:
            pass  # something else was put there meanwhile: leave it

    def _open(self) -> None:
        self._events = EventWriter(self.folder)
        write_pid_file(self.folder.pid_file, os.getpid())  # where Stop sends its signal, with this process's identity
        self._wrote_pid = True
