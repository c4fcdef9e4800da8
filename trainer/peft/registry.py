"""The Method classes by name, and building the one a run's `MethodConfig` describes."""

from __future__ import annotations

from rwkv_tui.trainer.config import MethodConfig
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.peft.base import Method
from rwkv_tui.trainer.peft.catalog import method_info
from rwkv_tui.trainer.peft.full import FullMethod, LisaMethod
from rwkv_tui.trainer.peft.lora import LoraMethod, PissaMethod
from rwkv_tui.trainer.peft.miss import MissMethod
from rwkv_tui.trainer.peft.state import StateMethod

METHOD_CLASSES: dict[str, type[Method]] = {
    cls.info.name: cls for cls in (FullMethod, LoraMethod, PissaMethod, MissMethod, LisaMethod, StateMethod)}


def method_class(name: str) -> type[Method]:
    return METHOD_CLASSES[method_info(name).name]  # an unknown name is a ConfigError listing the methods


def build_method(method_config: MethodConfig, seed: int = 0) -> Method:
    """The method a `MethodConfig` describes; `seed` initialises adapters and LISA's draws."""
    chosen = method_class(method_config.name)
    if method_config.quant != "none" and not chosen.info.supports_quantization:
        raise ConfigError(f"{method_config.name} trains the base weights, which cannot be quantized",
                          field="method.quant", hint="use quant=none, or LoRA/PiSSA/MiSS/state tuning with int8/nf4")
    return chosen(method_config, seed=seed)
