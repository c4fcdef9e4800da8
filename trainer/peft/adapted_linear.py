"""Linear layers with a trainable side branch, keeping the frozen `weight` under its official name.

`blocks.3.att.key` stays a module whose `weight` is the base matrix, so the model's state
dict still has `blocks.3.att.key.weight`, and the adapter adds `blocks.3.att.key.lora_A`
(RWKV-PEFT's names). Each class knows its exact merged weight, which the merge tests
compare against the unmerged forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoraLinear(nn.Module):
    """y = W x + (B A dropout(x)) · scale, with A [r, in] random and B [out, r] zero at start."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, generator=None) -> None:
        super().__init__()
        out_features, in_features = base.weight.shape
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=base.weight.device))
        bound = 1 / math.sqrt(in_features)  # kaiming-uniform(a=√5), as nn.Linear initialises
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return F.linear(x, self.weight) + branch * self.scale


class MissLinear(nn.Module):
    """MiSS (RWKV-PEFT's "bone"/DiSHA): the input is summed over its in/r blocks of width r and
    mapped by one shared `disha [r, out]`, i.e. ΔW[o, j] = disha[j mod r, o]. Zero at start."""

    def __init__(self, base: nn.Linear, r: int) -> None:
        super().__init__()
        out_features, in_features = base.weight.shape
        if in_features % r:
            raise ValueError(f"MiSS block size {r} does not divide the input width {in_features}")
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.r = r
        self.disha = nn.Parameter(torch.zeros(r, out_features, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.view(*x.shape[:-1], x.shape[-1] // self.r, self.r).sum(dim=-2)
        return F.linear(x, self.weight) + blocks @ self.disha.to(x.dtype)


def miss_delta(disha: torch.Tensor, in_features: int) -> torch.Tensor:
    """The [out, in] weight change a MiSS `disha [r, out]` stands for."""
    r = disha.shape[0]
    return disha.t().repeat(1, in_features // r)
