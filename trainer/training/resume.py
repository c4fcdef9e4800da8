"""resume.ckpt: what a stopped run needs to continue exactly, saved and loaded.

It holds only what the base checkpoint cannot give back: trainable weights, optimizer state,
the step, running averages and the RNG state."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.metrics import SmoothedValue
from rwkv_tui.trainer.training.run_log import RunLog
from rwkv_tui.trainer.training.setup import Training, fabric_unwrap

RESUME_FILE = "resume.ckpt"


@dataclass
class ResumePoint:
    """Where training continues: a fresh run starts at step 0 with nothing to restore."""
    step: int = 0
    smoothed: SmoothedValue = field(default_factory=SmoothedValue)
    rng: dict | None = None


def load_resume(fabric, log: RunLog, training: Training) -> ResumePoint:
    """Trainable weights and optimizer state into `training`; the step, running averages and RNG."""
    path = log.folder.checkpoints / RESUME_FILE
    if not path.exists():
        raise RwkvTuiError("the run folder has no checkpoint to resume from", path=path,
                           hint="start a new run; checkpoints are written every epoch_save epochs and on stop")
    restored = fabric.load(path, {"model": training.model, "optimizer": training.optimizer}, strict=False)
    point = ResumePoint(step=int(restored["step"]), smoothed=SmoothedValue.from_state(restored["smoothed"]),
                        rng=restored.get("rng"))
    training.method.on_step(training.model, point.step)
    log.emit("info", message=f"resumed at step {point.step}")
    return point


def save_resume(fabric, path: Path, model, optimizer, method, step: int, smoothed: SmoothedValue) -> None:
    """Only what the base checkpoint cannot give back: trainable weights, optimizer, counters.

    Written to a temporary name and renamed (by rank 0), so a crash mid-save keeps the previous one.
    """
    in_optimizer = {id(p) for p in method.optimizer_parameters(fabric_unwrap(model))}
    trainable = {name for name, p in fabric_unwrap(model).named_parameters() if id(p) in in_optimizer}
    tmp = path.with_name(path.name + ".tmp")
    state = {"model": model, "optimizer": optimizer, "step": step, "smoothed": smoothed.state_dict(),
             "rng": _rng_state()}
    # Collective, and a CPU–GPU sync: the tensors are copied to the host.
    fabric.save(tmp, state, filter={"model": lambda name, _: name in trainable})
    if fabric.is_global_zero:
        _replace(tmp, path)
    fabric.barrier()


def _replace(tmp: Path, path: Path) -> None:
    import shutil

    if tmp.is_dir():  # DeepSpeed writes a folder: swap folders, then drop the old one
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state) -> None:
    if state:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
