"""The RWKV-6/5 WKV recurrence, one step at a time: slow, exact, the oracle for faster ops.

Per batch and head, with the state S [N, N] key-major (S[j, i]: key j, value i; the layout
the `rwkv` package keeps for these versions) and the bonus u [N] for the current token:

    y_t[i] = Σ_j r_t[j] (u[j] k_t[j] v_t[i] + S_{t-1}[j, i])
    S_t    = d_t[:, None] * S_{t-1} + k_t[:, None] v_t[None, :],      d_t = exp(-exp(w_t))

RWKV-6's w is data-dependent ([B, T, H, N]); RWKV-5's is one [H, N] table for all steps.
"""

from __future__ import annotations

import torch

from rwkv_tui.kernels.wkv7_reference import state_dtype


def wkv6_sequential(r, w, k, v, u, state=None):
    """r, w, k, v: [B, T, H, N]; u: [H, N]; state: [B, H, N, N] or None. Returns (y, state)."""
    B, T, H, N = r.shape
    dt, out_dtype = state_dtype(r.dtype), r.dtype
    r, k, v, u = (x.to(dt) for x in (r, k, v, u))
    decay = torch.exp(-torch.exp(w.to(dt))).expand(B, T, H, N)
    S = torch.zeros(B, H, N, N, dtype=dt, device=r.device) if state is None else state.to(dt)
    ys = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        ys.append((r[:, t, :, None, :] @ (u[None, :, :, None] * kv + S)).squeeze(-2))
        S = decay[:, t, :, :, None] * S + kv
    return torch.stack(ys, dim=1).to(out_dtype), S


def wkv5_sequential(r, w, k, v, u, state=None):
    """RWKV-5.2: as `wkv6_sequential` with one decay table w [H, N] for every step."""
    return wkv6_sequential(r, w.expand(r.shape), k, v, u, state)
