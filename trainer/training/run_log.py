"""The run folder's shared files, written by global rank 0 alone."""

from __future__ import annotations

import os
from typing import Any

from rwkv_tui.trainer.training.folder import EventWriter, RunFolder


class RunLog:
    """The run folder's shared files (events.jsonl, train.log, status.json, trainer.pid), written
    by global rank 0 alone; on the other ranks every call does nothing, so each event appears once.

    Before Fabric exists the rank comes from the launcher's environment (`launch_rank_is_zero`);
    `follow_rank` then defers to Fabric's, should the two differ."""

    def __init__(self, folder: RunFolder, writes: bool) -> None:
        self.folder = folder
        self._events: EventWriter | None = None
        self._wrote_pid = False
        if writes:
            self._open()

    @property
    def writes(self) -> bool:
        return self._events is not None

    def follow_rank(self, is_global_zero: bool) -> None:
        if is_global_zero != self.writes:
            self.close()
            if is_global_zero:
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

    def _open(self) -> None:
        self._events = EventWriter(self.folder)
        self.folder.pid_file.write_text(str(os.getpid()))  # where the dashboard sends its stop signal
        self._wrote_pid = True
