"""Finding the linear maps a method adapts, by RWKV-PEFT's short names (`att.key`, `ffn.value`)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


def target_modules(model: nn.Module, targets: list[str]) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(full name, parent module, attribute, module) for each target in every block."""
    for i, block in enumerate(model.blocks):
        for target in targets:
            part, attr = target.split(".")
            parent = getattr(block, part)
            yield f"blocks.{i}.{target}", parent, attr, getattr(parent, attr)
