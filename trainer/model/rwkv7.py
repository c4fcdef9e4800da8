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
from rwkv_tui.kernels.block7_cpu import CpuBlock
from rwkv_tui.kernels.wkv7_reference import state_dtype
from rwkv_tui.trainer.model.layers import token_shift
from rwkv_tui.trainer.model.one_token import (block7_one, channel_mix7_hidden, compiled, fused_decoding,
                                               plain_linears, time_mix7_one, wkv7_step)
from rwkv_tui.trainer.spec import ModelSpec

def project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x); a plain linear layer through kernels.inference_linear (oneDNN's GEMM for CPU
    inference), a wrapped or quantized one through its own forward."""
    if type(layer) is nn.Linear and layer.bias is None:
        return kernels.inference_linear(x, layer.weight)
    return layer(x)


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
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, xx, mix) for mix in (self.x_r, self.x_w, self.x_k, self.x_v,
                                                                        self.x_a, self.x_g))

        r = project(self.receptance, xr)
        # log(-log(decay)), bounded above by -0.5 so every decay stays below exp(-exp(-0.5));
        # logsigmoid(z) is RWKV-LM's -softplus(-z), in one operator instead of three.
        w = F.logsigmoid(self.w0 + torch.tanh(xw @ self.w1) @ self.w2) - 0.5
        k = project(self.key, xk)
        v = project(self.value, xv)
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
        return project(self.output, y * g), v_first, x[:, -1], wkv_state

    def decode_fused(self, x, v_first, x_prev, wkv_state):
        """forward() for one token at inference, as one compiled function (one_token.py says why)."""
        row = x[:, 0]
        out, wkv_state, v_first = compiled(time_mix7_one)(
            self.layer_id, self.n_head, self.head_size, row, *self.decode_states(row, v_first, x_prev, wkv_state),
            *self.decode_weights())
        return out.unsqueeze(1), v_first.unsqueeze(1), row, wkv_state

    def decode_states(self, row, v_first, x_prev, wkv_state) -> tuple:
        """time_mix7_one's per-token arguments (x_prev, v_first, state) for the token `row` [B, C],
        missing ones filled in: zeros, layer 0's placeholder v_first, the tuned or zero state."""
        if wkv_state is None:
            wkv_state = self.initial_wkv_state(row.shape[0])
        if wkv_state is None:
            wkv_state = torch.zeros(row.shape[0], self.n_head, self.head_size, self.head_size, device=row.device,
                                    dtype=state_dtype(row.dtype))
        return (torch.zeros_like(row) if x_prev is None else x_prev, row if v_first is None else v_first[:, 0],
                wkv_state.to(state_dtype(row.dtype)))

    def decode_weights(self) -> tuple:
        """time_mix7_one's arguments that stay the same from token to token: the layer's weights."""
        mixes = (self.v0, self.v1, self.v2) if self.layer_id > 0 else (self.w0, self.w1, self.w2)  # unused at 0
        return (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g, self.w0, self.w1, self.w2,
                self.a0, self.a1, self.a2, *mixes, self.g1, self.g2, self.k_k, self.k_a, self.r_k,
                self.receptance.weight, self.key.weight, self.value.weight, self.output.weight,
                self.ln_x.weight, self.ln_x.bias)


def block_decode_weights(block: nn.Module) -> tuple | None:
    """block7_one's arguments that stay the same from token to token (norms, then the mixes'
    weights), or None where the compiled path does not apply (wrapped or quantized layers)."""
    att, ffn = block.att, block.ffn
    if not plain_linears(att.receptance, att.key, att.value, att.output, ffn.key, ffn.value):
        return None
    return (block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, block.ln1.eps,
            *att.decode_weights(), ffn.x_k, ffn.key.weight)


