"""WKV7 in chunks: matrix products inside a chunk, one small recurrence between chunks.

Inside a chunk of L steps starting from state S0, write c_t for the cumulative
log-decay (c_0 = 0) and h_t = S_{t-1} a_t. Unrolling the recurrence gives

    S_t = S0 diag(e^{c_t}) + Σ_{s≤t} (h_s b_sᵀ + v_s k_sᵀ) diag(e^{c_t - c_s})
    h_t = S0 (a_t ⊙ e^{c_{t-1}}) + Σ_{s<t} h_s (b_s·ã_t) + v_s (k_s·ã_t),   ã_t = a_t ⊙ e^{c_{t-1}-c_s}

so the h's solve a unit lower-triangular system (the "WY" form), and both the outputs
y_t = S_t r_t and the end state are linear in S0:

    y = Y0 S0ᵀ + Y1        S_L = S0 A + U        (A, U, Y0, Y1 do not depend on S0)

Everything except S0 is computed for all chunks at once; the only sequential work is
S ← S A_i + U_i, one [N, N] product per chunk.

Numerics: no cumulative decay is ever divided by. The pairwise factors e^{c_{t-1} - c_s}
are split as e^{c_{t-1} - m} · e^{m - c_s} around the chunk's middle m, so each factor
spans at most half a chunk; terms with S0 or the chunk's end use e^{c} or e^{c_L - c_s}
≤ 1 directly. RWKV-7 bounds w ≤ -0.5 (a per-step log-decay ≥ -0.61), so with L = 32 no
factor exceeds e^10. For inputs outside that range the chunk is shortened until every
factor stays below e^HALF_CHUNK_LOG_BUDGET, so the result stays exact rather than
overflowing; per-step log-decays below -MAX_STEP_LOG_DECAY (decay < 4e-18, zero at fp64
precision) are clamped to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rwkv_tui.kernels.wkv7_reference import state_dtype

CHUNK = 32
# Largest exponent of a split factor. e^40 leaves fp32 ample room, and e^40 · e^40 keeps
# even the discarded (non-causal) entries of the chunk's pair matrices finite.
HALF_CHUNK_LOG_BUDGET = 40.0
MAX_STEP_LOG_DECAY = 40.0


def safe_chunk_length(log_decay: torch.Tensor, chunk: int) -> int:
    """The largest power-of-two chunk ≤ `chunk` whose half spans at most the log budget."""
    fastest = float(-log_decay.min()) if log_decay.numel() else 0.0
    length = chunk
    while length > 2 and (length // 2) * fastest > HALF_CHUNK_LOG_BUDGET:
        length //= 2
    return length


def wkv7_chunked(r, w, k, v, a, b, state=None, chunk: int = CHUNK, state_pass=None):
    """Same contract as `wkv7_sequential`; any T (the tail chunk is padded with identity steps).
    `state_pass(S0 or None, A, U) -> (chunk starts, final state)` replaces the loop over chunks
    (kernels/chunk_state_pass.py does it in one GPU kernel)."""
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two ≥ 2, not {chunk}")
    B, T, H, N = r.shape
    dt = state_dtype(r.dtype)
    out_dtype = r.dtype
    r, k, v, a, b = (x.to(dt) for x in (r, k, v, a, b))
    log_decay = (-torch.exp(w.to(dt))).clamp(min=-MAX_STEP_LOG_DECAY)
    L = safe_chunk_length(log_decay.detach(), chunk)
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

    from_mid = torch.exp(mid - c)
    a_in, r_in = a * torch.exp(c_prev - mid), r * torch.exp(c - mid)
    b_in, k_in = b * from_mid, k * from_mid
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

    # Rows h_tᵀ = h_from_s0 S0ᵀ + h_intra, with h = (I - m_ab)^-1 (a_from_s0 S0ᵀ + m_ak v):
    # one triangular solve serves both right-hand sides.
    eye = torch.eye(L, dtype=dt, device=r.device)
    rhs = torch.cat([a_from_s0, m_ak @ v], dim=-1)
    solved = torch.linalg.solve_triangular(eye - m_ab, rhs, upper=False, unitriangular=True)
    h_from_s0, h_intra = solved[..., :N], solved[..., N:]
    y_from_s0 = r_from_s0 + m_rb @ h_from_s0    # y = y_from_s0 S0ᵀ + y_intra
    y_intra = m_rk @ v + m_rb @ h_intra

    # S_L = S0 diag(decay) + hᵀ b_to_end + vᵀ k_to_end, regrouped as S0 A + U.
    transition = torch.diag_embed(chunk_decay) + h_from_s0.transpose(-1, -2) @ b_to_end
    update = h_intra.transpose(-1, -2) @ b_to_end + v.transpose(-1, -2) @ k_to_end

    if state_pass is not None:
        starts, S = state_pass(None if state is None else state.to(dt), transition, update)
    else:
        S = torch.zeros(B, H, N, N, dtype=dt, device=r.device) if state is None else state.to(dt)
        starts = []
        # unbind (not indexing in the loop): autograd then stacks the per-chunk gradients
        # once instead of materialising a full-size zero gradient for every chunk.
        for transition_i, update_i in zip(transition.unbind(2), update.unbind(2)):
            starts.append(S)
            S = S @ transition_i + update_i
        starts = torch.stack(starts, dim=2)
    s0_t = starts.transpose(-1, -2)  # [B, H, n_chunks, N(key), N(value)]
    y = y_from_s0 @ s0_t + y_intra                       # [B, H, n_chunks, L, N]
    y = y.permute(0, 2, 3, 1, 4).reshape(B, n_chunks * L, H, N)[:, :T]
    return y.to(out_dtype), S
