"""Pieces every RWKV generation shares: token shift and the squared-ReLU channel mixes."""

from __future__ import annotations

import torch
from torch import nn

from rwkv_tui.trainer.spec import ModelSpec


def token_shift(x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
    """`shift(x) - x`: the previous token's features minus this token's."""
    if x.shape[1] == 1:  # decoding: no sequence to shift
        return -x if x_prev is None else x_prev.unsqueeze(1) - x
    if x_prev is None:
        x_prev = torch.zeros_like(x[:, 0])
    shifted = torch.cat((x_prev.unsqueeze(1), x[:, :-1]), dim=1)
    return shifted - x


class GatedChannelMix(nn.Module):
    """The RWKV-6 feed-forward, `sigmoid(receptance(x_r)) * value(relu(key(x_k))^2)`, with
    x_m = x + (shift(x) - x) * time_maa_m. (RWKV-7 dropped the receptance gate.)"""

    MIX_NAMES = ("time_maa_k", "time_maa_r")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        C = spec.n_embd
        for name in self.MIX_NAMES:
            self.register_parameter(name, nn.Parameter(torch.empty(1, 1, C)))
        self.key = nn.Linear(C, spec.dim_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(spec.dim_ffn, C, bias=False)

    def mix_amounts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """How far x_k and x_r move from this token towards the previous one."""
        return self.time_maa_k, self.time_maa_r

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        xx = token_shift(x, x_prev)
        mix_k, mix_r = self.mix_amounts()
        k = torch.relu(self.key(torch.addcmul(x, xx, mix_k)))
        return torch.sigmoid(self.receptance(torch.addcmul(x, xx, mix_r))) * self.value(k * k), x[:, -1]


class GatedChannelMix5(GatedChannelMix):
    """RWKV-5 spells the mix the other way round: x_m = x * time_mix_m + shift(x) * (1 - time_mix_m)."""

    MIX_NAMES = ("time_mix_k", "time_mix_r")

    def mix_amounts(self) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 - self.time_mix_k, 1 - self.time_mix_r
