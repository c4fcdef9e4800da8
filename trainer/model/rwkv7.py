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
from rwkv_tui.trainer.model.layers import token_shift
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
        out = kernels.wkv7(
            r.view(heads), w.view(heads), k.view(heads), v.view(heads),
            -kk, kk * a.view(heads), state=wkv_state, op=self.op,
        )
        self.last_op, self.last_op_trials_ms = out.op, out.trials_ms

        y = self.ln_x(out.y.reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(heads).sum(dim=-1, keepdim=True) * v.view(heads)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first, x[:, -1], out.state


class ChannelMix7(nn.Module):
    """The RWKV-7 feed-forward: token shift, then `value(relu(key(x))^2)`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, spec.n_embd))
        self.key = nn.Linear(spec.n_embd, spec.dim_ffn, bias=False)
        self.value = nn.Linear(spec.dim_ffn, spec.n_embd, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        k = x + token_shift(x, x_prev) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2), x[:, -1]
