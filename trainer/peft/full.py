"""Full fine-tune and LISA: the base weights themselves are trained."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from rwkv_tui.trainer.config import MethodConfig
from rwkv_tui.trainer.peft.base import Method, unwrap
from rwkv_tui.trainer.peft.catalog import METHOD_INFO


class FullMethod(Method):
    info = METHOD_INFO["full"]

    def apply(self, model: nn.Module) -> None:
        for p in unwrap(model).parameters():
            p.requires_grad_(True)

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in unwrap(model).state_dict().items()}

    def save_output(self, model: nn.Module, spec, path: Path, save_dtype: torch.dtype,
                    base_path: str | Path | None = None) -> Path:
        """The whole model under its official names, in `save_dtype`, with the base's tensors the
        model does not hold (block 0's unused v0/v1/v2, present in every official file) kept."""
        from rwkv_tui.trainer.checkpoint import save_state_dict

        trained = model.state_dict()
        return save_state_dict({**base_only_tensors(base_path, trained), **trained}, path, dtype=save_dtype)

    @classmethod
    def merge(cls, base, adapter, metadata):
        return {**base, **adapter}


def base_only_tensors(base_path: str | Path | None, trained: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base file's tensors under names the trained model lacks (memory-mapped, so cheap)."""
    if base_path is None:
        return {}
    from rwkv_tui.trainer.checkpoint import load_state_dict

    return {k: v for k, v in load_state_dict(base_path).items() if k not in trained}


class LisaMethod(FullMethod):
    """LISA: `lisa_r` randomly drawn layers train at a time, redrawn every `lisa_k` steps;
    embeddings, head and norms always train. The optimizer holds every parameter: Adam
    skips those whose grad is None, so frozen layers cost no optimizer work."""

    info = METHOD_INFO["lisa"]

    def __init__(self, settings: MethodConfig, *, seed: int) -> None:
        super().__init__(settings, seed=seed)
        self.lisa_r, self.lisa_k = settings.lisa_r, settings.lisa_k
        self.active: list[int] = []

    def apply(self, model: nn.Module) -> None:
        self.on_step(model, 0)

    def optimizer_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(unwrap(model).parameters())

    def layers_for_step(self, step: int, n_layer: int) -> list[int]:
        """The layers trained at `step`: a pure function of (seed, step // lisa_k), so resume agrees."""
        rng = random.Random(self.seed * 1_000_003 + step // self.lisa_k)
        return sorted(rng.sample(range(n_layer), min(self.lisa_r, n_layer)))

    def on_step(self, model: nn.Module, step: int) -> None:
        model = unwrap(model)
        self.active = self.layers_for_step(step, len(model.blocks))
        for p in model.parameters():
            p.requires_grad_(True)
        for i, block in enumerate(model.blocks):
            if i not in self.active:
                for name, p in block.named_parameters():
                    p.requires_grad_(".ln" in f".{name}")  # norms stay trainable
