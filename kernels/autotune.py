"""`op="auto"` on a GPU: time every available op once per kind of input, keep the fastest.

Which kernel wins depends on the GPU, the dtype, the triton/CUDA versions and the shape (a
sequential kernel wins with many heads or one token, a chunked one with few heads and long
sequences), so rather than trusting a fixed order the first call of each kind (device, dtype,
head size, batch×heads and length, both rounded up to a power of two and capped) measures a
forward+backward of every candidate and remembers the winner for the process. An op that fails (a kernel
that does not compile here, say) is dropped with a warning. RWKV_TUI_WKV_AUTO=fixed skips
the measurement and uses the table's priority order (kernels.dispatch.OPS).

The remembered choices are the kernels' only process-wide state; `reset_autotune()` forgets them.
This module knows nothing of the op table: the dispatcher hands it the candidates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:  # the dispatcher imports this module, never the other way round
    from rwkv_tui.kernels.dispatch import OpEntry

log = logging.getLogger(__name__)

# Ops too slow to ever win on a GPU; measuring them would only cost time.
NEVER_MEASURED = {"torch_sequential"}
# Trial inputs are at most this big (a fraction of one layer's activations), so the measurement
# never needs more memory than a training step already has.
MAX_TRIAL_BATCH_HEADS = 256
MAX_TRIAL_STEPS = 1024

# What a trial measured, for logs and events.jsonl: {"wkv7 cuda:0 bfloat16 N=64 BH=32 T=1024": {op: ms or error}}.
Trials = dict[str, dict[str, float | str]]


class OpChoice(NamedTuple):
    op: str             # the op to run
    trials_ms: Trials   # the measurement that picked it; empty when nothing was measured


# (device, dtype, head size, trial B·H, trial T) -> the choice for that kind of input.
_CHOICES: dict[tuple, OpChoice] = {}


def reset_autotune() -> None:
    """Forget every measurement and choice: the next `op="auto"` call on a GPU measures again.
    For tests, and for a benchmark that must not inherit an earlier run's choice."""
    _CHOICES.clear()


def fastest_op(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...],
               available: Sequence[OpEntry]) -> OpChoice:
    """The op to run for WKV7 inputs of `shape` [B, T, H, N] on `device` in `dtype`, among
    `available` (the ops that can run there, best first), measured on the first call of each kind."""
    B, T, H, N = shape
    key = (str(device), dtype, N, trial_size(B * H, MAX_TRIAL_BATCH_HEADS), trial_size(T, MAX_TRIAL_STEPS))
    if key not in _CHOICES:
        candidates = [op for op in available if op.name not in NEVER_MEASURED]
        if os.environ.get("RWKV_TUI_WKV_AUTO") == "fixed" or len(candidates) <= 1:
            _CHOICES[key] = OpChoice((candidates or available)[0].name, {})
        else:
            _CHOICES[key] = _measure(key, candidates)
    return _CHOICES[key]


def trial_size(n: int, cap: int) -> int:
    """n rounded up to a power of two, at most `cap`: similar shapes share one measurement."""
    return min(1 << max(n - 1, 0).bit_length(), cap)


def _trial_label(key: tuple) -> str:
    device, dtype, head_size, batch_heads, steps = key
    return f"wkv7 {device} {str(dtype).removeprefix('torch.')} N={head_size} BH={batch_heads} T={steps}"


def _measure(key: tuple, candidates: Sequence[OpEntry]) -> OpChoice:
    device, dtype, head_size, batch_heads, steps = key
    results = time_ops({op.name: op.functions["wkv7"] for op in candidates}, torch.device(device), dtype,
                       (1, steps, batch_heads, head_size))
    timed = {op: t for op, t in results.items() if isinstance(t, float)}
    choice = min(timed, key=timed.get) if timed else candidates[-1].name
    log.info("WKV op for %s %s N=%d B·H=%d T=%d: %s (%s)", device, dtype, head_size, batch_heads, steps,
             choice, ", ".join(f"{op} {t * 1e3:.2f} ms" if isinstance(t, float) else f"{op} failed"
                       for op, t in results.items()))
    milliseconds = {op: round(t * 1e3, 4) if isinstance(t, float) else t for op, t in results.items()}
    return OpChoice(choice, {_trial_label(key): milliseconds})


def time_ops(ops: Mapping[str, Callable], device: torch.device, dtype: torch.dtype,
             shape: tuple[int, int, int, int]) -> dict[str, float | str]:
    """Best forward+backward seconds of each WKV7 op (name -> function) on random RWKV-7-like
    inputs of `shape` [B, T, H, N], or the error it raised. Ops that fail here are not fatal:
    that is what they report."""
    g = torch.Generator(device=device).manual_seed(0)

    def rand(scale=1.0):
        return (torch.randn(shape, generator=g, device=device) * scale).to(dtype)

    kk = torch.nn.functional.normalize(torch.randn(shape, generator=g, device=device), dim=-1)
    inputs = [rand(), -0.5 - rand(0.5).float().abs().to(dtype), rand(0.5), rand(), (-kk).to(dtype),
              (kk * 0.5).to(dtype)]
    results: dict[str, float | str] = {}
    for name, fn in ops.items():
        try:
            results[name] = _time_one(fn, inputs, device)
        except Exception as error:  # noqa: BLE001 - any failing kernel is skipped, not fatal
            results[name] = f"{type(error).__name__}: {error}"
            log.warning("WKV op %s failed its trial run and will not be used: %s", name, error)
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_one(fn, inputs, device, repeats: int = 3) -> float:
    with torch.enable_grad():  # the first call may come from inside no_grad (generation)
        xs = [x.detach().requires_grad_() for x in inputs]
        best = float("inf")
        for i in range(repeats + 1):  # the first run compiles and warms up
            _sync(device)
            start = time.perf_counter()
            y, state = fn(*xs, None)
            (y.float().sum() + state.sum()).backward()
            _sync(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return best
