"""`op="auto"` on a GPU: time every available op once per kind of input, keep the fastest.

Which kernel wins depends on the GPU, the dtype, the triton/CUDA versions and the shape (a
sequential kernel wins with many heads or one token, a chunked one with few heads and long
sequences), so rather than trusting a fixed order the first call of each kind (device, dtype,
head size, batch×heads and length, both rounded up to a power of two and capped) measures a
forward+backward of every candidate and remembers the winner for the process. An op that fails (a kernel
that does not compile here, say) is dropped with a warning. RWKV_TUI_WKV_AUTO=fixed skips
the measurement and uses the registry's priority order.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from rwkv_tui.kernels.dispatch import _REGISTRY, available_ops

log = logging.getLogger(__name__)

# Ops too slow to ever win on a GPU; measuring them would only cost time.
NEVER_MEASURED = {"torch_sequential"}
# Trial inputs are at most this big (a fraction of one layer's activations), so the measurement
# never needs more memory than a training step already has.
MAX_TRIAL_BATCH_HEADS = 256
MAX_TRIAL_STEPS = 1024
_CHOSEN: dict[tuple, str] = {}
# What the measurement saw, for logs and benchmarks: key -> {op: seconds or error text}.
MEASUREMENTS: dict[tuple, dict[str, float | str]] = {}


def fastest_op(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...], family: str = "wkv7") -> str:
    """The op to run for inputs of `shape` [B, T, H, N] on `device` in `dtype`."""
    B, T, H, N = shape
    key = (family, str(device), dtype, N, trial_size(B * H, MAX_TRIAL_BATCH_HEADS), trial_size(T, MAX_TRIAL_STEPS))
    if key not in _CHOSEN:
        candidates = [op for op in available_ops(device, dtype, family) if op not in NEVER_MEASURED]
        if os.environ.get("RWKV_TUI_WKV_AUTO") == "fixed" or len(candidates) <= 1 or family != "wkv7":
            _CHOSEN[key] = candidates[0] if candidates else available_ops(device, dtype, family)[0]
        else:
            _CHOSEN[key] = _measure(key, candidates, device, dtype)
    return _CHOSEN[key]


def trial_size(n: int, cap: int) -> int:
    """n rounded up to a power of two, at most `cap`: similar shapes share one measurement."""
    return min(1 << max(n - 1, 0).bit_length(), cap)


def trial_summary() -> dict[str, dict[str, float | str]]:
    """What "auto" measured so far, for events.jsonl:
    "wkv7 cuda:0 bfloat16 N=64 BH=32 T=1024" -> {op: ms or error}."""
    return {f"{family} {device} {str(dtype).removeprefix('torch.')} N={n} BH={bh} T={t}":
            {op: round(seconds * 1e3, 4) if isinstance(seconds, float) else seconds
             for op, seconds in results.items()}
            for (family, device, dtype, n, bh, t), results in MEASUREMENTS.items()}


def _measure(key, candidates, device, dtype) -> str:
    family, _, _, head_size, batch_heads, steps = key
    results = time_ops(candidates, device, dtype, (1, steps, batch_heads, head_size), family)
    MEASUREMENTS[key] = results
    timed = {op: t for op, t in results.items() if isinstance(t, float)}
    choice = min(timed, key=timed.get) if timed else candidates[-1]
    log.info("WKV op for %s %s N=%d B·H=%d T=%d: %s (%s)", device, dtype, head_size, batch_heads, steps,
             choice, ", ".join(f"{op} {t * 1e3:.2f} ms" if isinstance(t, float) else f"{op} failed"
                       for op, t in results.items()))
    return choice


def time_ops(ops, device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int, int],
             family: str = "wkv7") -> dict[str, float | str]:
    """Best forward+backward seconds of each op on random RWKV-7-like inputs of `shape`
    [B, T, H, N], or the error it raised. Ops that fail here are not fatal: that is what they report."""
    g = torch.Generator(device=device).manual_seed(0)

    def rand(scale=1.0):
        return (torch.randn(shape, generator=g, device=device) * scale).to(dtype)

    kk = torch.nn.functional.normalize(torch.randn(shape, generator=g, device=device), dim=-1)
    inputs = [rand(), -0.5 - rand(0.5).float().abs().to(dtype), rand(0.5), rand(), (-kk).to(dtype),
              (kk * 0.5).to(dtype)]
    results: dict[str, float | str] = {}
    for op in ops:
        try:
            results[op] = _time_one(_REGISTRY[family][op].fn, inputs, device)
        except Exception as error:  # noqa: BLE001 - any failing kernel is skipped, not fatal
            results[op] = f"{type(error).__name__}: {error}"
            log.warning("WKV op %s failed its trial run and will not be used: %s", op, error)
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
