"""Choosing the WKV7 op: a registry of implementations, each with an availability check.

GPU ops (our CUDA and Triton kernels, rwkv-fla) register here with `register_op`; the
model only ever calls `wkv7(..., op=...)` and learns from the result which op ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from kernels.wkv7_chunked import wkv7_chunked
from kernels.wkv7_reference import wkv7_sequential


class KernelUnavailableError(RuntimeError):
    """The requested op cannot run here (no GPU, package missing, unsupported dtype…)."""


class Wkv7Output(NamedTuple):
    y: torch.Tensor       # [B, T, H, N], the input dtype
    state: torch.Tensor   # [B, H, N, N] fp32 (fp64 for fp64 inputs), value-major
    op: str               # the op that actually ran


@dataclass(frozen=True)
class OpInfo:
    name: str
    fn: Callable
    availability: Callable[[torch.device, torch.dtype], str | None]  # None = available, else why not
    priority: int  # higher wins under "auto"


_REGISTRY: dict[str, OpInfo] = {}
# Names users may ask for that are not (yet) registered, with the reason shown to them.
_PLANNED = {
    "cuda": "the CUDA WKV7 kernel is not built into this version (it needs a CUDA GPU and a compiler)",
    "triton": "the Triton WKV7 kernel is not built into this version (it needs a CUDA GPU and triton)",
    "fla": "the rwkv-fla adapter needs a CUDA GPU and the rwkv-fla package (pip install 'rwkv-tui[gpu]')",
}
ALIASES = {"torch": "torch_chunked"}


def register_op(name: str, fn: Callable, availability: Callable, priority: int = 0) -> None:
    _REGISTRY[name] = OpInfo(name, fn, availability, priority)


def _always(device, dtype) -> None:
    return None


register_op("torch_chunked", wkv7_chunked, _always, priority=10)
register_op("torch_sequential", wkv7_sequential, _always, priority=0)


def available_ops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    device = torch.device(device)
    ops = [info for info in _REGISTRY.values() if info.availability(device, dtype) is None]
    return [info.name for info in sorted(ops, key=lambda i: -i.priority)]


def resolve_op(op: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """The concrete op `op` means on this device and dtype, or KernelUnavailableError saying why not."""
    device = torch.device(device)
    if op == "auto":
        return available_ops(device, dtype)[0]
    name = ALIASES.get(op, op)
    info = _REGISTRY.get(name)
    if info is None:
        reason = _PLANNED.get(name)
        if reason is None:
            known = ", ".join(["auto", *ALIASES, *_REGISTRY, *_PLANNED])
            raise KernelUnavailableError(f"unknown WKV op {op!r}; choose one of: {known}")
        raise KernelUnavailableError(f"op {op!r} is not available: {reason}; use op='auto'")
    reason = info.availability(device, dtype)
    if reason is not None:
        raise KernelUnavailableError(f"op {op!r} is not available on {device} with {dtype}: {reason}")
    return name


def wkv7(r, w, k, v, a, b, state=None, op: str = "auto") -> Wkv7Output:
    """The RWKV-7 WKV operator. Inputs [B, T, H, N]; `w` is log(-log(decay)); `state`
    [B, H, N, N] value-major or None (zeros). Differentiable in all inputs and the state."""
    name = resolve_op(op, r.device, r.dtype)
    y, final_state = _REGISTRY[name].fn(r, w, k, v, a, b, state)
    return Wkv7Output(y, final_state, name)
