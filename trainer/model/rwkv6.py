"""RWKV-6 ("x060", Finch) and RWKV-5.2 ("x052", Eagle) time mixes.

Both keep a [H, N, N] WKV state per layer with a per-channel "bonus" u (`time_faaaa`) for
the current token; RWKV-6 makes the decay and the token-shift mix data-dependent (low-rank
`time_maa_w1/w2`, `time_decay_w1/w2`), RWKV-5 keeps them per channel. Parameter names equal
the official keys. The state is key-major ([B,H,N(key),N(value)]), as the `rwkv` package
keeps `state[3*i+1]` for these versions; a tuned `time_state` is stored value-major (the
file layout RWKV Runner transposes on load), so it is transposed on the way in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_tui import kernels
from rwkv_tui.trainer.model.layers import token_shift
from rwkv_tui.trainer.model.one_token import wkv6_step
from rwkv_tui.trainer.spec import ModelSpec


class _TimeMixHeads(nn.Module):
    """The parts RWKV-5 and 6 share: r/k/v/gate/output maps, bonus, group norm, state hook."""

    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__()
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        self.layer_id = layer_id
        self.n_head, self.head_size = H, N
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)
        self.register_parameter("time_state", None)  # state tuning, see rwkv7.TimeMix7
        self.op = "auto"
        self.last_op: str | None = None
        self.last_op_trials_ms: dict = {}  # what op="auto" measured to pick last_op, if anything

    def initial_wkv_state(self, batch: int) -> torch.Tensor | None:
        if self.time_state is None:
            return None
        H, N = self.n_head, self.head_size
        return self.time_state.float().transpose(-1, -2).unsqueeze(0).expand(batch, H, N, N)

    def wkv(self, family, r, w, k, v, wkv_state):
        """(y, state) of kernels.wkv6/wkv5 on [B, T, H, N] inputs; one token (decoding) runs the
        written-out step instead (one_token.py says why), leaving last_op the training op's."""
        if wkv_state is None:
            wkv_state = self.initial_wkv_state(r.shape[0])
        if r.shape[1] == 1:
            return wkv6_step(r, w, k, v, self.time_faaaa, state=wkv_state)
        out = family(r, w, k, v, self.time_faaaa, state=wkv_state, op=self.op)
        self.last_op, self.last_op_trials_ms = out.op, out.trials_ms
        return out.y, out.state

    def finish(self, y: torch.Tensor, g: torch.Tensor, shape) -> torch.Tensor:
        B, T, C = shape
        return self.output(self.ln_x(y.reshape(B * T, C)).view(B, T, C) * g)


class TimeMix6(_TimeMixHeads):
    """RWKV-6: data-dependent token shift (5 mixes through one low-rank map) and decay."""

    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__(spec, layer_id)
        C = spec.n_embd

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.empty(1, 1, C))

        self.time_maa_x, self.time_maa_w, self.time_maa_k = vec(), vec(), vec()
        self.time_maa_v, self.time_maa_r, self.time_maa_g = vec(), vec(), vec()
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * spec.d_mix))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, spec.d_mix, C))
        self.time_decay = vec()
        self.time_decay_w1 = nn.Parameter(torch.empty(C, spec.d_decay))
        self.time_decay_w2 = nn.Parameter(torch.empty(spec.d_decay, C))

    def forward(self, x, v_first, x_prev, wkv_state):
        B, T, C = x.shape
        xx = token_shift(x, x_prev)
        low_rank = torch.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)
        mw, mk, mv, mr, mg = torch.bmm(low_rank, self.time_maa_w2).view(5, B, T, C).unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        r = self.receptance(x + xx * (self.time_maa_r + mr))
        k = self.key(x + xx * (self.time_maa_k + mk))
        v = self.value(x + xx * (self.time_maa_v + mv))
        g = F.silu(self.gate(x + xx * (self.time_maa_g + mg)))
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2  # log(-log(decay))

        heads = (B, T, self.n_head, self.head_size)
        y, wkv_state = self.wkv(kernels.wkv6, r.view(heads), w.view(heads), k.view(heads), v.view(heads), wkv_state)
        return self.finish(y, g, (B, T, C)), v_first, x[:, -1], wkv_state


class TimeMix5(_TimeMixHeads):
    """RWKV-5.2: fixed per-channel token-shift mixes and per-head-channel decays."""

    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__(spec, layer_id)
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        self.time_mix_k, self.time_mix_v, self.time_mix_r, self.time_mix_g = (
            nn.Parameter(torch.empty(1, 1, C)) for _ in range(4))
        self.time_decay = nn.Parameter(torch.empty(H, N))

    def forward(self, x, v_first, x_prev, wkv_state):
        B, T, C = x.shape
        shifted = x + token_shift(x, x_prev)

        def mix(m):
            return x * m + shifted * (1 - m)

        r = self.receptance(mix(self.time_mix_r))
        k = self.key(mix(self.time_mix_k))
        v = self.value(mix(self.time_mix_v))
        g = F.silu(self.gate(mix(self.time_mix_g)))

        heads = (B, T, self.n_head, self.head_size)
        y, wkv_state = self.wkv(kernels.wkv5, r.view(heads), self.time_decay, k.view(heads), v.view(heads), wkv_state)
        return self.finish(y, g, (B, T, C)), v_first, x[:, -1], wkv_state
