"""Choosing a WKV op: `OPS`, one table of every implementation, and the functions that pick from it.

A row is one op: its name, its priority, its availability check and its function for each
operator family it serves ("wkv7", "wkv6", "wkv5"). The GPU rows name their module instead of
importing it, so a CPU run never loads the CUDA, Triton or rwkv-fla code. The model only ever
calls `wkv7(..., op=...)` (or `wkv6`/`wkv5`) and learns from the result which op ran.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rwkv_tui.kernels.autotune import OpChoice, Trials, fastest_op
from rwkv_tui.kernels.errors import KernelUnavailableError
from rwkv_tui.kernels.wkv6_from_wkv7 import wkv5_on, wkv6_on
from rwkv_tui.kernels.wkv6_reference import wkv5_sequential, wkv6_sequential
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked
from rwkv_tui.kernels.wkv7_reference import wkv7_sequential

# An op: (r, w, k, v, a, b, state or None) -> (y [B,T,H,N] in the input dtype, final state [B,H,N,N]);
# for wkv6/wkv5, (r, w, k, v, u, state or None).
WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# None when the op can run on this device with this input dtype, else the reason it cannot.
# "auto" calls it on every call, so it must be cheap.
Availability = Callable[[torch.device, torch.dtype], "str | None"]


@dataclass(frozen=True)
class OpEntry:
    """One row of OPS: an op and, per operator family it serves, its function."""
    name: str
    priority: int                   # under "auto" without measuring (CPU, RWKV_TUI_WKV_AUTO=fixed) the highest runs
    availability: Availability
    functions: Mapping[str, WkvFn]  # family -> the op's function for it


@dataclass(frozen=True)
class LazyFunction:
    """`rwkv_tui.kernels.<module>.<name>`, imported on its first call: a CPU run never loads
    the GPU modules, and through them triton or rwkv-fla."""
    module: str
    name: str

    @property
    def __name__(self) -> str:  # what wkv6_on and tracebacks show
        return self.name

    def load(self) -> Callable:
        return getattr(importlib.import_module(f"rwkv_tui.kernels.{self.module}"), self.name)

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)


def _everywhere(device: torch.device, dtype: torch.dtype) -> None:
    return None


def _every_family(wkv7_op: WkvFn) -> dict[str, WkvFn]:
    """A WKV7 op serves RWKV-6 and RWKV-5 too, run with a = b = 0 (kernels/wkv6_from_wkv7.py)."""
    return {"wkv7": wkv7_op, "wkv6": wkv6_on(wkv7_op), "wkv5": wkv5_on(wkv7_op)}


_TRITON_AVAILABILITY = LazyFunction("wkv7_triton", "triton_availability")

# Every op, best first. The priorities order the GPU ops only for RWKV_TUI_WKV_AUTO=fixed:
# by default "auto" on CUDA measures them (kernels/autotune.py).
OPS: tuple[OpEntry, ...] = (
    OpEntry("cuda", 40, LazyFunction("wkv7_cuda", "cuda_availability"),
            _every_family(LazyFunction("wkv7_cuda", "wkv7_cuda"))),
    OpEntry("triton", 30, _TRITON_AVAILABILITY, _every_family(LazyFunction("wkv7_triton", "wkv7_triton"))),
    OpEntry("triton_chunked", 25, _TRITON_AVAILABILITY,
            _every_family(LazyFunction("chunk_state_pass", "wkv7_chunked_triton"))),
    OpEntry("fla", 20, LazyFunction("wkv7_fla", "fla_availability"), {"wkv7": LazyFunction("wkv7_fla", "wkv7_fla")}),
    # Forward only, on the CPU: "auto" takes it for inference (chat, eval) and the torch ops for training.
    OpEntry("cpu", 15, LazyFunction("wkv7_cpu", "cpu_availability"),
            _every_family(LazyFunction("wkv7_cpu", "wkv7_cpu"))),
    OpEntry("torch_chunked", 10, _everywhere, _every_family(wkv7_chunked)),
    OpEntry("torch_sequential", 0, _everywhere,
            {"wkv7": wkv7_sequential, "wkv6": wkv6_sequential, "wkv5": wkv5_sequential}),
)
ALIASES = {"torch": "torch_chunked"}


class _Fields(NamedTuple):
    y: torch.Tensor       # [B, T, H, N], the input dtype
    state: torch.Tensor   # [B, H, N, N] fp32 (fp64 for fp64 inputs), value-major
    op: str               # the op that actually ran


class Wkv7Output(_Fields):
    """The tuple (y, state, op), and beside it `trials_ms`: what op="auto" measured on a GPU to
    pick `op` (autotune.Trials), empty when nothing was measured. Outside the tuple, so
    `y, state, op = wkv7(...)` stays as it was."""

    def __new__(cls, y: torch.Tensor, state: torch.Tensor, op: str, trials_ms: Trials | None = None):
        output = super().__new__(cls, y, state, op)
        output.trials_ms = trials_ms or {}
        return output


def family_ops(family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> list[OpEntry]:
    """The rows of `ops` that implement `family`, best first."""
    return sorted((entry for entry in ops if family in entry.functions), key=lambda entry: -entry.priority)


def op_report(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> list[tuple[str, int, str | None]]:
    """Every op of `family` as (name, priority, None or why it cannot run here), best first."""
    device = torch.device(device)
    return [(entry.name, entry.priority, entry.availability(device, dtype)) for entry in family_ops(family, ops)]


def available_ops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> list[str]:
    """The ops of `family` that can run on `device` with inputs of `dtype`, best first."""
    return [name for name, _, reason in op_report(device, dtype, family, ops) if reason is None]


def resolve_op(op: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> str:
    """The concrete op `op` means on this device and dtype, or KernelUnavailableError saying why not."""
    device = torch.device(device)
    if op == "auto":
        return available_ops(device, dtype, family, ops)[0]
    name = ALIASES.get(op, op)
    entry = next((entry for entry in family_ops(family, ops) if entry.name == name), None)
    if entry is None:
        known = ", ".join(["auto", *ALIASES, *(entry.name for entry in family_ops(family, ops))])
        raise KernelUnavailableError(f"unknown {family} op {op!r}; choose one of: {known}")
    reason = entry.availability(device, dtype)
    if reason is not None:
        raise KernelUnavailableError(f"op {op!r} is not available on {device} with {dtype}: {reason}")
    return name


def op_function(name: str, family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> WkvFn:
    """The function of op `name` (as `resolve_op` returns it) for `family`."""
    return next(entry.functions[family] for entry in family_ops(family, ops) if entry.name == name)


def choose_op(op: str, r: torch.Tensor, family: str = "wkv7", ops: Sequence[OpEntry] = OPS) -> OpChoice:
    """The op to run on inputs like `r` [B, T, H, N]: `resolve_op`, and under "auto" on a GPU
    the one WKV7's trial measured fastest for that kind of input (every family's GPU ops are
    WKV7 ops underneath, so one measurement serves them all), with what the trial saw."""
    name = resolve_op(op, r.device, r.dtype, family, ops)
    if op != "auto" or r.device.type != "cuda":
        return OpChoice(name, {})
    available = [entry for entry in family_ops("wkv7", ops) if entry.availability(r.device, r.dtype) is None]
    fastest = fastest_op(r.device, r.dtype, tuple(r.shape), available)
    serves_family = any(entry.name == fastest.op for entry in family_ops(family, ops))
    return fastest if serves_family else OpChoice(name, fastest.trials_ms)


def call_op(family: str, op: str, inputs: tuple, output: type[Wkv7Output] = Wkv7Output) -> Wkv7Output:
    """Choose the op for `inputs` (r first, the state last) and run it with autocast off."""
    r = inputs[0]
    choice = choose_op(op, r, family)
    with autocast_off(r.device):
        y, final_state = op_function(choice.op, family)(*inputs)
    return output(y, final_state, choice.op, choice.trials_ms)


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
    Returns (y, state, op) with `.trials_ms` beside it (see Wkv7Output).
    """
    check_inputs(r, w, k, v, a, b, state)
    return call_op("wkv7", op, (r, w, k, v, a, b, state))


def autocast_off(device: torch.device):
    """Mixed precision (Lightning's "bf16-mixed") runs the model under autocast, which would
    quietly turn the state's fp32 products into bf16 ones; every op keeps its own precision."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
