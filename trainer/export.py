"""Ai00 export: safetensors (`.st`) in fp16, as Ai00 (web-rwkv) loads models and states.

A model keeps its official key names with every floating tensor in fp16. A state file
keeps `blocks.{i}.att.time_state` with the last two dims transposed (Ai00 stores the
state key-major, DESIGN.md §2).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tui.trainer.atomic import atomic_write_bytes
from rwkv_tui.trainer.checkpoint import load_state_dict
from rwkv_tui.trainer.errors import CheckpointError


def ai00_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    is_state = bool(tensors) and all(k.endswith(".att.time_state") for k in tensors)
    out = {}
    for key, tensor in tensors.items():
        if is_state:
            tensor = tensor.transpose(-1, -2)
        out[key] = (tensor.to(torch.float16) if tensor.is_floating_point() else tensor).contiguous()
    return out


def export_ai00(source: str | Path, out: str | Path) -> Path:
    from safetensors.torch import save

    from rwkv_tui.trainer.adapters import METADATA_KEY

    tensors = load_state_dict(source)
    if METADATA_KEY in tensors or any(k.endswith((".lora_A", ".disha")) for k in tensors):
        raise CheckpointError("this is an adapter, which Ai00 does not load", path=source,
                              hint="merge it first: rwkv-tui merge BASE.pth ADAPTER merged.pth")
    kind = "state" if all(k.endswith(".att.time_state") for k in tensors) else "model"
    atomic_write_bytes(out, save(ai00_tensors(tensors), metadata={"format": "pt", "rwkv_tui_kind": kind}))
    return Path(out)
