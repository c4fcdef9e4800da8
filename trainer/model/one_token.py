"""One token of the WKV recurrences, written out: what decoding (`model(idx[B,1], state)`) runs.

For a single token, a generic op (the chunked torch kernel pads to a whole chunk and solves a
triangular system; "auto" on a GPU measures the ops) costs many times the step itself, so
the time mixes call these when T == 1. The math is the loop body of the sequential references
(kernels/wkv7_reference.py, kernels/wkv6_reference.py), the state stays in fp32 whatever the
model's dtype, and the caller's state tensor is never written to (a carried chat state may be
reused, e.g. to answer the same message twice).
"""

from __future__ import annotations

import functools
import warnings

import torch

from rwkv_tui.kernels.wkv7_reference import state_dtype


def _zero_state(r: torch.Tensor) -> torch.Tensor:
    B, _, H, N = r.shape
    return torch.zeros(B, H, N, N, dtype=state_dtype(r.dtype), device=r.device)


def wkv7_step(r, w, k, v, a, b, state=None):
    """r, w, k, v, a, b: [B, 1, H, N] (w = log(-log(decay))); state [B, H, N, N] value-major or None.
    Returns (y [B, 1, H, N] in r's dtype, new state [B, H, N, N] fp32)."""
    out_dtype, dt = r.dtype, state_dtype(r.dtype)
    S = _zero_state(r) if state is None else state.to(dt)
    r, w, k, v, a, b = (t[:, 0].to(dt) for t in (r, w, k, v, a, b))
    decay = torch.exp(-torch.exp(w))
    # S * d[None, :] + (S a)[:, None] b[None, :] + v[:, None] k[None, :], per batch and head
    S = S * decay.unsqueeze(-2) + (S @ a.unsqueeze(-1)) * b.unsqueeze(-2) + v.unsqueeze(-1) * k.unsqueeze(-2)
    y = (S @ r.unsqueeze(-1)).squeeze(-1)  # [B, H, N]
    return y.unsqueeze(1).to(out_dtype), S


def wkv6_step(r, w, k, v, u, state=None):
    """RWKV-6 (w [B, 1, H, N]) and RWKV-5 (w one [H, N] table): r, k, v [B, 1, H, N], bonus u [H, N];
    state [B, H, N, N] key-major or None. Returns (y [B, 1, H, N] in r's dtype, new state fp32)."""
    out_dtype, dt = r.dtype, state_dtype(r.dtype)
    S = _zero_state(r) if state is None else state.to(dt)
    w = w[:, 0] if w.dim() == 4 else w
    r, k, v = (t[:, 0].to(dt) for t in (r, k, v))
    decay = torch.exp(-torch.exp(w.to(dt)))
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)
    y = r.unsqueeze(-2) @ (u.to(dt).unsqueeze(-1) * kv + S)  # [B, H, 1, N]
    return y.transpose(1, 2).to(out_dtype), decay.unsqueeze(-1) * S + kv


# ---- RWKV-7's whole time mix and channel mix for one token, compiled with TorchScript -------
# Decoding a token runs ~90 small ops per layer; eager dispatch of each costs about as much as
# the arithmetic at chat sizes, so the `rwkv` package runs these as TorchScript functions, and so
# do we: same math as TimeMix7/ChannelMix7.forward (+ wkv7_step), on [B, C] rows. Used only for
# inference (no grad, no autocast) on plain nn.Linear weights (not LoRA-wrapped or quantized
# layers, which keep the module path). torch.compile would need a C++ compiler and a long
# warm-up on the CPU; where TorchScript is gone, the same functions run eagerly.

