"""The official name → shape of every tensor an RWKV model of a given spec stores.

One table per generation; checkpoint loading checks files against it, random test and
benchmark models are made from it.
"""

from __future__ import annotations

from rwkv_tui.trainer.spec import ModelSpec


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    C, V = spec.n_embd, spec.vocab_size
    shapes: dict[str, tuple[int, ...]] = {
        "emb.weight": (V, C), "head.weight": (V, C),
        "ln_out.weight": (C,), "ln_out.bias": (C,),
        "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,),
    }
    per_block = {"x070": _rwkv7_block, "x060": _rwkv6_block, "x052": _rwkv5_block}[spec.version]
    for i in range(spec.n_layer):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in per_block(spec, i).items()})
    return shapes


def _common(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    C = spec.n_embd
    shapes = {name: (C,) for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
                                      "att.ln_x.weight", "att.ln_x.bias")}
    shapes.update({f"att.{name}.weight": (C, C) for name in ("receptance", "key", "value", "output")})
    shapes["ffn.key.weight"] = (spec.dim_ffn, C)
    shapes["ffn.value.weight"] = (C, spec.dim_ffn)
    return shapes


def _rwkv7_block(spec: ModelSpec, layer: int) -> dict[str, tuple[int, ...]]:
    C = spec.n_embd
    shapes = _common(spec)
    for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
        shapes["att." + name] = (1, 1, C)
    low_rank = {"w": spec.d_decay, "a": spec.d_aaa, "g": spec.d_gate}
    if layer > 0:  # the value residual exists from layer 1 on; layer 0 produces v_first
        low_rank["v"] = spec.d_mv
        shapes["att.v0"] = (1, 1, C)
    for letter, width in low_rank.items():
        shapes[f"att.{letter}1"] = (C, width)
        shapes[f"att.{letter}2"] = (width, C)
    shapes["att.r_k"] = (spec.n_head, spec.head_size)
    shapes["ffn.x_k"] = (1, 1, C)
    return shapes


def _gated(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """What RWKV-6 and 5 add to the common tensors: the output gate, the bonus, the ffn gate."""
    C = spec.n_embd
    shapes = _common(spec)
    shapes["att.gate.weight"] = (C, C)
    shapes["att.time_faaaa"] = (spec.n_head, spec.head_size)
    shapes["ffn.receptance.weight"] = (C, C)
    return shapes


def _rwkv6_block(spec: ModelSpec, layer: int) -> dict[str, tuple[int, ...]]:
    C = spec.n_embd
    shapes = _gated(spec)
    for name in ("x", "w", "k", "v", "r", "g"):
        shapes[f"att.time_maa_{name}"] = (1, 1, C)
    shapes["att.time_maa_w1"] = (C, 5 * spec.d_mix)
    shapes["att.time_maa_w2"] = (5, spec.d_mix, C)
    shapes["att.time_decay"] = (1, 1, C)
    shapes["att.time_decay_w1"] = (C, spec.d_decay)
    shapes["att.time_decay_w2"] = (spec.d_decay, C)
    shapes["ffn.time_maa_k"] = shapes["ffn.time_maa_r"] = (1, 1, C)
    return shapes


def _rwkv5_block(spec: ModelSpec, layer: int) -> dict[str, tuple[int, ...]]:
    C = spec.n_embd
    shapes = _gated(spec)
    for name in ("k", "v", "r", "g"):
        shapes[f"att.time_mix_{name}"] = (1, 1, C)
    shapes["att.time_decay"] = (spec.n_head, spec.head_size)
    shapes["ffn.time_mix_k"] = shapes["ffn.time_mix_r"] = (1, 1, C)
    return shapes
