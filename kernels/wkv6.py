"""The RWKV-6 and RWKV-5 WKV operators: `wkv6(...)`, `wkv5(...)` -> (y, state, op).

Same registry as WKV7 (kernels.dispatch), under the families "wkv6" and "wkv5". Besides the
sequential reference, every op is a WKV7 op run with a = b = 0 (kernels/wkv6_from_wkv7.py):
the chunked torch op everywhere, the CUDA and Triton kernels on GPUs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rwkv_tui.kernels.chunk_state_pass import wkv7_chunked_triton
from rwkv_tui.kernels.dispatch import _REGISTRY, autocast_off, choose_op, register_op
from rwkv_tui.kernels.wkv6_from_wkv7 import wkv5_on, wkv6_on
from rwkv_tui.kernels.wkv6_reference import wkv5_sequential, wkv6_sequential
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked
from rwkv_tui.kernels.wkv7_cuda import cuda_availability, wkv7_cuda
from rwkv_tui.kernels.wkv7_triton import triton_availability, wkv7_triton


class WkvOutput(NamedTuple):
    y: torch.Tensor       # [B, T, H, N], the input dtype
    state: torch.Tensor   # [B, H, N, N] fp32 (fp64 for fp64 inputs), key-major
    op: str


def _everywhere(device: torch.device, dtype: torch.dtype) -> None:
    return None


register_op("torch_sequential", wkv6_sequential, _everywhere, priority=0, family="wkv6")
register_op("torch_sequential", wkv5_sequential, _everywhere, priority=0, family="wkv5")
for _family, _adapt in (("wkv6", wkv6_on), ("wkv5", wkv5_on)):
    register_op("torch_chunked", _adapt(wkv7_chunked), _everywhere, priority=10, family=_family)
    register_op("cuda", _adapt(wkv7_cuda), cuda_availability, priority=40, family=_family)
    register_op("triton", _adapt(wkv7_triton), triton_availability, priority=30, family=_family)
    register_op("triton_chunked", _adapt(wkv7_chunked_triton), triton_availability, priority=25, family=_family)


def _check(r, w, k, v, u, state, decay_shape: tuple, family: str) -> None:
    if r.dim() != 4:
        raise ValueError(f"{family} inputs must be [B, T, H, N], got r of shape {tuple(r.shape)}")
    B, T, H, N = r.shape
    for name, x in (("k", k), ("v", v)):
        if x.shape != r.shape:
            raise ValueError(f"{family} input {name} has shape {tuple(x.shape)}, r has {tuple(r.shape)}")
    if tuple(w.shape) != decay_shape:
        raise ValueError(f"{family} decay w must be {decay_shape}, got {tuple(w.shape)}")
    if tuple(u.shape) != (H, N):
        raise ValueError(f"{family} bonus u (time_faaaa) must be [H, N] = {(H, N)}, got {tuple(u.shape)}")
    if T < 1:
        raise ValueError(f"{family} needs at least one time step (T ≥ 1)")
    if state is not None and tuple(state.shape) != (B, H, N, N):
        raise ValueError(f"{family} state must be [B, H, N, N] = {(B, H, N, N)}, got {tuple(state.shape)}")


def _run(family, r, w, k, v, u, state, op) -> WkvOutput:
    name = choose_op(op, r, family)
    with autocast_off(r.device):
        y, final_state = _REGISTRY[family][name].fn(r, w, k, v, u, state)
    return WkvOutput(y, final_state, name)


def wkv6(r, w, k, v, u, state=None, op: str = "auto") -> WkvOutput:
    """RWKV-6: r, w, k, v [B, T, H, N] (w = log(-log(decay)), data-dependent), u [H, N], state
    [B, H, N, N] key-major or None. Differentiable in every input and the initial state."""
    _check(r, w, k, v, u, state, tuple(r.shape), "wkv6")
    return _run("wkv6", r, w, k, v, u, state, op)


def wkv5(r, w, k, v, u, state=None, op: str = "auto") -> WkvOutput:
    """RWKV-5.2: as `wkv6` with one decay table w [H, N] (time_decay) for every step."""
    _check(r, w, k, v, u, state, tuple(r.shape[2:]), "wkv5")
    return _run("wkv5", r, w, k, v, u, state, op)
