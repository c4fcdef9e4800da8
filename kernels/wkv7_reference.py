"""The WKV7 recurrence, one step at a time: slow, exact, the oracle for every faster op.

For each batch and head, with the state S [N, N] value-major (S[i, j]: value i, key j):

    S_t = S_{t-1} * d_t[None, :] + (S_{t-1} @ a_t)[:, None] * b_t[None, :] + v_t[:, None] * k_t[None, :]
    y_t = S_t @ r_t,        d_t = exp(-exp(w_t))
"""

from __future__ import annotations

import torch


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The state is kept in fp32 (fp64 for fp64 inputs) whatever the input precision."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def wkv7_sequential(r, w, k, v, a, b, state=None):
    """r, w, k, v, a, b: [B, T, H, N]; state: [B, H, N, N] or None. Returns (y [B,T,H,N], state)."""
    B, T, H, N = r.shape
    dt, out_dtype = state_dtype(r.dtype), r.dtype
    r, k, v, a, b = (x.to(dt) for x in (r, k, v, a, b))
    decay = torch.exp(-torch.exp(w.to(dt)))
    S = torch.zeros(B, H, N, N, dtype=dt, device=r.device) if state is None else state.to(dt)
    ys = []
    for t in range(T):
        S = (S * decay[:, t, :, None, :]
             + (S @ a[:, t, :, :, None]) * b[:, t, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, dim=1).to(out_dtype), S
