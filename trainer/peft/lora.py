"""LoRA and PiSSA: a low-rank branch B·A on each target matrix, base frozen.

LoRA starts the branch at zero (B = 0) and scales it by alpha / r. PiSSA starts it at the
matrix's principal components (A = √S Vᵀ, B = U √S from the top-r SVD), freezes the
residual W − B₀A₀ as the base, and uses no scaling; its file keeps A₀, B₀ so a merge into
the original base is W − B₀A₀ + BA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rwkv_tui.trainer.config import MethodConfig
from rwkv_tui.trainer.peft.adapted_linear import LoraLinear
from rwkv_tui.trainer.peft.base import AdapterMethod, freeze, frozen_base, quantize_other_linears, unwrap
from rwkv_tui.trainer.peft.catalog import METHOD_INFO
from rwkv_tui.trainer.peft.targets import target_modules

# Trained in full alongside the adapter when `train_extras` is on (as RWKV-PEFT does).
EXTRA_SUFFIXES = ("ln0.weight", "ln0.bias", "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
                  "ln_x.weight", "ln_x.bias", "ln_out.weight", "ln_out.bias",
                  "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "ffn.x_k")


class LoraMethod(AdapterMethod):
    info = METHOD_INFO["lora"]

    def __init__(self, settings: MethodConfig, *, seed: int) -> None:
        super().__init__(settings, seed=seed)
        self.r, self.alpha, self.dropout = settings.r, settings.alpha, settings.dropout
        self.targets = list(settings.targets)
        self.train_extras = settings.train_extras

    def apply(self, model: nn.Module) -> None:
        model = unwrap(model)
        freeze(model)
        generator = torch.Generator(device=model.emb.weight.device).manual_seed(self.seed)
        for name, parent, attr, linear in target_modules(model, self.targets):
            setattr(parent, attr, self._wrap(name, linear, generator))
        quantize_other_linears(model, self.quant, self.targets)
        if self.train_extras:
            for name, p in model.named_parameters():
                if name.endswith(EXTRA_SUFFIXES):
                    p.requires_grad_(True)

    def _wrap(self, name: str, linear: nn.Linear, generator) -> nn.Module:
        return LoraLinear(frozen_base(linear, self.quant), self.r, self.alpha, self.dropout, generator,
                          shape=tuple(linear.weight.shape), device=linear.weight.device)

    def metadata(self) -> dict[str, Any]:
        return {"method": self.name, "r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "targets": self.targets, "train_extras": self.train_extras, "quant": self.quant}

    @classmethod
    def merge(cls, base, adapter, metadata):
        merged = dict(base)
        alpha = metadata.get("alpha")
        for key, a in adapter.items():
            if key.endswith(".lora_A"):
                prefix = key[: -len(".lora_A")]
                b = adapter[prefix + ".lora_B"]
                weight = base[prefix + ".weight"]
                scale = lora_scale(alpha, b.shape[1])
                merged[prefix + ".weight"] = weight.float() + (b.float() @ a.float()) * scale  # cast once, on save
            elif not key.endswith(".lora_B"):
                merged[key] = adapter[key]  # a norm or mix vector trained in full (train_extras)
        return merged


def lora_scale(alpha: float | None, r: int) -> float:
    """alpha / r; files from RWKV-PEFT do not record alpha, so a merge must be given it."""
    if alpha is None:
        from rwkv_tui.trainer.errors import CheckpointError

        raise CheckpointError("the adapter file does not record LoRA alpha",
                              hint="give it with --lora-alpha (RWKV-PEFT's default scripts use 32; "
                                   "the seeds recommend 2 × r)")
    return float(alpha) / r


class PissaMethod(LoraMethod):
    info = METHOD_INFO["pissa"]

    def __init__(self, settings: MethodConfig, *, seed: int) -> None:
        super().__init__(settings, seed=seed)
        self.alpha, self.dropout = float(self.r), 0.0  # PiSSA's branch is unscaled and undropped, whatever is set
        self.svd_niter = settings.svd_niter
        self._init: dict[str, torch.Tensor] = {}

    def _wrap(self, name: str, linear: nn.Linear, generator) -> nn.Module:
        weight = linear.weight.detach().float()
        if self.svd_niter > 0:
            with torch.random.fork_rng(devices=[]):  # svd_lowrank's random projection, seeded locally
                torch.manual_seed(self.seed)
                u, s, v = torch.svd_lowrank(weight, q=self.r, niter=self.svd_niter)
        else:
            u, s, vh = torch.linalg.svd(weight, full_matrices=False)
            u, s, v = u[:, : self.r], s[: self.r], vh[: self.r].t()
        root = s.sqrt()
        a = root[:, None] * v.t()          # [r, in]
        b = u * root[None, :]              # [out, r]
        with torch.no_grad():
            linear.weight.copy_((weight - b @ a).to(linear.weight.dtype))  # the frozen residual (QPiSSA: quantized)
        wrapped = LoraLinear(frozen_base(linear, self.quant), self.r, alpha=float(self.r), dropout=0.0,
                             shape=tuple(linear.weight.shape), device=linear.weight.device)
        with torch.no_grad():
            wrapped.lora_A.copy_(a)
            wrapped.lora_B.copy_(b)
        self._init[f"{name}.pissa_init_A"] = a.clone()
        self._init[f"{name}.pissa_init_B"] = b.clone()
        return wrapped

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {**super().adapter_state_dict(model), **self._init}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "svd_niter": self.svd_niter}

    def load_adapter(self, model, tensors, metadata, path=None) -> None:
        """Warm start from a PiSSA file: adopt its A, B and its initial A₀, B₀, moving the
        frozen residual to W − B₀A₀ of the file so the function equals the file's."""
        from rwkv_tui.trainer.errors import CheckpointError

        if self.quant != "none":
            raise CheckpointError("warm-starting QPiSSA is not supported: the quantized residual cannot be "
                                  "re-based", path=path, hint="warm-start PiSSA in bf16, or start fresh")
        trained = {k: v for k, v in tensors.items() if not k.endswith((".pissa_init_A", ".pissa_init_B"))}
        super().load_adapter(model, trained, metadata, path)
        modules = dict(unwrap(model).named_modules())
        with torch.no_grad():
            for key in [k for k in tensors if k.endswith(".pissa_init_A")]:
                prefix = key[: -len(".pissa_init_A")]
                a0_file, b0_file = tensors[key].float(), tensors[prefix + ".pissa_init_B"].float()
                a0_own, b0_own = self._init[prefix + ".pissa_init_A"], self._init[prefix + ".pissa_init_B"]
                weight = modules[prefix].weight
                weight.copy_((weight.float() + b0_own @ a0_own - b0_file @ a0_file).to(weight.dtype))
                self._init[prefix + ".pissa_init_A"], self._init[prefix + ".pissa_init_B"] = a0_file, b0_file

    @classmethod
    def merge(cls, base, adapter, metadata):
        merged = dict(base)
        for key, a in adapter.items():
            if key.endswith(".lora_A"):
                prefix = key[: -len(".lora_A")]
                b = adapter[prefix + ".lora_B"]
                a0, b0 = adapter[prefix + ".pissa_init_A"], adapter[prefix + ".pissa_init_B"]
                weight = base[prefix + ".weight"]
                merged[prefix + ".weight"] = weight.float() - b0.float() @ a0.float() + b.float() @ a.float()
            elif not key.endswith((".lora_B", ".pissa_init_A", ".pissa_init_B")):
                merged[key] = adapter[key]
        return merged
