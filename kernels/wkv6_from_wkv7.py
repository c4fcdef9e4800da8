"""RWKV-6/5 WKV on top of any WKV7 op: one kernel family serves every generation.

With a = b = 0 the WKV7 recurrence is S'_t = S'_{t-1} diag(d_t) + v_t k_tᵀ on the value-major
state S' = Sᵀ — exactly RWKV-6's state update. Only the readout differs: RWKV-6 reads the
state *before* the current token and adds the bonus,

    y_t = S'_{t-1} r_t + (Σ_j u_j k_t[j] r_t[j]) v_t,

so feeding WKV7 the receptance one step early (r'_{t-1} = r_t) gives S'_{t-1} r_t as its output
at t-1. The first step reads the initial state directly. Autograd sees only the shift, the
bonus and the wrapped op, so every gradient (and the initial-state gradient) comes from the
WKV7 op's own backward: its CUDA/Triton/chunked kernels need no RWKV-6 twin.
"""

from __future__ import annotations

import torch

from rwkv_tui.kernels.wkv7_reference import state_dtype


def wkv6_on(wkv7_op):
    """An RWKV-6 op `(r, w, k, v, u, state) -> (y, key-major state)` made from a WKV7 op."""

    def wkv6_op(r, w, k, v, u, state=None):
        dt = state_dtype(r.dtype)
        zeros = torch.zeros_like(k)
        r_early = torch.cat((r[:, 1:], torch.zeros_like(r[:, :1])), dim=1)
        value_major = state.transpose(-1, -2) if state is not None else None
        y7, final = wkv7_op(r_early, w, k, v, zeros, zeros, value_major)
        bonus = (r.to(dt) * u.to(dt) * k.to(dt)).sum(-1, keepdim=True) * v.to(dt)
        if value_major is not None:
            first = (value_major.to(dt) @ r[:, 0].to(dt).unsqueeze(-1)).squeeze(-1)
        else:
            first = torch.zeros_like(bonus[:, 0])
        y = torch.cat((first.unsqueeze(1), y7[:, :-1].to(dt)), dim=1) + bonus
        return y.to(r.dtype), final.transpose(-1, -2)

    wkv6_op.__name__ = f"wkv6_on_{getattr(wkv7_op, '__name__', 'op')}"
    return wkv6_op


def wkv5_on(wkv7_op):
    """RWKV-5.2: one decay table w [H, N] for every step."""
    wkv6_op = wkv6_on(wkv7_op)

    def wkv5_op(r, w, k, v, u, state=None):
        return wkv6_op(r, w.expand(r.shape), k, v, u, state)

    return wkv5_op
