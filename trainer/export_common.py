"""What every export target shares: reading the source (a model, optionally with an adapter
merged in memory), refusing outputs that exist or do not fit on disk, and atomic output.

An export never leaves a partial output that looks valid: files are written under a
temporary name (`.NAME.*.tmp`) in the destination folder and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_tui.trainer.atomic import TEMP_SUFFIX, current_umask, disk_space, fsync_directory, fsync_file, megabytes
from rwkv_tui.trainer.checkpoint import infer_spec, load_state_dict
from rwkv_tui.trainer.errors import CheckpointError, ConfigError
from rwkv_tui.trainer.spec import ModelSpec

Progress = Callable[[int, int], None]
"""Called as `progress(done, total)` while tensors are converted (the CLI prints `tensor i/N`)."""


def no_progress(done: int, total: int) -> None:
    return None


# A little room on top of the tensors' bytes: headers, the tokenizer files, the GGUF vocabulary.
SPACE_MARGIN_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ExportSource:
    """A full model's tensors under the official key names, ready to be converted."""

    tensors: dict[str, torch.Tensor]
    spec: ModelSpec
    path: Path
    merged_adapter: Path | None = None


def load_export_source(source: str | Path, adapter: str | Path | None = None,
                       alpha: float | None = None) -> ExportSource:
    """The model at `source`, with `adapter` merged in memory (in fp32) when given."""
    source = Path(source)
    tensors = load_state_dict(source)
    _refuse_adapter_as_model(tensors, source)
    spec = infer_spec(tensors, source)
    if adapter is None:
        return ExportSource(tensors=tensors, spec=spec, path=source)
    merged = merge_adapter_in_memory(tensors, spec, Path(adapter), alpha)
    return ExportSource(tensors=merged, spec=spec, path=source, merged_adapter=Path(adapter))


def _refuse_adapter_as_model(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from rwkv_tui.trainer.adapters import is_adapter_file, is_state_file

    if is_adapter_file(tensors) or is_state_file(tensors):
        raise CheckpointError("this is an adapter or state file, not a model", path=path,
                              hint="give the base model first and the file with --adapter: "
                                   "rwkv-tui export BASE.pth --adapter ADAPTER ...")


def merge_adapter_in_memory(base: dict[str, torch.Tensor], spec: ModelSpec, adapter: Path,
                            alpha: float | None) -> dict[str, torch.Tensor]:
    """base + adapter computed in fp32 from the base, so a bf16 base loses none of the update;
    the exporter casts once to its output type."""
    from rwkv_tui.trainer.adapters import detect_method, load_adapter_file, merge_into

    tensors, metadata = load_adapter_file(adapter)
    method = (metadata or {}).get("method") or detect_method(tensors, adapter)
    if method == "state" and spec.version == "x070":
        raise CheckpointError(
            "an RWKV-7 (x070) state cannot be merged into a model: the rwkv package, RWKV Runner and "
            "llama.cpp never read blocks.N.att.time_state, so the output would be the base model",
            path=adapter,
            hint="use the state file itself: load it next to the base model in RWKV Runner, or convert "
                 "it with `rwkv-tui export STATE.pth --ai00 STATE.st` for Ai00")
    fp32_base = {k: v.float() if v.is_floating_point() else v for k, v in base.items()}
    return merge_into(fp32_base, tensors, metadata, alpha=alpha, path=adapter)


def require_rwkv7(spec: ModelSpec, path: Path, target: str) -> None:
    if spec.version != "x070":
        raise CheckpointError(
            f"{target} export supports RWKV-7 (x070) models; this is {spec.display_name}", path=path,
            hint="RWKV-6/5 models can be exported for Ai00 with --ai00")


def cast_floating(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def ensure_output_free(out: Path, force: bool, folder: bool = False) -> None:
    """Refuse to replace an existing output unless asked to (`--force`), and never replace a
    file with a folder or a folder with a file."""
    if not out.exists():
        return
    if not force:
        raise CheckpointError("output exists", path=out, hint="choose another name or pass --force")
    if out.is_dir() != folder:
        kind = "a folder" if out.is_dir() else "a file"
        raise CheckpointError(f"output exists and is {kind}", path=out,
                              hint="choose another name; --force replaces only the same kind of output")


def ensure_free_space(out: Path, needed_bytes: int) -> None:
    """Refuse before writing anything when the destination's disk cannot hold the output."""
    space = disk_space(out.parent)
    needed = needed_bytes + SPACE_MARGIN_BYTES
    if space.free_bytes < needed:
        raise CheckpointError(
            f"not enough disk space: about {megabytes(needed)} MB needed, {megabytes(space.free_bytes)} MB "
            f"free on {space.mount}", path=out,
            hint="free some space or write the export to another disk")


def tensor_bytes(tensors: dict[str, torch.Tensor], bytes_per_element: float) -> int:
    return int(sum(t.numel() for t in tensors.values()) * bytes_per_element)


def parse_outtype(outtype: str, allowed: dict, target: str):
    try:
        return allowed[outtype]
    except KeyError:
        raise ConfigError(f"unknown --outtype {outtype!r} for {target} export", field="--outtype",
                          hint=f"choose one of: {', '.join(allowed)}") from None


@contextlib.contextmanager
def atomic_output_dir(out: Path, force: bool) -> Iterator[Path]:
    """A temporary folder next to `out`; it becomes `out` only when the block succeeds. With
    `force`, an existing `out` is replaced (moved aside first, removed after the rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would make the export private
    try:
        yield tmp
        for file in tmp.iterdir():
            fsync_file(file)
        _replace_dir(tmp, out, force)
        fsync_directory(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    ensure_output_free(out, force, folder=True)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", suffix=TEMP_SUFFIX, dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
