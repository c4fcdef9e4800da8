"""Official RWKV `.pth` checkpoints: safe loading, architecture inference, atomic saving.

A checkpoint is a flat `{name: tensor}` dict as RWKV-LM and RWKV-PEFT write it. We load it
with `weights_only=True` (a pickle that carries code is refused) and `mmap=True` (a 14B
file does not have to fit in RAM twice), then read every architecture fact from the
tensor shapes: users never type `n_layer` or `n_embd`.
"""

from __future__ import annotations

import errno
import pickle
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from rwkv_tui.trainer.atomic import atomic_output, disk_full_message, disk_space
from rwkv_tui.trainer.errors import CheckpointError, UnsupportedModelError
from rwkv_tui.trainer.shapes import expected_shapes
from rwkv_tui.trainer.spec import ModelSpec

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO_MARK = 0x80  # legacy (pre-zip) torch.save files start with a pickle PROTO opcode
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")

VERSION_NAMES = {"x070": "RWKV-7", "x060": "RWKV-6", "x052": "RWKV-5"}
SUPPORTED_VERSIONS = ("x070", "x060", "x052")


# ---------------------------------------------------------------------------- loading


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its flat tensor dict.

    Raises `CheckpointError` with a specific message for a missing file, a file that is
    not a torch checkpoint, a truncated or corrupt archive and a pickle carrying code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            "file not found", path=path,
            hint="check the path; RWKV checkpoints are .pth files such as RWKV-x070-World-0.4B-….pth",
        )
    return _as_flat_tensor_dict(load_torch_file(path), path)


def load_torch_file(path: Path):
    """Whatever a torch.save file holds, loaded with weights_only=True (explicit, so the
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD variable cannot turn it off); every failure names the file."""
    if path.is_dir():
        raise CheckpointError("is a directory, not a checkpoint file", path=path,
                              hint="pick the .pth file inside it")
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        raise CheckpointError("file is empty", path=path,
                              hint="the download or copy did not finish; fetch the file again")
    if head.startswith(_ZIP_MAGIC):
        loaded = _torch_load(path, mmap=True)
    elif head[0] == _PICKLE_PROTO_MARK:
        loaded = _torch_load(path, mmap=False)  # old serialization: mmap is not possible
    else:
        raise CheckpointError("not a PyTorch checkpoint", path=path, hint=_format_hint(head))
    return loaded


def _torch_load(path: Path, *, mmap: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise CheckpointError(
                "refused: the file contains Python objects that would run code when loaded",
                path=path,
                hint="only plain tensor checkpoints are loaded; re-save the weights with "
                     "torch.save(model.state_dict(), path) from a trusted source",
            ) from None
        raise CheckpointError(f"cannot be unpickled ({text.splitlines()[0]})", path=path,
                              hint="the file is corrupt; fetch it again") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "central directory" in first_line or isinstance(exc, EOFError):
            message = "file is truncated (the archive ends early)"
        else:
            message = f"file is corrupt ({first_line[:160]})"
        raise CheckpointError(message, path=path,
                              hint="the download or copy did not finish or was damaged; fetch the file again "
                                   "and compare its size with the source") from None


def _format_hint(head: bytes) -> str:
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000:
        return ("this looks like a safetensors file (e.g. an Ai00 .st model); rwkv-tui trains from the "
                "official .pth release of the model")
    return "choose an official RWKV .pth checkpoint (a torch.save file)"


def _as_flat_tensor_dict(loaded, path: Path) -> dict[str, torch.Tensor]:
    # Lightning / DeepSpeed checkpoints nest the weights one level down.
    if isinstance(loaded, Mapping):
        for wrapper in ("state_dict", "module"):
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping) and len(loaded) <= 8:
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError("does not hold a dict of named tensors", path=path,
                              hint="choose a model checkpoint saved with torch.save(state_dict)")
    flat: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {key!r} is not a named tensor", path=path,
                                  hint="choose a model checkpoint saved with torch.save(state_dict)")
        flat[key] = value
    return flat


