"""Graceful stop: SIGINT/SIGTERM (Ctrl-C, the dashboard's Stop button) and SIGHUP (the terminal or SSH
connection closing under a foreground run) ask the loop to stop after the current micro batch, save a
checkpoint and write a `done` event, instead of dying mid-write. While a checkpoint is being written
those signals wait (`deferred_during_save`), so a second Ctrl-C cannot cut a save short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# SIGHUP is treated like SIGTERM; platforms without it (Windows) have the other two.
STOP_SIGNALS = tuple(sig for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                     if sig is not None)


class StopRequest:
    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.reason = "stopped"

    def request(self, reason: str = "stopped") -> None:
        self.reason = reason
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM/SIGHUP to `stop` while the block runs (main thread only; elsewhere a no-op).
    The first one restores the previous handler, so an impatient user's second Ctrl-C still kills the
    run, except while a checkpoint is being written (`deferred_during_save`)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum, frame):
        stop.request(f"stopped by {signal.Signals(signum).name}")
        signal.signal(signum, previous[signum])

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def deferred_during_save(stop: StopRequest, report_ignored: Callable[[str], None]) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block (a checkpoint save) is done, so the file is
    complete. Afterwards a signal that arrived becomes the stop request if none was made yet;
    one that came after a stop request is passed to `report_ignored` with its name."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for signum in received:
            _deliver_after_save(stop, signal.Signals(signum).name, report_ignored)


def _deliver_after_save(stop: StopRequest, name: str, report_ignored: Callable[[str], None]) -> None:
    if stop.requested:
        report_ignored(name)
    else:
        stop.request(f"stopped by {name}")


def stop_agreed(stop: StopRequest, fabric) -> bool:
    """Whether the run stops now, with the same answer on every rank. A signal may reach one
    process only (the dashboard signals the pid in trainer.pid, rank 0's), and ranks that left the
    loop at different steps would wait forever in each other's collectives (gradients, checkpoint)."""
    if fabric.world_size == 1:
        return stop.requested
    import torch

    flag = torch.tensor([float(stop.requested)], device=fabric.device)
    # A collective and a CPU–GPU sync, asked before every micro batch (a stop waits one micro
    # batch at most): one float, small next to the gradients' all-reduce, but it does stall the
    # queue between micro batches on multi-GPU runs.
    return bool(fabric.all_reduce(flag, reduce_op="max").item())
