"""WKV7 in CUDA: our own forward and backward kernels (kernels/cuda/), built on first use.

The kernels (wkv7_kernels.cuh) give each (batch, head) one block of 4·N threads, four to a
state row (their sums meet through warp shuffles); the backward pass recomputes every 16-step
chunk from fp32 state checkpoints, so it is exact and needs no atomics.

The extension is compiled with torch.utils.cpp_extension and ninja into a cache directory keyed
by the sources and the torch/CUDA versions (RWKV_TUI_KERNEL_CACHE overrides where), so only the
first use on a machine pays the ~1 minute build.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

from rwkv_tui.kernels.availability import needs_cuda_and_float
from rwkv_tui.kernels.errors import KernelUnavailableError

log = logging.getLogger(__name__)
SOURCES = Path(__file__).resolve().parent / "cuda"
SUPPORTED_HEAD_SIZES = (16, 32, 64)


@functools.cache
def _toolchain_missing() -> str | None:
    """Why the extension cannot be built here, or None. Cheap enough for every `auto` call."""
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or shutil.which("nvcc", path=str(Path(CUDA_HOME) / "bin")) is None:
        return (f"no CUDA compiler (nvcc) found: install the CUDA toolkit {torch.version.cuda} "
                "and set CUDA_HOME, or use op='triton'")
    if importlib.util.find_spec("ninja") is None and shutil.which("ninja") is None:
        return "the ninja build tool is missing (pip install ninja)"
    return None


def cuda_availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the CUDA op can run on `device` with `dtype`; otherwise why not."""
    return needs_cuda_and_float("the CUDA kernel", device, dtype) or _toolchain_missing()


def _source_files() -> list[Path]:
    return [SOURCES / "wkv7_op.cpp", SOURCES / "wkv7.cu", SOURCES / "wkv7_kernels.cuh"]


def _source_digest() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in _source_files())).hexdigest()[:12]


def build_directory() -> Path:
    """Where the compiled extension lives: one folder per source and toolchain version."""
    root = os.environ.get("RWKV_TUI_KERNEL_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rwkv-tui" / "kernels")
    return Path(root) / f"wkv7-{_source_digest()}-torch{torch.__version__}-cuda{torch.version.cuda}"


@functools.cache
def load_extension():
    """Compile (first time) and import the extension; KernelUnavailableError with the build log's gist."""
    missing = _toolchain_missing()
    if missing:
        raise KernelUnavailableError(f"cannot build the CUDA WKV7 kernel: {missing}")
    from torch.utils.cpp_extension import load

    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("*.so")):
        log.warning("building the CUDA WKV7 kernel in %s (first use on this machine: about a minute)", directory)
    try:
        return load(name=f"wkv7_ext_{_source_digest()}",
                    sources=[str(SOURCES / "wkv7_op.cpp"), str(SOURCES / "wkv7.cu")],
                    extra_include_paths=[str(SOURCES)],
                    extra_cflags=["-O3"], extra_cuda_cflags=["-O3"],
                    build_directory=str(directory), verbose=False)
    except (RuntimeError, OSError, ImportError) as error:
        raise KernelUnavailableError(
            f"building the CUDA WKV7 kernel in {directory} failed: {str(error)[-2000:]}\n"
            "Check that nvcc matches torch's CUDA version and a C++ compiler is installed, "
            "or use op='triton'.") from error


class _Wkv7Cuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state):
        extension = load_extension()
        s0 = state.float().contiguous() if state is not None else None
        stream = torch.cuda.current_stream(r.device).cuda_stream
        y, final_state, checkpoints = extension.forward(stream, r, w, k, v, a, b, s0)
        ctx.save_for_backward(r, w, k, v, a, b, checkpoints)
        ctx.state_dtype = None if state is None else state.dtype
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        return y, final_state

    @staticmethod
    def backward(ctx, dy, d_final_state):
        r, w, k, v, a, b, checkpoints = ctx.saved_tensors
        dy = dy.contiguous() if dy is not None else torch.zeros_like(r)
        ds_out = d_final_state.float().contiguous() if d_final_state is not None else None
        stream = torch.cuda.current_stream(r.device).cuda_stream
        with torch.cuda.device(r.device):
            *grads, d_state = load_extension().backward(stream, r, w, k, v, a, b, dy, ds_out, checkpoints)
        return (*grads, None if ctx.state_dtype is None else d_state.to(ctx.state_dtype))


def wkv7_cuda(r, w, k, v, a, b, state=None):
    """The dispatcher's contract (see kernels.dispatch.wkv7): (y in the input dtype, fp32 state)."""
    N = r.shape[-1]
    if N not in SUPPORTED_HEAD_SIZES:
        raise ValueError(f"the CUDA WKV7 kernel supports head sizes {SUPPORTED_HEAD_SIZES}, got {N}")
    r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
    with torch.cuda.device(r.device):  # the launch goes to the current device
        return _Wkv7Cuda.apply(r, w, k, v, a, b, state)
