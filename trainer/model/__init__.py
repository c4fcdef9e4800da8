"""RWKV models for training: build from a spec, load from an official checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tui.trainer.checkpoint import load_checkpoint
from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.model.lm import RWKV, LayerState
from rwkv_tui.trainer.spec import ModelSpec

__all__ = ["RWKV", "LayerState", "build_model", "load_model", "model_from_state_dict"]

# Official files may carry block 0's value-residual tensors although layer 0 never uses them.
_UNUSED_KEYS = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def build_model(spec: ModelSpec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> RWKV:
    """An uninitialised model of this architecture (fill it with `load_state_dict`)."""
    return RWKV(spec).to(device=device, dtype=dtype)


def model_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
) -> RWKV:
    """Build the model on the meta device and adopt the tensors: no second full copy in RAM."""
    with torch.device("meta"):
        model = RWKV(spec)
    weights = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items() if k not in _UNUSED_KEYS}
    expected = set(model.state_dict().keys())
    unexpected = sorted(set(weights) - expected - {k for k in weights if k.endswith(".att.time_state")})
    if unexpected:
        raise CheckpointError(
            f"unexpected tensors for a plain {spec.display_name.split()[0]} model: {', '.join(unexpected[:6])}",
            path=path, hint="this model variant (e.g. DeepEmbed) is not supported yet")
    for key in [k for k in weights if k.endswith(".att.time_state")]:
        block = int(key.split(".")[1])
        model.blocks[block].att.time_state = torch.nn.Parameter(torch.empty_like(weights[key], device="meta"))
    model.load_state_dict(weights, strict=True, assign=True)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> RWKV:
    """Load an official checkpoint into a trainable model; `model.spec` tells what it is."""
    state_dict, spec = load_checkpoint(path)
    return model_from_state_dict(state_dict, spec, device=device, dtype=dtype, path=path)
