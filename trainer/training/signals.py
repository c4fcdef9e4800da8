"""Graceful stop: SIGINT/SIGTERM (Ctrl-C, the dashboard's Stop button) ask the loop to stop
after the current step, save a checkpoint and write a `done` event, instead of dying mid-write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
    """Route SIGINT/SIGTERM to `stop` while the block runs (main thread only; elsewhere a no-op).
    A second Ctrl-C restores the default handler, so an impatient user can still kill the run."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

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


def stop_agreed(stop: StopRequest, fabric) -> bool:
    """Whether the run stops now, with the same answer on every rank. A signal may reach one
    process only (the dashboard signals the pid in trainer.pid, rank 0's), and ranks that left the
    loop at different steps would wait forever in each other's collectives (gradients, checkpoint)."""
    if fabric.world_size == 1:
        return stop.requested
    import torch

    flag = torch.tensor([float(stop.requested)], device=fabric.device)
    # A collective and a CPU–GPU sync once per step: tiny next to the gradients' all-reduce.
    return bool(fabric.all_reduce(flag, reduce_op="max").item())
