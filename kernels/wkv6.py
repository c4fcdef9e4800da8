"""The RWKV-6 and RWKV-5 WKV operators: `wkv6(...)`, `wkv5(...)` -> (y, state, op).

Same table as WKV7 (kernels.dispatch.OPS), under the families "wkv6" and "wkv5". Besides the
sequential reference, every op is a WKV7 op run with a = b = 0 (kernels/wkv6_from_wkv7.py):
the chunked torch op everywhere, the CUDA and Triton kernels on GPUs.
"""

from __future__ import annotations

from rwkv_tui.kernels.dispatch import Wkv7Output, call_op


class WkvOutput(Wkv7Output):
    """As Wkv7Output, but `state` is key-major ([B, H, N(key), N(value)]), as RWKV-6/5 keep it."""


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


def wkv6(r, w, k, v, u, state=None, op: str = "auto") -> WkvOutput:
    """RWKV-6: r, w, k, v [B, T, H, N] (w = log(-log(decay)), data-dependent), u [H, N], state
    [B, H, N, N] key-major or None. Differentiable in every input and the initial state."""
    _check(r, w, k, v, u, state, tuple(r.shape), "wkv6")
    return call_op("wkv6", op, (r, w, k, v, u, state), WkvOutput)


def wkv5(r, w, k, v, u, state=None, op: str = "auto") -> WkvOutput:
    """RWKV-5.2: as `wkv6` with one decay table w [H, N] (time_decay) for every step."""
    _check(r, w, k, v, u, state, tuple(r.shape[2:]), "wkv5")
    return call_op("wkv5", op, (r, w, k, v, u, state), WkvOutput)
