"""RWKV-7 ("x070", Goose): its time mix and channel mix (the model around them is lm.py).

Parameter names equal the official checkpoint keys (`blocks.3.att.w1`, …). All WKV math
goes through `kernels.wkv7`, which picks the op. The WKV state is [B,H,N,N] fp32
value-major, as the `rwkv` package keeps it in `state[3*i+1]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_tui import kernels
from rwkv_tui.kernels.wkv7_reference import state_dtype
from rwkv_tui.trainer.model.layers import token_shift
from rwkv_tui.trainer.model.one_token import (block7_one, channel_mix7_one, compiled, fused_decoding, time_mix7_one,
                                               wkv7_step)
from rwkv_tui.trainer.spec import ModelSpec

class TimeMix7(nn.Module):
    """The RWKV-7 attention replacement: token shift, low-rank gates, the WKV7 recurrence."""

    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__()
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        self.layer_id = layer_id
        self.n_head, self.head_size = H, N

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.empty(1, 1, C))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.a0, self.k_k, self.k_a = vec(), vec(), vec(), vec()
        self.w1 = nn.Parameter(torch.empty(C, spec.d_decay))
        self.w2 = nn.Parameter(torch.empty(spec.d_decay, C))
        self.a1 = nn.Parameter(torch.empty(C, spec.d_aaa))
        self.a2 = nn.Parameter(torch.empty(spec.d_aaa, C))
        if layer_id > 0:  # layer 0 defines v_first; later layers mix towards it
            self.v0 = vec()
            self.v1 = nn.Parameter(torch.empty(C, spec.d_mv))
            self.v2 = nn.Parameter(torch.empty(spec.d_mv, C))
        self.g1 = nn.Parameter(torch.empty(C, spec.d_gate))
        self.g2 = nn.Parameter(torch.empty(spec.d_gate, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        # State tuning registers a trainable [H,N,N] initial state here (saved as
        # `blocks.{i}.att.time_state`, the key RWKV Runner mounts); None otherwise.
        self.register_parameter("time_state", None)
        self.op = "auto"
        self.last_op: str | None = None
        self.last_op_trials_ms: dict = {}  # what op="auto" measured to pick last_op, if anything

    def initial_wkv_state(self, batch: int) -> torch.Tensor | None:
        """The tuned initial state for `batch` sequences, or None (zeros) when not state tuning."""
        if self.time_state is None:
            return None
        return self.time_state.float().unsqueeze(0).expand(batch, self.n_head, self.head_size, self.head_size)

    def forward(
        self,
        x: torch.Tensor,
        v_first: torch.Tensor | None,
        x_prev: torch.Tensor | None,
        wkv_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        if T == 1 and fused_decoding(x, self.receptance, self.key, self.value, self.output):
            return self.decode_fused(x, v_first, x_prev, wkv_state)
        xx = token_shift(x, x_prev)
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g

        r = self.receptance(xr)
        # log(-log(decay)), bounded above by -0.5 so every decay stays below exp(-exp(-0.5)).
        w = -F.softplus(-(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)) - 0.5
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)

        if wkv_state is None:
            wkv_state = self.initial_wkv_state(B)
        heads = (B, T, H, N)
        inputs = (r.view(heads), w.view(heads), k.view(heads), v.view(heads), -kk, kk * a.view(heads))
        if T == 1:  # one token (with gradients, or through wrapped layers): the step written out; last_op stays
            y, wkv_state = wkv7_step(*inputs, state=wkv_state)
        else:
            out = kernels.wkv7(*inputs, state=wkv_state, op=self.op)
            self.last_op, self.last_op_trials_ms = out.op, out.trials_ms
            y, wkv_state = out.y, out.state

        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(heads).sum(dim=-1, keepdim=True) * v.view(heads)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first, x[:, -1], wkv_state

    def decode_fused(self, x, v_first, x_prev, wkv_state):
        """forward() for one token at inference, as one compiled function (one_token.py says why)."""
        row = x[:, 0]
        out, wkv_state, v_first = compiled(time_mix7_one)(*self.fused_arguments(row, v_first, x_prev, wkv_state))
        return out.unsqueeze(1), v_first.unsqueeze(1), row, wkv_state

    def fused_arguments(self, row, v_first, x_prev, wkv_state) -> tuple:
        """time_mix7_one's arguments for the token `row` [B, C], missing states filled in."""
        B = row.shape[0]
        H, N = self.n_head, self.head_size
        if wkv_state is None:
            wkv_state = self.initial_wkv_state(B)
        if wkv_state is None:
            wkv_state = torch.zeros(B, H, N, N, device=row.device, dtype=state_dtype(row.dtype))
        mixes = (self.v0, self.v1, self.v2) if self.layer_id > 0 else (self.w0, self.w1, self.w2)  # unused at 0
        return (self.layer_id, H, N, row, torch.zeros_like(row) if x_prev is None else x_prev,  # none: zeros
                row if v_first is None else v_first[:, 0], wkv_state.to(state_dtype(row.dtype)),
                self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g, self.w0, self.w1, self.w2,
                self.a0, self.a1, self.a2, *mixes, self.g1, self.g2, self.k_k, self.k_a, self.r_k,
                self.receptance.weight, self.key.weight, self.value.weight, self.output.weight,
                self.ln_x.weight, self.ln_x.bias)


def decode_block7(block: nn.Module, x: torch.Tensor, v_first: torch.Tensor | None, state) -> tuple | None:
    """An RWKV-7 Block.forward for one token at inference as one compiled call (block7_one), or
    None where that path does not apply (training, several tokens, wrapped or quantized layers)."""
    att, ffn = block.att, block.ffn
    if x.shape[1] != 1 or not fused_decoding(x, att.receptance, att.key, att.value, att.output, ffn.key, ffn.value):
        return None
    att_prev, wkv, ffn_prev = state if state is not None else (None, None, None)
    row = x[:, 0]
    # The row stands in for ln1's output (computed inside block7_one): fused_arguments only takes
    # its shape and dtype, for a missing x_prev's zeros and layer 0's v_first placeholder.
    layer_id, H, N, _, att_prev, v_first, wkv, *weights = att.fused_arguments(row, v_first, att_prev, wkv)
    out, v_first, att_last, wkv, ffn_last = compiled(block7_one)(
        layer_id, H, N, row, v_first, att_prev, wkv, torch.zeros_like(row) if ffn_prev is None else ffn_prev,
        block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, block.ln1.eps, *weights,
        ffn.x_k, ffn.key.weight, ffn.value.weight)
    return out.unsqueeze(1), v_first.unsqueeze(1), (att_last, wkv, ffn_last)


class ChannelMix7(nn.Module):
    """The RWKV-7 feed-forward: token shift, then `value(relu(key(x))^2)`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, spec.n_embd))
        self.key = nn.Linear(spec.n_embd, spec.dim_ffn, bias=False)
        self.value = nn.Linear(spec.dim_ffn, spec.n_embd, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1 and fused_decoding(x, self.key, self.value):  # one token: one compiled function
            row = x[:, 0]
            out = compiled(channel_mix7_one)(row, torch.zeros_like(row) if x_prev is None else x_prev, self.x_k,
                                             self.key.weight, self.value.weight)
            return out.unsqueeze(1), row
        k = x + token_shift(x, x_prev) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2), x[:, -1]
