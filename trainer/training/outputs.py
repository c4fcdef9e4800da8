"""What a run leaves behind, in the formats the RWKV ecosystem loads.

    checkpoints/<tag>-model.pth    full fine-tune / LISA: the whole model, official names and dtype
    checkpoints/<tag>-<method>.pth LoRA, PiSSA, MiSS: the adapter only (small; carries its metadata)
    checkpoints/<tag>-state.pth    state tuning: {blocks.i.att.time_state: [H,N,N]} for RWKV Runner
    checkpoints/final-merged.pth   adapter methods, at the end: base + adapter merged, ready to chat with

All files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

_SAVE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_WHOLE_MODEL_METHODS = ("full", "lisa")


def save_method_output(model, method, spec, config, directory: Path, tag: str) -> list[Path]:
    from trainer.adapters import save_adapter, save_state_file
    from trainer.checkpoint import save_state_dict

    model = getattr(model, "module", model)  # unwrap Fabric / DeepSpeed
    name = config.method.name
    dtype = _SAVE_DTYPES[config.output.save_dtype]
    if name in _WHOLE_MODEL_METHODS:
        return [save_state_dict(model.state_dict(), directory / f"{tag}-model.pth", dtype=dtype)]
    if name == "state":
        return [save_state_file(model, directory / f"{tag}-state.pth")]
    path = save_adapter(model, method, directory / f"{tag}-{name}.pth", spec)
    paths = [path]
    if tag == "final":
        paths.append(merge_adapter_file(config.model.path, path, directory / "final-merged.pth", dtype))
    return paths


def merge_adapter_file(base_path, adapter_path, out_path: Path, dtype: torch.dtype) -> Path:
    from trainer.adapters import merge_files

    return merge_files(base_path, adapter_path, out_path, dtype=dtype)
