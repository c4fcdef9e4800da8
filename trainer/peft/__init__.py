"""Fine-tuning methods behind one interface (`base.Method`): full, lora, pissa, miss, lisa, state."""

from __future__ import annotations

from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.peft.base import Method
from rwkv_tui.trainer.peft.full import FullMethod, LisaMethod
from rwkv_tui.trainer.peft.lora import LoraMethod, PissaMethod
from rwkv_tui.trainer.peft.miss import MissMethod
from rwkv_tui.trainer.peft.state import StateMethod

METHOD_CLASSES: dict[str, type[Method]] = {
    "full": FullMethod, "lora": LoraMethod, "pissa": PissaMethod,
    "miss": MissMethod, "lisa": LisaMethod, "state": StateMethod,
}

__all__ = ["Method", "METHOD_CLASSES", "build_method"]


def build_method(method_config, seed: int = 0) -> Method:
    """The method a `MethodConfig` describes."""
    m = method_config
    if m.quant != "none" and m.name in ("full", "lisa"):
        raise ConfigError(f"{m.name} trains the base weights, which cannot be quantized", field="method.quant",
                          hint="use quant=none, or LoRA/PiSSA/MiSS/state tuning with int8/nf4")
    if m.name == "lora":
        return LoraMethod(r=m.r, alpha=m.alpha, dropout=m.dropout, targets=m.targets,
                          train_extras=m.train_extras, seed=seed, quant=m.quant)
    if m.name == "pissa":
        return PissaMethod(r=m.r, svd_niter=m.svd_niter, targets=m.targets, train_extras=m.train_extras, seed=seed,
                           quant=m.quant)
    if m.name == "miss":
        return MissMethod(r=m.r, targets=m.targets, quant=m.quant)
    if m.name == "lisa":
        return LisaMethod(lisa_r=m.lisa_r, lisa_k=m.lisa_k, seed=seed)
    if m.name == "state":
        return StateMethod(quant=m.quant)
    if m.name == "full":
        return FullMethod()
    raise ConfigError(f"unknown method {m.name!r}", field="method.name",
                      hint=f"choose one of: {', '.join(METHOD_CLASSES)}")
