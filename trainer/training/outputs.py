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
from rwkv_tui.trainer.peft.catalog import MERGED_FILE, method_info


def save_method_output(model, method, spec, config, directory: Path, tag: str) -> list[Path]:
    """The method's checkpoint file, `<tag><its output suffix>` in `directory`."""
    model = getattr(model, "module", model)  # unwrap Fabric / DeepSpeed
    dtype = getattr(torch, DTYPE_NAMES[config.output.save_dtype])
    return [method.save_output(model, spec, directory / method.info.output_file(tag), dtype)]


def finish_outputs(config, last_outputs: list[Path], directory: Path) -> list[Path]:
    """After a finished run of an adapter method: the merged model, ready to load anywhere."""
    from rwkv_tui.trainer.adapters import merge_files

    if not method_info(config.method.name).produces_merged_model or not last_outputs:
        return []
    merged = merge_files(config.model.path, last_outputs[-1], directory / MERGED_FILE,
                         dtype=getattr(torch, DTYPE_NAMES[config.output.save_dtype]))
    return [merged]
