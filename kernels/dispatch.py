"""Choosing a WKV op: a registry of implementations per operator family ("wkv7", "wkv6",
"wkv5"), each with an availability check.

GPU ops (our CUDA and Triton kernels, rwkv-fla) plug in with `register_op`; the model
only ever calls `wkv7(..., op=...)` (or `wkv6`/`wkv5`) and learns from the result which op ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rwkv_tui.kernels.chunk_state_pass import wkv7_chunked_triton
from rwkv_tui.kernels.errors import KernelUnavailableError
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked
from rwkv_tui.kernels.wkv7_cuda import cuda_availability, wkv7_cuda
from rwkv_tui.kernels.wkv7_fla import fla_availability, wkv7_fla
from rwkv_tui.kernels.wkv7_reference import wkv7_sequential
from rwkv_tui.kernels.wkv7_triton import triton_availability, wkv7_triton

# An op: (r, w, k, v, a, b, state or None) -> (y [B,T,H,N] in the input dtype, final state [B,H,N,N]).
WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# None when the op can run on this device with this input dtype, else the reason it cannot.
Availability = Callable[[torch.device, torch.dtype], "str | None"]


class Wkv7Output(NamedTuple):
    y: torch.Tensor       # [B, T, H, N], the input dtype
    state: torch.Tensor   # [B, H, N, N] fp32 (fp64 for fp64 inputs), value-major
    op: str               # the op that actually ran


@dataclass(frozen=True)
class OpInfo:
    name: str
    fn: WkvFn
    availability: Availability
    priority: int  # higher wins under "auto"


# family -> op name -> op
_REGISTRY: dict[str, dict[str, OpInfo]] = {}
ALIASES = {"torch": "torch_chunked"}


def register_op(name: str, fn: WkvFn, availability: Availability, priority: int = 0,
                family: str = "wkv7") -> None:
    """Add (or replace) an op of `family`. `availability(device, dtype)` must be cheap: "auto"
    calls it on every call. Under "auto" the available op with the highest priority runs."""
    _REGISTRY.setdefault(family, {})[name] = OpInfo(name, fn, availability, priority)


def _everywhere(device: torch.device, dtype: torch.dtype) -> None:
    return None


register_op("torch_chunked", wkv7_chunked, _everywhere, priority=10)
register_op("torch_sequential", wkv7_sequential, _everywhere, priority=0)
# Priorities order the GPU ops for RWKV_TUI_WKV_AUTO=fixed; by default "auto" on CUDA measures them.
register_op("cuda", wkv7_cuda, cuda_availability, priority=40)
register_op("triton", wkv7_triton, triton_availability, priority=30)
register_op("triton_chunked", wkv7_chunked_triton, triton_availability, priority=25)
register_op("fla", wkv7_fla, fla_availability, priority=20)


def available_ops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  family: str = "wkv7") -> list[str]:
    """Registered ops of `family` that can run on `device` with inputs of `dtype`, best first."""
    return [name for name, _, reason in op_report(device, dtype, family) if reason is None]


def op_report(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              family: str = "wkv7") -> list[tuple[str, int, str | None]]:
    """Every registered op of `family` as (name, priority, None or why it cannot run here), best first."""
    device = torch.device(device)
    infos = sorted(_REGISTRY.get(family, {}).values(), key=lambda i: -i.priority)
    return [(info.name, info.priority, info.availability(device, dtype)) for info in infos]


def resolve_op(op: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               family: str = "wkv7") -> str:
    """The concrete op `op` means on this device and dtype, or KernelUnavailableError saying why not."""
    device = torch.device(device)
    if op == "auto":
        return available_ops(device, dtype, family)[0]
    name = ALIASES.get(op, op)
    registry = _REGISTRY.get(family, {})
    info = registry.get(name)
    if info is None:
        known = ", ".join(["auto", *ALIASES, *registry])
        raise KernelUnavailableError(f"unknown {family} op {op!r}; choose one of: {known}")
    reason = info.availability(device, dtype)
    if reason is not None:
        raise KernelUnavailableError(f"op {op!r} is not available on {device} with {dtype}: {reason}")
    return name


def choose_op(op: str, r: torch.Tensor, family: str = "wkv7") -> str:
    """The op to run on inputs like `r` [B, T, H, N]: `resolve_op`, and under "auto" on a GPU
    the one WKV7's trial measured fastest for that kind of input (every family's GPU ops are
    WKV7 ops underneath, so one measurement serves them all)."""
    name = resolve_op(op, r.device, r.dtype, family)
    if op == "auto" and r.device.type == "cuda":
        from rwkv_tui.kernels.autotune import fastest_op  # imports this module

        choice = fastest_op(r.device, r.dtype, tuple(r.shape))
        name = choice if choice in _REGISTRY[family] else name
    return name


def check_inputs(r, w, k, v, a, b, state) -> None:
    """Shape mistakes fail here with names, not deep inside a matrix product."""
    if r.dim() != 4:
        raise ValueError(f"wkv7 inputs must be [B, T, H, N], got r of shape {tuple(r.shape)}")
    for name, x in zip("wkvab", (w, k, v, a, b)):
        if x.shape != r.shape:
            raise ValueError(f"wkv7 input {name} has shape {tuple(x.shape)}, r has {tuple(r.shape)}")
    B, T, H, N = r.shape
    if T < 1:
        raise ValueError("wkv7 needs at least one time step (T ≥ 1)")
    if state is not None and state.shape != (B, H, N, N):
        raise ValueError(f"wkv7 state must be [B, H, N, N] = {(B, H, N, N)}, got {tuple(state.shape)}")


def wkv7(r, w, k, v, a, b, state=None, op: str = "auto") -> Wkv7Output:
    """The RWKV-7 WKV operator, S_t = S_{t-1} (diag(e^{-e^{w_t}}) + a_t b_tᵀ) + v_t k_tᵀ, y_t = S_t r_t.

    r, w, k, v, a, b: [B, T, H, N]; `w` is RWKV-7's log(-log(decay)). `state`: the initial
    [B, H, N, N] value-major state (S[i, j]: value i, key j), or None for zeros. The state is
    computed in fp32 (fp64 for fp64 inputs) whatever the input dtype. Differentiable in all
    six inputs and the initial state. `op`: "auto", or a name from `available_ops`.
    """
    check_inputs(r, w, k, v, a, b, state)
    name = choose_op(op, r)
    with autocast_off(r.device):
        y, final_state = _REGISTRY["wkv7"][name].fn(r, w, k, v, a, b, state)
    return Wkv7Output(y, final_state, name)


def autocast_off(device: torch.device):
    """Mixed precision (Lightning's "bf16-mixed") runs the model under autocast, which would
    quietly turn the state's fp32 products into bf16 ones; every op keeps its own precision."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
