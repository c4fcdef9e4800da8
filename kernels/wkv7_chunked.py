"""WKV7 in chunks: matrix products inside a chunk, the recurrence only between chunks.

Inside a chunk of L steps starting from state S0, write c_t for the cumulative
log-decay (c_0 = 0) and h_t = S_{t-1} a_t. Unrolling the recurrence gives

    S_t = S0 diag(e^{c_t}) + Σ_{s≤t} (h_s b_sᵀ + v_s k_sᵀ) diag(e^{c_t - c_s})
    h_t = S0 (a_t ⊙ e^{c_{t-1}}) + Σ_{s<t} h_s (b_s·ã_t) + v_s (k_s·ã_t),   ã_t = a_t ⊙ e^{c_{t-1}-c_s}

so the h's solve a unit lower-triangular system (the "WY" form) and y_t = S_t r_t is a
few matrix products. Everything that does not depend on S0 is computed for all chunks
at once; only `S0 -> S_L` runs sequentially, T/L times.

Numerics: the pairwise factors e^{c_{t-1} - c_s} are split as e^{c_{t-1} - m} · e^{m - c_s}
around the chunk's middle m, so each factor spans half a chunk. RWKV-7 bounds w ≤ -0.5,
i.e. a per-step log-decay ≥ -0.61, so with L = 32 no factor exceeds e^10; every term
involving S0 or the end-of-chunk state uses e^{c} or e^{c_L - c_s} ≤ 1 directly.
Faster decays stay exact while a half chunk's log-decay stays above about -80 (fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.wkv7_reference import state_dtype

CHUNK = 32


def wkv7_chunked(r, w, k, v, a, b, state=None, chunk: int = CHUNK):
    """Same contract as `wkv7_sequential`; any T (the tail chunk is padded with identity steps)."""
    B, T, H, N = r.shape
    dt = state_dtype(r.dtype)
    out_dtype = r.dtype
    r, k, v, a, b = (x.to(dt) for x in (r, k, v, a, b))
    log_decay = -torch.exp(w.to(dt))
    L = chunk
    pad = (-T) % L
    if pad:  # zero inputs and log-decay 0 (decay 1) leave the state untouched
        r, k, v, a, b, log_decay = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (r, k, v, a, b, log_decay))
    n_chunks = (T + pad) // L

    def split(x):  # [B, T, H, N] -> [B, H, n_chunks, L, N]
        return x.view(B, n_chunks, L, H, N).permute(0, 3, 1, 2, 4)

    r, k, v, a, b, log_decay = (split(x) for x in (r, k, v, a, b, log_decay))
    c = log_decay.cumsum(dim=-2)           # c_t, t = 1..L
    c_prev = c - log_decay                 # c_{t-1}
    mid = c[..., L // 2 - 1: L // 2, :]    # per-channel offset keeping both factors small

    a_in, r_in = a * torch.exp(c_prev - mid), r * torch.exp(c - mid)
    b_in, k_in = b * torch.exp(mid - c), k * torch.exp(mid - c)
    a_from_s0, r_from_s0 = a * torch.exp(c_prev), r * torch.exp(c)
    to_end = torch.exp(c[..., -1:, :] - c)  # decay from step s to the chunk's end, ≤ 1
    b_to_end, k_to_end = b * to_end, k * to_end
    chunk_decay = torch.exp(c[..., -1, :])  # [B, H, n_chunks, N]

    strict = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(-1)
    causal = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(0)
    m_ab = (a_in @ b_in.transpose(-1, -2)).masked_fill(~strict, 0.0)
    m_ak = (a_in @ k_in.transpose(-1, -2)).masked_fill(~strict, 0.0)
    m_rb = (r_in @ b_in.transpose(-1, -2)).masked_fill(~causal, 0.0)
    m_rk = (r_in @ k_in.transpose(-1, -2)).masked_fill(~causal, 0.0)

    # h = (I - m_ab)^-1 (a_from_s0 S0ᵀ + m_ak v): solve once for both right-hand sides.
    eye = torch.eye(L, dtype=dt, device=r.device)
    rhs = torch.cat([a_from_s0, m_ak @ v], dim=-1)
    solved = torch.linalg.solve_triangular(eye - m_ab, rhs, upper=False, unitriangular=True)
    h_from_s0, h_intra = solved[..., :N], solved[..., N:]
    y_intra = m_rk @ v + m_rb @ h_intra
    y_from_s0 = r_from_s0 + m_rb @ h_from_s0  # y = y_from_s0 S0ᵀ + y_intra

    S = torch.zeros(B, H, N, N, dtype=dt, device=r.device) if state is None else state.to(dt)
    ys = []
    for i in range(n_chunks):
        s0_t = S.transpose(-1, -2)                       # [B, H, N(key), N(value)]
        h = h_from_s0[:, :, i] @ s0_t + h_intra[:, :, i]  # rows h_tᵀ, [B, H, L, N(value)]
        ys.append(y_from_s0[:, :, i] @ s0_t + y_intra[:, :, i])
        S = (S * chunk_decay[:, :, i, None, :]
             + h.transpose(-1, -2) @ b_to_end[:, :, i]
             + v[:, :, i].transpose(-1, -2) @ k_to_end[:, :, i])
    y = torch.stack(ys, dim=2)                            # [B, H, n_chunks, L, N]
    y = y.permute(0, 2, 3, 1, 4).reshape(B, n_chunks * L, H, N)[:, :T]
    return y.to(out_dtype), S
