"""resume.ckpt: what a stopped run needs to continue exactly, saved and loaded.

It holds only what the base checkpoint cannot give back: trainable weights, optimizer state,
the step, running averages and the RNG state."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rwkv_tui.trainer.atomic import TEMP_SUFFIX
from rwkv_tui.trainer.checkpoint import atomic_torch_save, load_torch_file
from rwkv_tui.trainer.errors import CheckpointError, RwkvTuiError
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
    if path.is_dir():  # DeepSpeed's sharded folder: only its engine can read it back
        restored = fabric.load(path, {"model": training.model, "optimizer": training.optimizer}, strict=False)
    else:
        restored = read_resume_file(path)
        _restore_training(path, restored, training)
    point = _resume_point(path, restored)
    training.method.on_step(training.model, point.step)
    log.emit("info", message=f"resumed at step {point.step}")
    return point


def read_resume_file(path: Path) -> dict:
    """resume.ckpt's content, loaded with weights_only=True whatever the environment says: it holds
    only dicts, lists, numbers and tensors, so no extra safe globals are needed, and a file carrying
    any other object is refused without running it. Every problem names the file."""
    loaded = load_torch_file(path)
    missing = [key for key in _RESUME_KEYS if not isinstance(loaded, Mapping) or key not in loaded]
    if missing:
        raise CheckpointError(f"is not a resume point (no {', '.join(missing)})", path=path, hint=_CORRUPT_HINT)
    return dict(loaded)


_RESUME_KEYS = ("model", "optimizer", "step", "smoothed")
_CORRUPT_HINT = ("resume.ckpt is damaged or was replaced; resume from an epoch file instead "
                 "(method.init_from=<checkpoints/epochN-….pth> in a new run)")


def _restore_training(path: Path, restored: dict, training: Training) -> None:
    """The saved trainable weights and optimizer state into the freshly built model and optimizer."""
    core = fabric_unwrap(training.model)
    try:
        result = core.load_state_dict(restored["model"], strict=False)
        training.optimizer.load_state_dict(restored["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"does not fit this run's model and method ({_first_line(exc)})", path=path,
                              hint=_CORRUPT_HINT) from None
    if result.unexpected_keys:
        raise CheckpointError(f"holds tensors this model does not have: {result.unexpected_keys[:3]}", path=path,
                              hint=_CORRUPT_HINT)


def _resume_point(path: Path, restored: dict) -> ResumePoint:
    try:
        return ResumePoint(step=int(restored["step"]), smoothed=SmoothedValue.from_state(restored["smoothed"]),
                           rng=restored.get("rng"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"has a malformed step or running average ({_first_line(exc)})", path=path,
                              hint=_CORRUPT_HINT) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def trained_tensors(model, method) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates, by name: what resume.ckpt keeps and the save guard checks."""
    core = fabric_unwrap(model)
    in_optimizer = {id(p) for p in method.optimizer_parameters(core)}
    return {name: p.detach() for name, p in core.named_parameters() if id(p) in in_optimizer}


def save_resume(fabric, path: Path, model, optimizer, method, step: int, smoothed: SmoothedValue) -> None:
    """Only what the base checkpoint cannot give back: trainable weights, optimizer, counters.

    Rank 0 streams it to a temporary file in checkpoints/ itself and renames it (atomic_torch_save:
    a crash or a full disk keeps the previous one, and neither $TMPDIR nor an in-memory copy is
    used, as Lightning's fabric.save does). DeepSpeed shards collectively through fabric.save."""
    counters = {"step": step, "smoothed": smoothed.state_dict(), "rng": _rng_state()}
    if _is_sharded(fabric):
        _save_sharded(fabric, path, {"model": model, "optimizer": optimizer, **counters},
                      trainable=set(trained_tensors(model, method)))
    elif fabric.is_global_zero:
        atomic_torch_save({"model": trained_tensors(model, method), "optimizer": optimizer.state_dict(),
                           **counters}, path)
    fabric.barrier()


def _is_sharded(fabric) -> bool:
    from lightning.fabric.strategies import DeepSpeedStrategy

    return isinstance(fabric.strategy, DeepSpeedStrategy)


def _save_sharded(fabric, path: Path, state: dict, trainable: set[str]) -> None:
    """DeepSpeed writes a folder, collectively: into `<path>.tmp` beside it, then swapped in."""
    tmp = path.with_name(path.name + TEMP_SUFFIX)
    fabric.save(tmp, state, filter={"model": lambda name, _: name in trainable})
    if fabric.is_global_zero:
        _replace(tmp, path)


def last_good_resume(path: Path) -> int | None:
    """The step of `path` (resume.ckpt) if its saved loss and trained weights are finite and sane,
    else None: where a run that diverged can be resumed from."""
    from rwkv_tui.trainer.training.outputs import weight_health

    try:
        restored = read_resume_file(path)
        loss = restored["smoothed"].get("value")
        healthy = weight_health(restored["model"]).sane and (loss is None or math.isfinite(float(loss)))
        return int(restored["step"]) if healthy else None
    except (RwkvTuiError, AttributeError, TypeError, ValueError):
        return None


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
