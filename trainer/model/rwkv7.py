"""RWKV-7 ("x070", Goose) as a trainable `nn.Module`.

Parameter names equal the official checkpoint keys (`blocks.3.att.w1`, `head.weight`, …),
so `state_dict()` is a file the `rwkv` pip package loads and `load_state_dict` takes an
official release as is. All WKV math goes through `kernels.wkv7`, which picks the op.

State, per layer: `(att_x_prev [B,C], wkv [B,H,N,N] fp32 value-major, ffn_x_prev [B,C])`:
the same three tensors the `rwkv` package keeps as `state[3*i+0..2]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import kernels
from trainer.spec import ModelSpec

LayerState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def token_shift(x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
    """`shift(x) - x`: the previous token's features minus this token's."""
    if x_prev is None:
        x_prev = torch.zeros_like(x[:, 0])
    shifted = torch.cat((x_prev.unsqueeze(1), x[:, :-1]), dim=1)
    return shifted - x


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

        if wkv_state is None and self.time_state is not None:
            wkv_state = self.time_state.float().unsqueeze(0).expand(B, H, N, N)
        heads = (B, T, H, N)
        out = kernels.wkv7(
            r.view(heads), w.view(heads), k.view(heads), v.view(heads),
            -kk, kk * a.view(heads), state=wkv_state, op=self.op,
        )
        self.last_op = out.op

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


class Block7(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(spec.n_embd)
        self.ln1 = nn.LayerNorm(spec.n_embd)
        self.ln2 = nn.LayerNorm(spec.n_embd)
        self.att = TimeMix7(spec, layer_id)
        self.ffn = ChannelMix7(spec)

    def forward(
        self, x: torch.Tensor, v_first: torch.Tensor | None, state: LayerState | None
    ) -> tuple[torch.Tensor, torch.Tensor, LayerState]:
        att_prev, wkv, ffn_prev = state if state is not None else (None, None, None)
        if self.layer_id == 0:
            x = self.ln0(x)
        dx, v_first, att_last, wkv = self.att(self.ln1(x), v_first, att_prev, wkv)
        x = x + dx
        dx, ffn_last = self.ffn(self.ln2(x), ffn_prev)
        x = x + dx
        return x, v_first, (att_last, wkv, ffn_last)


class RWKV7(nn.Module):
    """`forward(idx [B,T], state=None) -> (logits [B,T,V], state)`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.version != "x070":
            raise ValueError(f"RWKV7 builds x070 models, not {spec.version}")
        self.spec = spec
        self.emb = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.blocks = nn.ModuleList(Block7(spec, i) for i in range(spec.n_layer))
        self.ln_out = nn.LayerNorm(spec.n_embd)
        self.head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        self.gradient_checkpointing = False

    @property
    def wkv_op(self) -> str:
        """The WKV op requested ("auto", "torch", "cuda", …) for every layer."""
        return self.blocks[0].att.op

    @wkv_op.setter
    def wkv_op(self, op: str) -> None:
        for block in self.blocks:
            block.att.op = op

    @property
    def last_wkv_op(self) -> str | None:
        """The op that actually ran in the last forward pass (what "auto" resolved to)."""
        return self.blocks[0].att.last_op

    def forward(
        self, idx: torch.Tensor, state: list[LayerState] | None = None
    ) -> tuple[torch.Tensor, list[LayerState]]:
        x = self.emb(idx)
        v_first = None
        new_state: list[LayerState] = []
        # Recompute each block in backward instead of storing its activations: the
        # VRAM saving that makes 1.5B+ fine-tunes fit on consumer GPUs.
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            layer_state = state[i] if state is not None else None
            if use_checkpoint:
                x, v_first, layer_state = checkpoint(block, x, v_first, layer_state, use_reentrant=False)
            else:
                x, v_first, layer_state = block(x, v_first, layer_state)
            new_state.append(layer_state)
        return self.head(self.ln_out(x)), new_state

    def initial_state(self, batch_size: int = 1) -> list[LayerState]:
        """The state a sequence starts from: zeros, or the tuned `time_state` where one is loaded."""
        spec = self.spec
        device, dtype = self.emb.weight.device, self.emb.weight.dtype
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        state = []
        for block in self.blocks:
            tuned = block.att.time_state
            wkv = (tuned.detach().float().unsqueeze(0).repeat(batch_size, 1, 1, 1) if tuned is not None
                   else torch.zeros(batch_size, H, N, N, device=device, dtype=torch.float32))
            zeros = torch.zeros(batch_size, C, device=device, dtype=dtype)
            state.append((zeros, wkv, zeros.clone()))
        return state
