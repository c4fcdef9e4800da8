"""What a run leaves behind, in the formats the RWKV ecosystem loads.

    checkpoints/<tag>-model.pth    full fine-tune / LISA: the whole model, official names and dtype
    checkpoints/<tag>-<method>.pth LoRA, PiSSA, MiSS: the adapter only (small; carries its metadata)
    checkpoints/<tag>-state.pth    state tuning: {blocks.i.att.time_state: [H,N,N]} for RWKV Runner
    checkpoints/final-merged.pth   adapter methods, when the run finishes: base + adapter merged

All files are written atomically, and only from sane weights (`weight_health`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_tui.trainer.config import DTYPE_NAMES
from rwkv_tui.trainer.peft.catalog import MERGED_FILE, method_info


def save_method_output(model, method, spec, config, directory: Path, tag: str) -> list[Path]:
    """The method's checkpoint file, `<tag><its output suffix>` in `directory`."""
    model = getattr(model, "module", model)  # unwrap Fabric / DeepSpeed
    dtype = getattr(torch, DTYPE_NAMES[config.output.save_dtype])
    path = directory / method.info.output_file(tag)
    return [method.save_output(model, spec, path, dtype, base_path=config.model.path)]


# The tags of checkpoints that `output.keep_last` may delete: per epoch and per step (save_every_steps, a stop).
_NUMBERED_TAG = re.compile(r"(epoch|step)(\d+)")


def numbered_checkpoints(directory: Path, info, epochs) -> list[tuple[int, Path]]:
    """The method's `epoch<N>`/`step<N>` files in `directory` with the step each was saved at,
    oldest first; never best-, final- or merged files, nor resume.ckpt (their names do not match).
    `info` is the method's MethodInfo, `epochs` the config's EpochConfig (epoch N ends at step
    (N - epoch_begin) * epoch_steps)."""
    found = []
    for path in directory.glob(f"*{info.output_suffix}"):
        match = _NUMBERED_TAG.fullmatch(path.name.removesuffix(info.output_suffix))
        if match is None or not path.is_file():
            continue
        kind, number = match.group(1), int(match.group(2))
        step = (number - epochs.epoch_begin) * epochs.epoch_steps if kind == "epoch" else number
        found.append((step, path))
    return sorted(found, key=lambda item: (item[0], item[1].name))


def drop_old_checkpoints(directory: Path, info, epochs, keep_last: int) -> list[Path]:
    """output.keep_last: delete all but the `keep_last` newest epoch/step files; the paths deleted."""
    if keep_last <= 0:
        return []
    old = [path for _, path in numbered_checkpoints(directory, info, epochs)[:-keep_last]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def finish_outputs(config, last_outputs: list[Path], directory: Path, log=None) -> list[Path]:
    """After a finished run of an adapter method: the merged model, ready to load anywhere, in
    the base model's dtype (merged in fp32, cast once); `log` (the run log) is told which dtype."""
    from rwkv_tui.trainer.adapters import base_dtype, merge_files
    from rwkv_tui.trainer.checkpoint import inspect_checkpoint

    if not method_info(config.method.name).produces_merged_model or not last_outputs:
        return []
    dtype = base_dtype(inspect_checkpoint(config.model.path))
    merged = merge_files(config.model.path, last_outputs[-1], directory / MERGED_FILE, dtype=dtype)
    if log is not None:
        log.emit("info", message=merged_message(merged, dtype))
    return [merged]


def merged_message(path: Path, dtype: torch.dtype) -> str:
    return f"merged the adapter into {path.name} in {str(dtype).removeprefix('torch.')} (the base model's dtype)"


# A trained tensor with any |value| above this is a diverged run, not a trained one, and is never saved.
# Official RWKV-4…7 weights stay within ±100 and adapters or states trained at a sane lr within a few
# units, so 1e4 leaves a wide margin; yet one weight of 1e4 times an activation of 7 already overflows
# fp16 (65504), and the lr=1e6 run saved an adapter with |w| = 1e6 whose merged model gave NaN
# logits although every value in it was finite.
MAX_SANE_WEIGHT = 1e4


@dataclass(frozen=True)
class WeightHealth:
    largest: float       # max |value| over the trained tensors (nan/inf when one holds them)
    tensor: str          # where it is
    limit: float = MAX_SANE_WEIGHT

    @property
    def sane(self) -> bool:
        return self.largest <= self.limit  # False for nan as well as for inf

    def describe(self) -> str:
        return f"|w| reaches {self.largest:.3g} in {self.tensor}, above the sane limit of {self.limit:g}"


def weight_health(tensors: Mapping[str, torch.Tensor]) -> WeightHealth:
    """The largest |value| of `tensors` and where it is: one reduction per tensor on its device and
    a single host sync (torch's max propagates nan, so non-finite values are caught too)."""
    names = [name for name, tensor in tensors.items() if tensor.numel()]
    device = tensors[names[0]].device if names else "cpu"
    peaks = torch.stack([tensors[n].detach().abs().max().float().to(device) for n in names]).cpu() \
        if names else torch.zeros(1)
    worst = int(torch.nan_to_num(peaks, nan=float("inf")).argmax())
    return WeightHealth(largest=float(peaks[worst]), tensor=names[worst] if names else "(none)")


def ensure_saveable(ctx) -> None:
    """Refuse to save diverged weights (non-finite, or past MAX_SANE_WEIGHT): the run ends instead,
    pointing at the last checkpoint that is still good, which the refused save leaves untouched."""
    from rwkv_tui.trainer.training.loop import TrainingError
    from rwkv_tui.trainer.training.resume import trained_tensors

    health = weight_health(trained_tensors(ctx.model, ctx.method))
    if health.sane:
        return
    raise TrainingError(f"the weights diverged by step {ctx.step} ({health.describe()}), so they were not saved; "
                        f"{last_good_checkpoint(ctx.folder.checkpoints, ctx.outputs, ctx.saved_at_step)}",
                        hint=lower_lr_advice(ctx.config.optim.lr_init))


def last_good_checkpoint(checkpoints: Path, outputs: list[Path], saved_at_step: int) -> str:
    """Which checkpoint to go back to, read from resume.ckpt itself (it may predate this process)."""
    from rwkv_tui.trainer.training.resume import RESUME_FILE, last_good_resume

    resume = checkpoints / RESUME_FILE
    step = last_good_resume(resume) if resume.is_file() else None
    if step is None:
        return "no checkpoint with finite, sane weights was saved before"
    files = [str(resume)] + ([str(outputs[-1])] if outputs and saved_at_step == step else [])
    return f"the last good checkpoint is step {step} ({' and '.join(files)})"


def lower_lr_advice(lr: float) -> str:
    return (f"lower optim.lr_init (it is {lr:g}; try {lr / 10:g}) and train again, from the last good "
            "checkpoint's file with method.init_from or from the start")

