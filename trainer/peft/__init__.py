"""Fine-tuning methods behind one interface (`base.Method`): full, lora, pissa, miss, lisa, state.

Importing this package loads no torch, so the TUI can read `catalog` (what each method is)
at startup; `Method`, `METHOD_CLASSES` and `build_method` load the torch modules on first use.
"""

from __future__ import annotations

import importlib

_LAZY_NAMES = {"Method": "base", "METHOD_CLASSES": "registry", "build_method": "registry"}

__all__ = ["Method", "METHOD_CLASSES", "build_method"]


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
