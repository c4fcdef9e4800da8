"""MiSS (RWKV-PEFT's "bone", earlier DiSHA): one shared r×out block per target matrix."""

from __future__ import annotations

from typing import Any

from torch import nn

from rwkv_tui.trainer.config import MethodConfig
from rwkv_tui.trainer.peft.adapted_linear import MissLinear, miss_delta
from rwkv_tui.trainer.peft.base import AdapterMethod, freeze, frozen_base, quantize_other_linears, unwrap
from rwkv_tui.trainer.peft.catalog import METHOD_INFO
from rwkv_tui.trainer.peft.targets import target_modules


class MissMethod(AdapterMethod):
    info = METHOD_INFO["miss"]

    def __init__(self, settings: MethodConfig, *, seed: int) -> None:
        super().__init__(settings, seed=seed)
        self.r = settings.r
        self.targets = list(settings.targets)

    def apply(self, model: nn.Module) -> None:
        model = unwrap(model)
        freeze(model)
        for _, parent, attr, linear in target_modules(model, self.targets):
            setattr(parent, attr, MissLinear(frozen_base(linear, self.quant), self.r,
                                             shape=tuple(linear.weight.shape), device=linear.weight.device))
        quantize_other_linears(model, self.quant, self.targets)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.name, "r": self.r, "targets": self.targets, "quant": self.quant}

    @classmethod
    def merge(cls, base, adapter, metadata):
        merged = dict(base)
        for key, disha in adapter.items():
            if key.endswith(".disha"):
                weight_key = key[: -len(".disha")] + ".weight"
                weight = base[weight_key]
                merged[weight_key] = weight.float() + miss_delta(disha.float(), weight.shape[1])  # cast once, on save
        return merged