# ---------------------------------------------------------------------------- inference


def detect_version(keys) -> str:
    """The architecture tag from the key names alone (DESIGN.md §2)."""
    keys = set(keys)
    if "blocks.0.att.r_k" in keys or "blocks.0.att.x_r" in keys:
        return "x070"
    if any(k.startswith("blocks.0.att.time_maa") for k in keys):
        return "x060"
    if "blocks.0.att.time_faaaa" in keys or (
        "blocks.0.att.time_mix_k" in keys and "blocks.0.att.gate.weight" in keys
    ):
        return "x052"
    if "blocks.0.att.time_first" in keys:
        return "x040"
    raise CheckpointError(
        "not an RWKV checkpoint: none of the RWKV-7/6/5 tensor names were found "
        f"(first keys: {', '.join(sorted(keys)[:4])})",
        hint="choose an official RWKV .pth model file",
    )


def infer_spec(state_dict: Mapping[str, torch.Tensor], path: str | Path | None = None) -> ModelSpec:
    """Read the architecture of a checkpoint from its tensors and check every shape."""
    try:
        version = detect_version(state_dict.keys())
    except CheckpointError as exc:
        exc.path = str(path) if path is not None else None
        raise
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedModelError(
            "RWKV-4 (or older) checkpoints are not supported", path=path,
            hint="rwkv-tui trains RWKV-7 (x070), RWKV-6 (x060) and RWKV-5 (x052) models")
    sd = state_dict
    n_layer = 1 + max((int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))), default=0)
    # The tensors the widths are read from; every other name is checked against the spec.
    anchors = ["emb.weight", "blocks.0.ffn.key.weight", *_WIDTH_SOURCES[version]]
    if version == "x070" and n_layer > 1:
        anchors.append("blocks.1.att.v1")
    if missing := [k for k in anchors if k not in sd]:
        raise _missing_error(missing, path)

    vocab_size, n_embd = sd["emb.weight"].shape
    n_head, head_size = sd[_WIDTH_SOURCES[version][0]].shape
    widths = {}
    if version == "x070":
        widths = dict(d_decay=sd["blocks.0.att.w1"].shape[1], d_aaa=sd["blocks.0.att.a1"].shape[1],
                      # Block 0's v1 may be absent or a placeholder, so the width comes from block 1.
                      d_mv=sd["blocks.1.att.v1"].shape[1] if n_layer > 1 else 0,
                      d_gate=sd["blocks.0.att.g1"].shape[1])
    elif version == "x060":
        widths = dict(d_mix=sd["blocks.0.att.time_maa_w1"].shape[1] // 5,
                      d_decay=sd["blocks.0.att.time_decay_w1"].shape[1])
    spec = ModelSpec(
        version=version, n_layer=n_layer, n_embd=int(n_embd), n_head=int(n_head), head_size=int(head_size),
        vocab_size=int(vocab_size), dim_ffn=int(sd["blocks.0.ffn.key.weight"].shape[0]),
        **{k: int(v) for k, v in widths.items()},
        dtype=_majority_dtype(sd), n_params=sum(t.numel() for t in sd.values()),
    )
    if n_head * head_size != n_embd:
        raise CheckpointError(
            f"inconsistent shapes: {_WIDTH_SOURCES[version][0]} is [{n_head}, {head_size}] but n_embd is "
            f"{n_embd} ({n_head}×{head_size} ≠ {n_embd})",
            path=path, hint=f"the file is not a consistent {VERSION_NAMES[version]} model; re-download it")
    expected = expected_shapes(spec)
    if missing := [k for k in expected if k not in sd]:
        raise _missing_error(missing, path)
    wrong = [
        f"{key} is {list(sd[key].shape)}, expected {list(shape)}"
        for key, shape in expected.items()
        if tuple(sd[key].shape) != shape
    ]
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise CheckpointError(
            "inconsistent shapes: " + "; ".join(wrong[:5]) + more,
            path=path, hint="the file mixes tensors from different models or was edited; re-download it")
    return spec


