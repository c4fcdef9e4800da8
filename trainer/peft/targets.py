"""Finding the linear maps a method adapts, by RWKV-PEFT's short names (`att.key`, `ffn.value`)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from rwkv_tui.trainer.errors import ConfigError


def target_modules(model: nn.Module, targets: list[str]) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(full name, parent module, attribute, module) for each target in every block."""
    for target in targets:
        part, attr = target.split(".")
        if not hasattr(getattr(model.blocks[0], part), attr):
            raise ConfigError(f"{model.spec.display_name.split()[0]} models have no {target} map",
                              field="method.targets", hint=f"choose from {', '.join(linear_targets(model))}")
    for i, block in enumerate(model.blocks):
        for target in targets:
            part, attr = target.split(".")
            parent = getattr(block, part)
            yield f"blocks.{i}.{target}", parent, attr, getattr(parent, attr)


def linear_targets(model: nn.Module) -> list[str]:
    """Every adaptable linear map this model's blocks have (RWKV-6/5 have two more than RWKV-7)."""
    from rwkv_tui.trainer.config import GATED_TARGETS, LORA_TARGETS

    block = model.blocks[0]
    return [t for t in LORA_TARGETS + GATED_TARGETS if hasattr(getattr(block, t.split(".")[0]), t.split(".")[1])]
