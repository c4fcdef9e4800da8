"""The checks every GPU op starts its availability with (see kernels.dispatch.OPS)."""

from __future__ import annotations

import torch

GPU_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def needs_cuda_and_float(what: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `what` (e.g. "the CUDA kernel") cannot take `dtype` inputs on `device`, or None."""
    if device.type != "cuda":
        return f"{what} runs on CUDA GPUs"
    if dtype not in GPU_DTYPES:
        return f"{what} takes bf16, fp16 or fp32 inputs, not {dtype}"
    return None
