"""Ai00 export: safetensors (`.st`) the way Ai00 and web-rwkv load models and states.

The rules are those of Ai00's own converter (`assets/scripts/convert_safetensors.py`, the
same in web-rwkv), so a file from us and one from it are interchangeable:

- every floating tensor in fp16 (web-rwkv reads nothing else);
- `time_faaaa` is named `time_first` and `time_maa*` is named `time_mix*`: web-rwkv tells
  RWKV-6 from RWKV-5 only by `time_mix_x/w/…` and reads RWKV-5/6's head count from
  `time_first`;
- the last two dims are swapped in every tensor whose (renamed) name contains one of
  `AI00_TRANSPOSED`: web-rwkv reads RWKV-7's low-rank widths from `shape(w1)[0]` and
  RWKV-6's from `shape(time_mix_w1)[0] / 5`, and keeps a state key-major.

A state file goes through the same rules (its `time_state` tensors are transposed).
Tensors are converted and written one at a time, so a 14B export needs no second copy in RAM.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_tui.trainer.adapters import is_adapter_file, is_state_file
from rwkv_tui.trainer.atomic import atomic_output, disk_full_message, disk_space
from rwkv_tui.trainer.checkpoint import infer_spec, load_state_dict
from rwkv_tui.trainer.errors import CheckpointError

AI00_RENAMES = (("time_faaaa", "time_first"), ("time_maa", "time_mix"))
AI00_TRANSPOSED = ("time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
                   "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state")
FP16_MAX = 65504.0
_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64",
                       torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def ai00_name(key: str) -> str:
    for old, new in AI00_RENAMES:
        key = key.replace(old, new)
    return key


def is_transposed_for_ai00(name: str) -> bool:
    """Whether Ai00 stores this tensor (by its Ai00 name) with its last two dims swapped."""
    return any(part in name for part in AI00_TRANSPOSED)


@dataclass(frozen=True)
class PendingTensor:
    """A tensor known by its shape and dtype before it is made (a file header needs them first)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]


def ai00_pending(key: str, tensor: torch.Tensor) -> tuple[str, PendingTensor]:
    """(Ai00 name, the fp16 and maybe transposed tensor, made on demand)."""
    name = ai00_name(key)
    transposed = is_transposed_for_ai00(name) and tensor.dim() >= 2
    dtype = torch.float16 if tensor.is_floating_point() else tensor.dtype
    shape = (*tensor.shape[:-2], tensor.shape[-1], tensor.shape[-2]) if transposed else tuple(tensor.shape)

    def make() -> torch.Tensor:
        converted = tensor.to(dtype)
        return (converted.transpose(-1, -2) if transposed else converted).contiguous()

    return name, PendingTensor(shape, dtype, make)


def ai00_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor under its Ai00 name and layout, in fp16 (all at once: for small files and tests)."""
    return {name: pending.make() for name, pending in (ai00_pending(k, v) for k, v in tensors.items())}


def export_ai00(source: str | Path, out: str | Path) -> Path:
    """Convert a model (RWKV-7/6/5) or a state `.pth` into the `.st` file Ai00 loads."""
    tensors = load_state_dict(source)
    _refuse_adapter(tensors, source)
    kind = "state" if is_state_file(tensors) else "model"
    if kind == "model":
        infer_spec(tensors, source)  # a clear error for anything that is not a whole supported model
    pending = dict(ai00_pending(k, v) for k, v in tensors.items())
    write_safetensors(out, pending, {"format": "pt", "rwkv_tui_kind": kind}, source=source)
    return Path(out)


def _refuse_adapter(tensors: Mapping[str, torch.Tensor], source) -> None:
    if is_adapter_file(tensors):
        raise CheckpointError("this is an adapter, which Ai00 does not load", path=source,
                              hint="merge it first: rwkv-tui merge BASE.pth ADAPTER merged.pth")


def write_safetensors(out: str | Path, tensors: Mapping[str, PendingTensor], metadata: dict[str, str],
                      source=None) -> None:
    """A safetensors file written atomically, tensor by tensor, after a free-space check."""
    header, data_bytes = _safetensors_header(tensors, metadata)
    needed = 8 + len(header) + data_bytes
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if (space := disk_space(out.parent)).free_bytes < needed:
        raise CheckpointError(disk_full_message(out, needed, space),
                              hint="free space there or write the export to a bigger disk")
    with atomic_output(out) as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for name, pending in tensors.items():
            handle.write(_fp16_safe(pending.make(), name, source).reshape(-1).view(torch.uint8).numpy())


def _safetensors_header(tensors: Mapping[str, PendingTensor], metadata: dict[str, str]) -> tuple[bytes, int]:
    entries, offset = {}, 0
    for name, pending in tensors.items():
        size = pending.dtype.itemsize * int(torch.Size(pending.shape).numel())
        entries[name] = {"dtype": _SAFETENSORS_DTYPES[pending.dtype], "shape": list(pending.shape),
                         "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode("utf-8")
    return encoded + b" " * (-len(encoded) % 8), offset  # the data starts 8-byte aligned


def _fp16_safe(tensor: torch.Tensor, name: str, source) -> torch.Tensor:
    """Refuse a tensor that fp16 cannot hold (inf after the cast): Ai00 would compute NaN from it."""
    if tensor.dtype == torch.float16 and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{name} has values beyond fp16's range (±{FP16_MAX:g}) or not finite, and Ai00 "
                              "computes in fp16", path=source,
                              hint="this model's weights diverged; export an earlier checkpoint")
    return tensor
