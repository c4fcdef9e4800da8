"""State tuning: everything frozen; a trainable initial WKV state [H, N, N] per layer.

The model starts every sequence from `blocks.{i}.att.time_state` (value-major), the
tensor RWKV Runner mounts and the `rwkv` package's `state[3*i+1]`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rwkv_tui.trainer.peft.base import Method, freeze, quantize_other_linears, unwrap
from rwkv_tui.trainer.peft.catalog import METHOD_INFO


class StateMethod(Method):
    info = METHOD_INFO["state"]

    def apply(self, model: nn.Module) -> None:
        model = unwrap(model)
        freeze(model)
        quantize_other_linears(model, self.quant, adapted=[])  # quantized state tuning
        spec = model.spec
        for block in model.blocks:
            block.att.time_state = nn.Parameter(
                torch.zeros(spec.n_head, spec.head_size, spec.head_size, device=model.emb.weight.device))

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {f"blocks.{i}.att.time_state": block.att.time_state.detach()
                for i, block in enumerate(unwrap(model).blocks)}

    def save_output(self, model: nn.Module, spec, path: Path, save_dtype: torch.dtype) -> Path:
        """The state file RWKV Runner mounts, in fp32 whatever `save_dtype` says (states are tiny)."""
        from rwkv_tui.trainer.adapters import save_state_file

        return save_state_file(model, path)

    @classmethod
    def merge(cls, base, adapter, metadata):
        # A base model that carries its tuned state: loads in our trainer and chat; the rwkv
        # package ignores unknown keys only in some versions, so state files stay the
        # recommended way to share a tuned state.
        merged = dict(base)
        merged.update({k: v for k, v in adapter.items() if k.endswith(".att.time_state")})
        return merged
