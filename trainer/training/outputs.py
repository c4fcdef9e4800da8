"""What a run leaves behind, in the formats the RWKV ecosystem loads.

    checkpoints/<tag>-model.pth    full fine-tune / LISA: the whole model, official names and dtype
    checkpoints/<tag>-<method>.pth LoRA, PiSSA, MiSS: the adapter only (small; carries its metadata)
    checkpoints/<tag>-state.pth    state tuning: {blocks.i.att.time_state: [H,N,N]} for RWKV Runner
    checkpoints/final-merged.pth   adapter methods, when the run finishes: base + adapter merged

All files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tui.trainer.config import DTYPE_NAMES

_WHOLE_MODEL_METHODS = ("full", "lisa")


def save_method_output(model, method, spec, config, directory: Path, tag: str) -> list[Path]:
    from rwkv_tui.trainer.adapters import save_adapter, save_state_file
    from rwkv_tui.trainer.checkpoint import save_state_dict

    model = getattr(model, "module", model)  # unwrap Fabric / DeepSpeed
    name = config.method.name
    dtype = getattr(torch, DTYPE_NAMES[config.output.save_dtype])
    if name in _WHOLE_MODEL_METHODS:
        return [save_state_dict(model.state_dict(), directory / f"{tag}-model.pth", dtype=dtype)]
    if name == "state":
        return [save_state_file(model, directory / f"{tag}-state.pth")]
    return [save_adapter(model, method, directory / f"{tag}-{name}.pth", spec)]


def finish_outputs(config, last_outputs: list[Path], directory: Path) -> list[Path]:
    """After a finished run of an adapter method: the merged model, ready to load anywhere."""
    from rwkv_tui.trainer.adapters import merge_files

    if config.method.name in (*_WHOLE_MODEL_METHODS, "state") or not last_outputs:
        return []
    merged = merge_files(config.model.path, last_outputs[-1], directory / "final-merged.pth",
                         dtype=getattr(torch, DTYPE_NAMES[config.output.save_dtype]))
    return [merged]
