"""Full fine-tune and LISA: the base weights themselves are trained."""

from __future__ import annotations

import random

import torch
from torch import nn

from rwkv_tui.trainer.peft.base import Method, unwrap


class FullMethod(Method):
    name = "full"

    def apply(self, model: nn.Module) -> None:
        for p in unwrap(model).parameters():
            p.requires_grad_(True)

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in unwrap(model).state_dict().items()}

    def merge(self, base, adapter, metadata):
        return {**base, **adapter}


class LisaMethod(FullMethod):
    """LISA: `lisa_r` randomly drawn layers train at a time, redrawn every `lisa_k` steps;
    embeddings, head and norms always train. The optimizer holds every parameter: Adam
    skips those whose grad is None, so frozen layers cost no optimizer work."""

    name = "lisa"

    def __init__(self, lisa_r: int = 2, lisa_k: int = 100, seed: int = 0, **_) -> None:
        self.lisa_r, self.lisa_k, self.seed = lisa_r, lisa_k, seed
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