# version -> the tensors the head layout (first) and low-rank widths are read from
_WIDTH_SOURCES = {
    "x070": ["blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1", "blocks.0.att.g1"],
    "x060": ["blocks.0.att.time_faaaa", "blocks.0.att.time_maa_w1", "blocks.0.att.time_decay_w1"],
    "x052": ["blocks.0.att.time_faaaa"],
}


def _missing_error(missing: list[str], path) -> CheckpointError:
    shown = ", ".join(missing[:8]) + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
    return CheckpointError(
        f"missing tensors: {shown}", path=path,
        hint="the file is incomplete or is an adapter/state file rather than a full model; "
             "choose the base model .pth (adapters are applied with `rwkv-tui merge`)")


def _majority_dtype(sd: Mapping[str, torch.Tensor]) -> str:
    counts: Counter[str] = Counter()
    for tensor in sd.values():
        counts[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()
    return counts.most_common(1)[0][0]


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """Load a checkpoint and infer its spec; every problem is a `CheckpointError`."""
    state_dict = load_state_dict(path)
    return state_dict, infer_spec(state_dict, path)


def inspect_checkpoint(path: str | Path) -> ModelSpec:
    """The spec of a checkpoint. Cheap on big files: tensors stay memory-mapped."""
    return load_checkpoint(path)[1]


# ---------------------------------------------------------------------------- saving


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Path:
    """Write tensors under their official names, atomically.

    Floating tensors are cast to `dtype` (bf16 like the official releases; None keeps
    each tensor's dtype). The file is written to a temporary name in the same folder,
    fsynced and renamed, so a crash never leaves a half-written model under `path`.
    """
    path = Path(path)
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous()
    atomic_torch_save(out, path)
    return path


def atomic_torch_save(obj, path: str | Path) -> None:
    """`torch.save` through a temp file beside `path` + fsync + rename (models, adapters, states,
    resume.ckpt), after checking the disk has room; a full disk is a `CheckpointError` and `path`
    keeps its previous content.

    It streams: torch pickles the structure, then writes the tensors' bytes one storage at a time
    straight into the file (a GPU storage is copied to the host one at a time), so the extra RAM is
    one storage plus the writer's buffers, never the whole checkpoint (bench/checkpoint_save.py)."""
    path = Path(path)
    needed = saved_bytes(obj)
    _ensure_free_space(path, needed)
    try:
        with atomic_output(path) as handle:
            torch.save(obj, handle)
    except OSError as exc:
        raise _write_error(path, needed, exc) from None
    except RuntimeError as exc:  # torch's own zip writer: a short write reads "unexpected pos"
        if "unexpected pos" not in str(exc) and "file write failed" not in str(exc):
            raise
        raise _write_error(path, needed, OSError(errno.ENOSPC, "short write")) from None


_SAVE_OVERHEAD = 1 << 20  # zip headers, 64-byte record alignment and the pickled structure


def saved_bytes(obj) -> int:
    """What `torch.save(obj)` writes, near enough: every distinct storage once, plus overhead."""
    storages: dict[int, int] = {}
    pending = [obj]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return sum(storages.values()) + _SAVE_OVERHEAD


def _ensure_free_space(path: Path, needed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    space = disk_space(path.parent)
    if space.free_bytes < needed:
        raise CheckpointError(disk_full_message(path, needed, space), hint=_DISK_FULL_HINT)


_DISK_FULL_HINT = ("free space there (old runs' checkpoints/ folders are the usual suspects) or set "
                   "output.proj_dir to a bigger disk, then resume the run")


def _write_error(path: Path, needed: int, exc: OSError) -> CheckpointError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CheckpointError(disk_full_message(path, needed, disk_space(path.parent)), hint=_DISK_FULL_HINT)
    return CheckpointError(f"cannot write {path}: {exc.strerror or exc}; the previous checkpoint is intact",
                           hint="check the folder's permissions and the disk's health")
