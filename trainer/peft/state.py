"""State tuning: everything frozen; a trainable initial WKV state [H, N, N] per layer.

The model starts every sequence from `blocks.{i}.att.time_state` (value-major), the
tensor RWKV Runner mounts and the `rwkv` package's `state[3*i+1]`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.peft.base import Method, freeze, quantize_other_linears, unwrap
from rwkv_tui.trainer.peft.catalog import METHOD_INFO


class StateMergeError(CheckpointError):
    """A tuned state merged into an RWKV-7 model, where no loader would read it."""

    def __init__(self) -> None:
        super().__init__(
            "an RWKV-7 state cannot be merged into the model: the rwkv package and RWKV Runner's x070 models "
            "never read blocks.N.att.time_state from a model file, so the merged file would give exactly the "
            "base model's output",
            hint="use the state file itself: RWKV Runner and Ai00 load it next to the unchanged base model "
                 "(for Ai00: rwkv-tui export STATE.pth --ai00 state.st); try it here with "
                 "rwkv-tui chat BASE.pth --state STATE.pth")


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

    def save_output(self, model: nn.Module, spec, path: Path, save_dtype: torch.dtype,
                    base_path: str | Path | None = None) -> Path:
        """The state file RWKV Runner mounts, in fp32 whatever `save_dtype` says (states are tiny)."""
        from rwkv_tui.trainer.adapters import save_state_file

        return save_state_file(model, path)

    @classmethod
    def merge(cls, base, adapter, metadata):
        """RWKV-6/5: the base with its tuned state, which the rwkv package (RWKV Runner) reads
        from the model file. RWKV-7 is refused: no x070 model class reads `time_state` from a
        model file, so the merged file would behave exactly like the base."""
        from rwkv_tui.trainer.checkpoint import detect_version

        if detect_version(base.keys()) == "x070":
            raise StateMergeError()
        merged = dict(base)
        merged.update({k: v for k, v in adapter.items() if k.endswith(".att.time_state")})
        return merged