def cpu_block(block: nn.Module, fixed: tuple | None) -> CpuBlock | None:
    """The block (with its block_decode_weights) as one C call (kernels.block7_cpu) for decoding
    on the CPU in fp32, or None where that does not apply: wrapped layers, other dtypes, linear
    weights not stored column-major (chat.lay_out_for_decoding stores them so), no C compiler."""
    if fixed is None:
        return None
    ln1_w, ln1_b, ln2_w, ln2_b, ln_eps, *weights, ffn_x_k, ffn_key = fixed
    ffn_value = block.ffn.value.weight
    sources = (ln1_w, ln1_b, ln2_w, ln2_b, *weights, ffn_x_k, ffn_key, ffn_value)
    linear = {id(layer.weight) for layer in (block.att.receptance, block.att.key, block.att.value, block.att.output,
                                             block.ffn.key, block.ffn.value)}
    rows = [w.t() if id(w) in linear else w for w in sources]  # every matrix as [in, out] rows
    att = block.att
    dims = (att.n_head * att.head_size, att.n_head, att.head_size, ffn_key.shape[0], att.w1.shape[1],
            att.a1.shape[1], (att.v1 if att.layer_id > 0 else att.w1).shape[1], att.g1.shape[1], att.layer_id)
    return CpuBlock.build(sources, rows, dims, ln_eps, att.ln_x.eps)


def freeze_for_decoding(block: nn.Module) -> None:
    """Keep block_decode_weights on the block (looking the ~30 weights up again costs ~40 us a
    layer per token) and, on the CPU, the block as one C call. Only for a block whose modules
    are not replaced afterwards (chat's models)."""
    block.frozen_decode_weights = fixed = block_decode_weights(block)
    block.cpu_decode = cpu_block(block, fixed) if block.ln1.weight.device.type == "cpu" else None


def decode_block7(block: nn.Module, x: torch.Tensor, v_first: torch.Tensor | None, state) -> tuple | None:
    """An RWKV-7 Block.forward for one token at inference as one C call (cpu_block, where
    frozen) or one compiled call (block7_one), or None where neither applies (training,
    several tokens, wrapped or quantized layers)."""
    if x.shape[1] != 1 or not fused_decoding(x):
        return None
    fixed = block.__dict__.get("frozen_decode_weights") or block_decode_weights(block)
    if fixed is None:
        return None
    att = block.att
    att_prev, wkv, ffn_prev = state if state is not None else (None, None, None)
    row = x[:, 0]
    # The row stands in for ln1's output (computed inside block7_one): decode_states only takes
    # its shape and dtype, for a missing x_prev's zeros and layer 0's v_first placeholder.
    att_prev, v_first, wkv = att.decode_states(row, v_first, att_prev, wkv)
    ffn_prev = torch.zeros_like(row) if ffn_prev is None else ffn_prev
    in_c = block.__dict__.get("cpu_decode")
    if in_c is not None and row.shape[0] == 1 and row.dtype == torch.float32 and in_c.current():
        out, v_first, att_last, wkv, ffn_last = in_c(row, v_first, att_prev, wkv, ffn_prev)
    else:
        x, hidden, v_first, att_last, wkv, ffn_last = compiled(block7_one)(
            att.layer_id, att.n_head, att.head_size, row, v_first, att_prev, wkv, ffn_prev, *fixed)
        out = x + kernels.value_product(hidden, block.ffn.value.weight)
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
            hidden = compiled(channel_mix7_hidden)(row, torch.zeros_like(row) if x_prev is None else x_prev,
                                                   self.x_k, self.key.weight)
            return kernels.value_product(hidden, self.value.weight).unsqueeze(1), row
        k = project(self.key, torch.addcmul(x, token_shift(x, x_prev), self.x_k))
        if torch.is_grad_enabled():  # relu², as a product: pow(k, 2) costs ~4x a multiply on the CPU
            k = torch.relu(k)
            k = k * k
        else:  # inference: in place, on the product still in cache, instead of two fresh [T, 4C] buffers
            k = torch.relu_(k).mul_(k)
        return project(self.value, k), x[:, -1]
