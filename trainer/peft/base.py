"""The one small interface every fine-tuning method implements.

A method is built from the run's `MethodConfig` (the only place its settings and their
defaults live), wraps a loaded model in place (`apply`), says which parameters the optimizer
sees, saves what it trained in its own file format (`save_output`), merges such a file back
into a base state dict (`merge`, a classmethod: no instance or settings needed), and may
react to the step counter (LISA redraws layers). The torch-free facts about it (file
names, quantization, what the chat loads) are its catalog entry, `info`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rwkv_tui.trainer.config import MethodConfig
from rwkv_tui.trainer.peft.catalog import MethodInfo


class Method:
    info: ClassVar[MethodInfo]

    def __init__(self, settings: MethodConfig, *, seed: int) -> None:
        # Every method is built the same way (registry.build_method); subclasses keep the settings they use.
        self.seed = seed
        self.quant = settings.quant

    @property
    def name(self) -> str:
        return self.info.name

    def apply(self, model: nn.Module) -> None:
        raise NotImplementedError

    def optimizer_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """What the optimizer is built with (by default: what is trainable now)."""
        return self.trainable_parameters(model)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors a run must save for this method (official key names)."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """What a merge needs to know besides the tensors (method, rank, alpha…)."""
        return {"method": self.name}

    def load_adapter(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, Any] | None, path=None) -> None:
        """Warm start: copy a saved adapter's tensors into the freshly applied method."""
        from rwkv_tui.trainer.errors import CheckpointError

        own = dict(unwrap(model).named_parameters())
        missing = [k for k, p in own.items() if p.requires_grad and k not in tensors]
        unknown = [k for k in tensors if k not in own]
        wrong = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in tensors.items()
                 if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if missing or unknown or wrong:
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {unknown[:3]}" if unknown
                      else f"shape mismatch {wrong[:2]}")
            raise CheckpointError(f"the file does not fit this {self.name} setup: {detail}", path=path,
                                  hint="match method.name, method.r and method.targets to the file")
        with torch.no_grad():
            for key, value in tensors.items():
                own[key].copy_(value.to(own[key].dtype))

    def save_output(self, model: nn.Module, spec, path: Path, save_dtype: torch.dtype,
                    base_path: str | Path | None = None) -> Path:
        """Write what this method trained to `path` (named by `info.output_file`); `save_dtype`
        is the dtype of whole-model files, which also keep every key of the base at `base_path`."""
        raise NotImplementedError

    @classmethod
    def merge(cls, base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor],
              metadata: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A full state dict equal in function to base + adapter (the file's metadata carries the
        settings): every key of the base, changed weights in fp32 (the caller casts once on save)."""
        raise NotImplementedError

    def on_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step (and with the resumed step on resume)."""

    def parameter_report(self, model: nn.Module) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.trainable_parameters(model))
        total = sum(p.numel() for p in model.parameters())
        return trainable, total


class AdapterMethod(Method):
    """A method whose file holds only its trained tensors plus the metadata a merge needs."""

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in unwrap(model).named_parameters() if p.requires_grad}

    def save_output(self, model: nn.Module, spec, path: Path, save_dtype: torch.dtype,
                    base_path: str | Path | None = None) -> Path:
        from rwkv_tui.trainer.adapters import save_adapter

        return save_adapter(model, self, path, spec)  # small: tensors keep their training dtype


def frozen_base(linear: nn.Linear, quant: str) -> nn.Module:
    """The frozen map an adapter sits on: the Linear itself, or its int8/nf4 version."""
    if quant == "none":
        return linear
    from rwkv_tui.trainer.peft.quant import quantize_linear

    return quantize_linear(linear, quant)


def quantize_other_linears(model: nn.Module, quant: str, adapted: list[str]) -> None:
    """QLoRA-style: with int8/nf4 the whole frozen base is quantized, not only the adapted
    maps (RWKV-6/5's gates, or maps left out of `targets`), as the VRAM estimate assumes."""
    if quant == "none":
        return
    from rwkv_tui.trainer.peft.targets import linear_targets, target_modules

    others = [t for t in linear_targets(model) if t not in adapted]
    for _, parent, attr, linear in target_modules(model, others):
        setattr(parent, attr, frozen_base(linear, quant))


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unwrap(model: nn.Module) -> nn.Module:
    """The RWKV module under Fabric/DeepSpeed wrappers."""
    while hasattr(model, "module") and not hasattr(model, "blocks"):
        model = model.module
    return model
