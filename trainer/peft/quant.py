"""Frozen base weights in int8 or nf4 (bitsandbytes): QLoRA, QPiSSA, quantized state tuning.

Only the large per-block linear maps are quantized; embeddings, head, norms and the small
low-rank mixers stay in the compute dtype. bitsandbytes is imported only when asked for,
and its absence is a clear ConfigError rather than an ImportError mid-run.
"""

from __future__ import annotations

import torch
from torch import nn

from rwkv_tui.trainer.errors import ConfigError

QUANT_KINDS = ("int8", "nf4")


def bitsandbytes_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _bnb():
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError("int8/nf4 quantization needs the bitsandbytes package", field="method.quant",
                          hint="pip install 'rwkv-tui[gpu]' (or bitsandbytes), or set method.quant=none") from None
    return bitsandbytes


def quantize_linear(linear: nn.Linear, kind: str, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """A bitsandbytes layer holding `linear`'s weight in int8 or nf4 (frozen)."""
    if kind not in QUANT_KINDS:
        raise ConfigError(f"unknown quantization {kind!r}", field="method.quant", hint="choose int8 or nf4")
    bnb = _bnb()
    weight = linear.weight.detach()
    device = weight.device
    out_features, in_features = weight.shape
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, quant_type="nf4",
                                  compute_dtype=compute_dtype or weight.dtype)
        layer.weight = bnb.nn.Params4bit(weight.to("cpu").contiguous(), requires_grad=False, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(weight.to("cpu").contiguous(), requires_grad=False, has_fp16_weights=False)
    return layer.to(device)  # moving the parameter is what quantizes it


def is_quantized(module: nn.Module) -> bool:
    return type(module).__module__.startswith("bitsandbytes")
