"""Adapter and state files: writing ours, reading ours and RWKV-PEFT's, merging into a base.

Our adapter file is a flat `torch.save` dict of tensors under RWKV-PEFT's key names
(`blocks.{i}.att.key.lora_A` [r, in], `.lora_B` [out, r], `.disha` [r, out],
`.pissa_init_A/_B`, full copies of trained norms) plus one entry `rwkv_tui.metadata`:
a uint8 tensor holding UTF-8 JSON (format, method, r, alpha, targets, base model spec).
Everything is a tensor, so `torch.load(weights_only=True)` reads it, and a merge never
needs settings retyped. RWKV-PEFT's files have no metadata: the method is recognised from
the key names and LoRA's alpha must be given.

State files (`{blocks.{i}.att.time_state: [H, N, N]}`, value-major) are what RWKV Runner
mounts and equal the `rwkv` package's `state[3*i+1]` for RWKV-7.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rwkv_tui.trainer.checkpoint import atomic_torch_save, load_checkpoint, load_state_dict, save_state_dict
from rwkv_tui.trainer.errors import CheckpointError

METADATA_KEY = "rwkv_tui.metadata"
FORMAT_VERSION = 1


def encode_metadata(metadata: dict[str, Any]) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(metadata).encode("utf-8")), dtype=torch.uint8).clone()


def decode_metadata(tensor: torch.Tensor) -> dict[str, Any]:
    return json.loads(bytes(tensor.tolist()).decode("utf-8"))


def save_adapter(model, method, path: str | Path, spec, dtype: torch.dtype | None = None) -> Path:
    """The method's trained tensors + metadata, atomically."""
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).cpu().contiguous()
               for k, v in method.adapter_state_dict(model).items()}
    metadata = {"format": "rwkv-tui-adapter", "format_version": FORMAT_VERSION, **method.metadata(),
                "base_spec": spec.to_dict()}
    atomic_torch_save({**tensors, METADATA_KEY: encode_metadata(metadata)}, path)
    return Path(path)


def save_state_file(model, path: str | Path) -> Path:
    """`{blocks.{i}.att.time_state: [H, N, N]}` in fp32, the file RWKV Runner mounts."""
    from rwkv_tui.trainer.peft.base import unwrap

    blocks = unwrap(model).blocks
    states = {f"blocks.{i}.att.time_state": b.att.time_state.detach().float().cpu().contiguous()
              for i, b in enumerate(blocks) if b.att.time_state is not None}
    if not states:
        raise CheckpointError("the model has no tuned state to save", hint="state files come from state tuning")
    atomic_torch_save(states, path)
    return Path(path)


def load_adapter_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(tensors, metadata or None for files from other tools); a `model.` prefix is stripped."""
    raw = load_state_dict(path)
    metadata = decode_metadata(raw.pop(METADATA_KEY)) if METADATA_KEY in raw else None
    tensors = {k.removeprefix("model."): v for k, v in raw.items()}
    return tensors, metadata


def is_state_file(tensors) -> bool:
    """Only `blocks.N.att.time_state` tensors: a state-tuning output, not a model or adapter."""
    return bool(tensors) and all(k.endswith(_STATE_SUFFIX) for k in tensors)


def is_adapter_file(tensors) -> bool:
    """Our metadata or low-rank tensors (lora_A, MiSS's disha): an adapter, not a model."""
    return METADATA_KEY in tensors or any(k.endswith((".lora_A", ".disha")) for k in tensors)


def detect_method(tensors: dict[str, torch.Tensor], path=None) -> str:
    keys = tensors.keys()
    if any(k.endswith(".pissa_init_A") for k in keys):
        return "pissa"
    if any(k.endswith(".lora_A") for k in keys):
        return "lora"
    if any(k.endswith(".disha") for k in keys):
        return "miss"
    if is_state_file(tensors):
        return "state"
    raise CheckpointError("not an adapter or state file: no lora_A, disha or time_state tensors found",
                          path=path, hint="give the adapter .pth a run wrote (checkpoints/*-lora.pth, …)")


def merge_into(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
               metadata: dict[str, Any] | None, alpha: float | None = None, path=None) -> dict[str, torch.Tensor]:
    """A full state dict: base + adapter (alpha overrides or supplies the LoRA scaling). Every key
    of the base is kept; the tensors the adapter changes come back in fp32, so the caller casts
    them once to the output dtype (a bf16 round of W + BA would lose part of a small update)."""
    from rwkv_tui.trainer.peft.registry import method_class

    metadata = dict(metadata or {})
    if not tensors:
        raise CheckpointError("the adapter file holds no tensors", path=path,
                              hint="give the adapter .pth a run wrote (checkpoints/*-lora.pth, …)")
    method_name = metadata.get("method") or detect_method(tensors, path)
    if alpha is not None:
        metadata["alpha"] = alpha
    _ensure_shapes_fit(base, tensors, method_name, path)
    try:
        return method_class(method_name).merge(base, tensors, metadata)
    except CheckpointError as exc:  # a merge's refusal is about this file
        exc.path = exc.path or (str(path) if path is not None else None)
        raise


# Low-rank tensors: (which of its dimensions, must equal which dimension of the base's weight).
# lora_A and pissa_init_A are [r, in], lora_B and pissa_init_B [out, r], MiSS's disha [r, out].
_LOW_RANK_DIMENSIONS = {".lora_A": (1, 1), ".pissa_init_A": (1, 1), ".lora_B": (0, 0), ".pissa_init_B": (0, 0),
                        ".disha": (1, 0)}
_STATE_SUFFIX = ".att.time_state"


def _ensure_shapes_fit(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], method_name: str,
                       path) -> None:
    """Refuse, saying what differs, a file whose tensors do not fit the base (one from a
    different-size model would otherwise merge into a broken model)."""
    from rwkv_tui.trainer.checkpoint import infer_spec

    spec = infer_spec(base)
    differences = [d for key, tensor in tensors.items() if (d := _shape_difference(key, tensor, base, spec))]
    if differences:
        what = "state file" if method_name == "state" else f"{method_name} adapter"
        more = f" (and {len(differences) - 1} more tensor(s))" if len(differences) > 1 else ""
        raise CheckpointError(f"the {what} does not fit the base model {spec.display_name}: {differences[0]}{more}",
                              path=path, hint="merge into the base model it was trained on")


