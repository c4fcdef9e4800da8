"""Random RWKV weights and specs of any size: tiny test models, the demo, benchmark shapes.

`random_state_dict` fills every tensor with non-zero values of a sensible scale (so an
oracle comparison exercises every weight) and returns official key names, for RWKV-7, 6
and 5 alike.
"""

from __future__ import annotations

import math

import torch

from rwkv_tui.trainer.shapes import expected_shapes
from rwkv_tui.trainer.spec import ModelSpec


def _low_rank_width(n_embd: int, factor: float, power: float) -> int:
    # The widths RWKV-LM's x070 code uses for new models (multiples of 32, at least 32);
    # released checkpoints may differ, which is why loading reads them from the file.
    return max(32, int(round(factor * n_embd**power / 32)) * 32)


def rwkv7_spec(
    n_layer: int,
    n_embd: int,
    vocab_size: int = 65536,
    head_size: int = 64,
    dim_ffn: int | None = None,
    d_decay: int | None = None,
    d_aaa: int | None = None,
    d_mv: int | None = None,
    d_gate: int | None = None,
    dtype: str = "bfloat16",
) -> ModelSpec:
    """A consistent RWKV-7 spec; unspecified widths follow RWKV-LM's sizing rules."""
    if n_embd % head_size:
        raise ValueError(f"n_embd {n_embd} is not a multiple of head_size {head_size}")
    spec = ModelSpec(
        version="x070",
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_embd // head_size,
        head_size=head_size,
        vocab_size=vocab_size,
        dim_ffn=dim_ffn or 4 * n_embd,
        d_decay=d_decay or _low_rank_width(n_embd, 1.8, 0.5),
        d_aaa=d_aaa or _low_rank_width(n_embd, 1.8, 0.5),
        d_mv=d_mv or _low_rank_width(n_embd, 1.3, 0.5),
        d_gate=d_gate or _low_rank_width(n_embd, 0.6, 0.8),
        dtype=dtype,
    )
    return _with_param_count(spec)


def rwkv6_spec(n_layer: int, n_embd: int, vocab_size: int = 65536, head_size: int = 64,
               dim_ffn: int | None = None, d_mix: int | None = None, d_decay: int | None = None,
               dtype: str = "bfloat16") -> ModelSpec:
    """A consistent RWKV-6 spec; unspecified widths follow RWKV-LM's x060 sizing rules."""
    if n_embd % head_size:
        raise ValueError(f"n_embd {n_embd} is not a multiple of head_size {head_size}")
    return _with_param_count(ModelSpec(
        version="x060", n_layer=n_layer, n_embd=n_embd, n_head=n_embd // head_size, head_size=head_size,
        vocab_size=vocab_size, dim_ffn=dim_ffn or int(n_embd * 3.5) // 32 * 32,
        d_mix=d_mix or (32 if n_embd < 4096 else 64), d_decay=d_decay or (64 if n_embd < 4096 else 128),
        dtype=dtype))


def rwkv5_spec(n_layer: int, n_embd: int, vocab_size: int = 65536, head_size: int = 64,
               dim_ffn: int | None = None, dtype: str = "bfloat16") -> ModelSpec:
    """A consistent RWKV-5.2 spec (x052)."""
    if n_embd % head_size:
        raise ValueError(f"n_embd {n_embd} is not a multiple of head_size {head_size}")
    return _with_param_count(ModelSpec(
        version="x052", n_layer=n_layer, n_embd=n_embd, n_head=n_embd // head_size, head_size=head_size,
        vocab_size=vocab_size, dim_ffn=dim_ffn or int(n_embd * 3.5) // 32 * 32, dtype=dtype))


def _with_param_count(spec: ModelSpec) -> ModelSpec:
    n_params = sum(math.prod(shape) for shape in expected_shapes(spec).values())
    return ModelSpec(**{**spec.to_dict(), "n_params": n_params})


def random_state_dict(spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random weights in official layout. Every tensor is non-zero and of a trainable scale."""
    gen = torch.Generator().manual_seed(seed)
    C = spec.n_embd

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=gen)

    out: dict[str, torch.Tensor] = {}
    for key, shape in expected_shapes(spec).items():
        name = key.rsplit(".", 1)[-1]
        if key.endswith((".ln0.weight", ".ln1.weight", ".ln2.weight", "ln_out.weight", ".ln_x.weight")):
            tensor = uniform(shape, 0.7, 1.3)
        elif key.endswith(".bias"):
            tensor = normal(shape, 0.05)
        elif key == "emb.weight":
            tensor = normal(shape, 1.0)
        elif key == "head.weight":
            tensor = normal(shape, 1.0 / math.sqrt(C))
        elif name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g") or (name.startswith(("time_maa_", "time_mix_")) \
                                                                and name not in ("time_maa_w1", "time_maa_w2")):
            tensor = uniform(shape, 0.05, 0.95)
        elif name == "time_decay":  # RWKV-6/5 log(-log(decay)): slow to fast decays
            tensor = uniform(shape, -5.0, 1.0)
        elif name == "time_faaaa":
            tensor = normal(shape, 0.3)
        elif name in ("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2"):
            tensor = normal(shape, 0.1)
        elif name == "w0":
            tensor = uniform(shape, -4.0, 1.0)  # decays from slow to fast
        elif name in ("a0", "v0"):
            tensor = normal(shape, 0.5)
        elif name == "k_k":
            tensor = uniform(shape, 0.6, 1.0)
        elif name == "k_a":
            tensor = uniform(shape, 0.8, 1.2)
        elif name == "r_k":
            tensor = normal(shape, 0.3)
        elif name in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2"):
            tensor = normal(shape, 0.1)
        else:  # the large linear maps: std 1/sqrt(fan_in) keeps activations O(1)
            tensor = normal(shape, 1.0 / math.sqrt(shape[1]))
        out[key] = tensor.to(dtype)
    return out
