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


class FrozenBase(nn.Module):
    """The frozen base map of an adapted layer: a plain weight under its official name
    (`…key.weight`), or a quantized bitsandbytes layer (`…key.quantized`)."""

    def __init__(self, base: nn.Module, out_features: int, in_features: int) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        # bitsandbytes layers subclass nn.Linear, so tell them apart by where they come from.
        if isinstance(base, nn.Linear) and not type(base).__module__.startswith("bitsandbytes"):
            self.weight = base.weight
            self.weight.requires_grad_(False)
            self.quantized = None
        else:
            self.quantized = base

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized is not None:
            return self.quantized(x)
        return F.linear(x, self.weight)


class LoraLinear(FrozenBase):
    """y = W x + (B A dropout(x)) · scale, with A [r, in] random and B [out, r] zero at start."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, generator=None,
                 shape: tuple[int, int] | None = None, device=None) -> None:
        out_features, in_features = shape or base.weight.shape
        super().__init__(base, out_features, in_features)
        device = device if device is not None else base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device))
        bound = 1 / math.sqrt(in_features)  # kaiming-uniform(a=√5), as nn.Linear initialises
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return self.base_forward(x) + branch * self.scale


class MissLinear(FrozenBase):
    """MiSS (RWKV-PEFT's "bone"/DiSHA): the input is summed over its in/r blocks of width r and
    mapped by one shared `disha [r, out]`, i.e. ΔW[o, j] = disha[j mod r, o]. Zero at start."""

    def __init__(self, base: nn.Module, r: int, shape: tuple[int, int] | None = None, device=None) -> None:
        out_features, in_features = shape or base.weight.shape
        if in_features % r:
            raise ValueError(f"MiSS block size {r} does not divide the input width {in_features}")
        super().__init__(base, out_features, in_features)
        self.r = r
        self.disha = nn.Parameter(torch.zeros(r, out_features, device=device if device is not None
                                              else base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.view(*x.shape[:-1], x.shape[-1] // self.r, self.r).sum(dim=-2)
        return self.base_forward(x) + blocks @ self.disha.to(x.dtype)


def miss_delta(disha: torch.Tensor, in_features: int) -> torch.Tensor:
    """The [out, in] weight change a MiSS `disha [r, out]` stands for."""
    r = disha.shape[0]
    return disha.t().repeat(1, in_features // r)
