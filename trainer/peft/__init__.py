"""Fine-tuning methods behind one interface (`base.Method`): full, lora, pissa, miss, lisa, state."""

from __future__ import annotations

from trainer.errors import ConfigError
from trainer.peft.base import Method
from trainer.peft.full import FullMethod, LisaMethod
from trainer.peft.lora import LoraMethod, PissaMethod
from trainer.peft.miss import MissMethod
from trainer.peft.state import StateMethod

METHOD_CLASSES: dict[str, type[Method]] = {
    "full": FullMethod, "lora": LoraMethod, "pissa": PissaMethod,
    "miss": MissMethod, "lisa": LisaMethod, "state": StateMethod,
}

__all__ = ["Method", "METHOD_CLASSES", "build_method"]


def build_method(method_config, seed: int = 0) -> Method:
    """The method a `MethodConfig` describes."""
    m = method_config
    if m.quant != "none":
        raise ConfigError(f"{m.quant} quantization is not available in this version of rwkv-tui",
                          field="method.quant", hint="set method.quant=none")
    if m.name == "lora":
        return LoraMethod(r=m.r, alpha=m.alpha, dropout=m.dropout, targets=m.targets,
                          train_extras=m.train_extras, seed=seed)
    if m.name == "pissa":
        return PissaMethod(r=m.r, svd_niter=m.svd_niter, targets=m.targets, train_extras=m.train_extras, seed=seed)
    if m.name == "miss":
        return MissMethod(r=m.r, targets=m.targets)
    if m.name == "lisa":
        return LisaMethod(lisa_r=m.lisa_r, lisa_k=m.lisa_k, seed=seed)
    if m.name == "state":
        return StateMethod()
    if m.name == "full":
        return FullMethod()
    raise ConfigError(f"unknown method {m.name!r}", field="method.name",
                      hint=f"choose one of: {', '.join(METHOD_CLASSES)}")