def time_mix7_one(layer_id: int, H: int, N: int, x, x_prev, v_first, state,
                  x_r, x_w, x_k, x_v, x_a, x_g, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2,
                  k_k, k_a, r_k, R, K, V, O, ln_w, ln_b):
    B, C = x.shape
    dt = state.dtype
    xx = x_prev - x
    xr, xw = torch.addcmul(x, xx, x_r.view(C)), torch.addcmul(x, xx, x_w.view(C))
    xk, xv = torch.addcmul(x, xx, x_k.view(C)), torch.addcmul(x, xx, x_v.view(C))
    xa, xg = torch.addcmul(x, xx, x_a.view(C)), torch.addcmul(x, xx, x_g.view(C))
    r = torch.nn.functional.linear(xr, R)
    w = torch.nn.functional.logsigmoid(w0.view(C) + torch.tanh(xw @ w1) @ w2) - 0.5
    k = torch.nn.functional.linear(xk, K)
    v = torch.nn.functional.linear(xv, V)
    if layer_id == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(v0.view(C) + (xv @ v1) @ v2)
    a = torch.sigmoid(a0.view(C) + (xa @ a1) @ a2)
    g = torch.sigmoid(xg @ g1) @ g2
    kk = torch.nn.functional.normalize((k * k_k.view(C)).view(B, H, N), dim=-1, p=2.0)
    k = k * (1 + (a - 1) * k_a.view(C))
    b = (kk * a.view(B, H, N)).to(dt)
    decay = torch.exp(-torch.exp(w.view(B, H, 1, N).to(dt)))
    S = (state * decay - (state @ kk.to(dt).unsqueeze(-1)) * b.unsqueeze(-2)
         + v.view(B, H, N, 1).to(dt) * k.view(B, H, 1, N).to(dt))
    y = (S @ r.view(B, H, N, 1).to(dt)).view(B, C).to(x.dtype)
    y = torch.nn.functional.group_norm(y, H, ln_w, ln_b, 64e-5)
    y = y + ((r * k * r_k.view(C)).view(B, H, N).sum(dim=-1, keepdim=True) * v.view(B, H, N)).view(B, C)
    return torch.nn.functional.linear(y * g, O), S, v_first


def channel_mix7_hidden(x, x_prev, x_k, K):
    """The channel mix up to its value product: relu(key(shifted x))², [B, 4C], about half of it 0.
    The caller multiplies by the value weight (kernels.value_product skips those rows)."""
    k = torch.relu(torch.nn.functional.linear(torch.addcmul(x, x_prev - x, x_k.view(-1)), K))
    return k * k


def block7_one(layer_id: int, H: int, N: int, x, v_first, att_prev, wkv, ffn_prev, ln1_w, ln1_b, ln2_w, ln2_b,
               eps: float, x_r, x_w, x_k, x_v, x_a, x_g, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2,
               k_k, k_a, r_k, R, K, V, O, ln_w, ln_b, ffn_x_k, ffn_K):
    """Block.forward for one token (ln1, time mix, ln2, channel mix) as one call, up to the
    channel mix's value product: the per-module calls around the two mixes cost a few percent of
    a token at chat sizes. Returns (x after the time mix, the channel mix's hidden, v_first,
    att_in, wkv, ffn_in); the block's output is x + value(hidden)."""
    C = x.shape[1]
    att_in = torch.nn.functional.layer_norm(x, [C], ln1_w, ln1_b, eps)
    dx, wkv, v_first = time_mix7_one(layer_id, H, N, att_in, att_prev, v_first, wkv, x_r, x_w, x_k, x_v, x_a, x_g,
                                     w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2, k_k, k_a, r_k, R, K, V, O,
                                     ln_w, ln_b)
    x = x + dx
    ffn_in = torch.nn.functional.layer_norm(x, [C], ln2_w, ln2_b, eps)
    return x, channel_mix7_hidden(ffn_in, ffn_prev, ffn_x_k, ffn_K), v_first, att_in, wkv, ffn_in


@functools.cache
def compiled(function):
    """`function` as TorchScript (compiled once, on first use), or itself where that fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is in maintenance, still shipped
            return torch.jit.script(function)
    except Exception:  # noqa: BLE001 - a torch without TorchScript: the eager function is the same math
        return function


def plain_linears(*layers) -> bool:
    """Whether every layer is a plain nn.Linear (not LoRA-wrapped or quantized)."""
    return all(type(layer) is torch.nn.Linear for layer in layers)


def fused_decoding(x: torch.Tensor, *linears) -> bool:
    """Whether this one-token call may take the compiled path: inference on plain linear layers."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type) and plain_linears(*linears)
