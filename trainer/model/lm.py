"""The RWKV language model around a generation's time mix and channel mix.

`RWKV(spec)` builds RWKV-7, 6 or 5 from `spec.version`; parameter names equal the official
checkpoint keys (`blocks.3.att.key.weight`, `head.weight`, …), so `state_dict()` is a file
the `rwkv` pip package loads and `load_state_dict` takes an official release as is.

State, per layer: `(att_x_prev [B,C], wkv [B,H,N,N] fp32, ffn_x_prev [B,C])`: the same three
tensors the `rwkv` package keeps as `state[3*i+0..2]` (the WKV layout is the package's:
value-major for RWKV-7, key-major for RWKV-6/5).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rwkv_tui.trainer.model.layers import GatedChannelMix, GatedChannelMix5
from rwkv_tui.trainer.model.rwkv6 import TimeMix5, TimeMix6
from rwkv_tui.trainer.model.rwkv7 import ChannelMix7, TimeMix7, decode_block7
from rwkv_tui.trainer.spec import ModelSpec

LayerState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# version -> (time mix, channel mix)
ARCHITECTURES = {
    "x070": (TimeMix7, ChannelMix7),
    "x060": (TimeMix6, GatedChannelMix),
    "x052": (TimeMix5, GatedChannelMix5),
}


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int) -> None:
        super().__init__()
        time_mix, channel_mix = ARCHITECTURES[spec.version]
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(spec.n_embd)
        self.ln1 = nn.LayerNorm(spec.n_embd)
        self.ln2 = nn.LayerNorm(spec.n_embd)
        self.att = time_mix(spec, layer_id)
        self.ffn = channel_mix(spec)

    def forward(
        self, x: torch.Tensor, v_first: torch.Tensor | None, state: LayerState | None, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, LayerState]:
        """`last_only`: return x for the last position alone ([B,1,C]); the state is the same."""
        if self.layer_id == 0:
            x = self.ln0(x)
        if type(self.att) is TimeMix7:  # one token at inference: the whole block as one compiled call
            fused = decode_block7(self, x, v_first, state)
            if fused is not None:
                return fused
        att_prev, wkv, ffn_prev = state if state is not None else (None, None, None)
        # v_first: RWKV-7's value residual from layer 0; the other versions pass it through.
        dx, v_first, att_last, wkv = self.att(self.ln1(x), v_first, att_prev, wkv)
        x = x + dx
        if last_only:  # the channel mix (a layer's largest products) on the last position and the one before,
            x = x[:, -2:]  # which its token shift reads
        dx, ffn_last = self.ffn(self.ln2(x), ffn_prev)
        x = x + dx
        return (x[:, -1:] if last_only else x), v_first, (att_last, wkv, ffn_last)


class RWKV(nn.Module):
    """`forward(idx [B,T], state=None) -> (logits [B,T,V], state)`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.version not in ARCHITECTURES:
            raise ValueError(f"no RWKV model for version {spec.version!r}; known: {', '.join(ARCHITECTURES)}")
        self.spec = spec
        self.emb = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.n_layer))
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

    @property
    def last_wkv_trials_ms(self) -> dict:
        """What op="auto" measured to pick `last_wkv_op` ({} when nothing was measured)."""
        return self.blocks[0].att.last_op_trials_ms

    def forward(
        self, idx: torch.Tensor, state: list[LayerState] | None = None, last_only: bool = False
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """`last_only`: logits for the last position alone ([B,1,V]), all generation needs
        after a prompt; the head is a large part of a prefill's work at a small model's width."""
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
            else:  # the last block's outputs before the last position feed nothing
                x, v_first, layer_state = block(x, v_first, layer_state,
                                                last_only=last_only and i == len(self.blocks) - 1)
            new_state.append(layer_state)
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_out(x)), new_state

    def initial_state(self, batch_size: int = 1, tuned: bool = True) -> list[LayerState]:
        """The state a sequence starts from: zeros, or the tuned `time_state` where one is loaded
        (unless `tuned=False`: the base model's start, e.g. chat's base-vs-tuned comparison)."""
        spec = self.spec
        device, dtype = self.emb.weight.device, self.emb.weight.dtype
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        state = []
        for block in self.blocks:
            start = block.att.initial_wkv_state(batch_size) if tuned else None
            wkv = (start.detach().contiguous() if start is not None
                   else torch.zeros(batch_size, H, N, N, device=device, dtype=torch.float32))
            zeros = torch.zeros(batch_size, C, device=device, dtype=dtype)
            state.append((zeros, wkv, zeros.clone()))
        return state