def _shape_difference(key: str, tensor: torch.Tensor, base: dict[str, torch.Tensor], spec) -> str | None:
    """What is wrong with one tensor of the file against the base, or None when it fits."""
    if key.endswith(_STATE_SUFFIX):
        return _state_difference(key, tensor, spec)
    suffix = next((s for s in _LOW_RANK_DIMENSIONS if key.endswith(s)), None)
    if suffix is None:  # a full copy (norms, time-mix vectors, LISA/full weights)
        if key not in base:
            return f"{key} is not a tensor of the base model"
        return None if tensor.shape == base[key].shape else \
            f"{key} is {_dims(tensor.shape)}, the base's is {_dims(base[key].shape)}"
    weight_key = key[: -len(suffix)] + ".weight"
    weight = base.get(weight_key)
    if weight is None:
        return f"{key} adapts {weight_key}, which the base model does not have"
    own, of_weight = _LOW_RANK_DIMENSIONS[suffix]
    if tensor.dim() != 2 or tensor.shape[own] != weight.shape[of_weight]:
        return f"{key} is {_dims(tensor.shape)}, which does not fit {weight_key} of {_dims(weight.shape)}"
    if suffix == ".disha" and weight.shape[1] % tensor.shape[0]:
        return f"{key}'s block size {tensor.shape[0]} does not divide {weight_key}'s width {weight.shape[1]}"
    return None


def _state_difference(key: str, tensor: torch.Tensor, spec) -> str | None:
    layer = key.split(".")[1] if key.startswith("blocks.") else ""
    if not layer.isdigit() or int(layer) >= spec.n_layer:
        return f"{key} names a layer the base model (L{spec.n_layer}) does not have"
    expected = (spec.n_head, spec.head_size, spec.head_size)
    if tuple(tensor.shape) != expected:
        return f"{key} is {_dims(tensor.shape)}, the base needs {_dims(expected)} (heads × head size × head size)"
    return None


def _dims(shape) -> str:
    return " × ".join(str(n) for n in shape)


def merge_files(base_path, adapter_path, out_path, dtype: torch.dtype | None = None,
                alpha: float | None = None) -> Path:
    """BASE + ADAPTER as one official `.pth`: merged in fp32, cast once to `dtype` (None: the
    base's own dtype, `base_dtype`), every key of the base kept."""
    base, spec = load_checkpoint(base_path)
    tensors, metadata = load_adapter_file(adapter_path)
    if metadata and "base_spec" in metadata:
        trained_on = metadata["base_spec"]
        if (trained_on["n_layer"], trained_on["n_embd"]) != (spec.n_layer, spec.n_embd):
            raise CheckpointError(
                f"the adapter was trained on a L{trained_on['n_layer']} C{trained_on['n_embd']} model, "
                f"this base is L{spec.n_layer} C{spec.n_embd}", path=adapter_path,
                hint="merge into the base model the adapter was trained on")
    merged = merge_into(base, tensors, metadata, alpha=alpha, path=adapter_path)
    return save_state_dict(merged, out_path, dtype=dtype or base_dtype(spec))


def base_dtype(spec) -> torch.dtype:
    """The dtype most of a base model's weights are in (bf16 for every official release)."""
    dtype = getattr(torch, spec.dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.bfloat16


def mount_state(weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                path=None) -> dict[str, torch.Tensor]:
    """The model's weights with a state file's `time_state` tensors added, for our own model
    (which starts every sequence from them), e.g. the chat; refuses a file without any."""
    states = {k: v for k, v in tensors.items() if k.endswith(_STATE_SUFFIX)}
    if not states:
        raise CheckpointError("not a state file: it has no blocks.N.att.time_state tensors", path=path,
                              hint="give the -state.pth file a state-tuning run wrote; adapters go with --adapter")
    _ensure_shapes_fit(weights, states, "state", path)
    return {**weights, **states}
