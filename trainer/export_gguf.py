"""GGUF export for llama.cpp, Ollama and LM Studio: an RWKV-7 model as llama.cpp's
`convert_hf_to_gguf.py` (class Rwkv7Model) writes it, through the `gguf` package.

The facts followed (tests/data/gguf_rwkv7_facts.json lists them with their sources):
tensor names from gguf-py's MODEL_TENSORS[RWKV7]; low-rank matrices transposed; `[1, 1, C]`
vectors squeezed and `r_k` flattened to `[C]`; the six token-shift mixes stacked into
`time_mix_lerp_fused` `[6, 1, 1, C]`; block 0's unused `v0/v1/v2` replaced by copies of its
`a0/a1/a2`; 1-D tensors, norms, `time_mix_w1/w2` and the fused mixes kept in F32; a Q8_0
tensor whose rows do not split into 32-value blocks falls back to F16. The World vocabulary
is written as `tokenizer.ggml.model = "rwkv"` with token 0 `<s>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rwkv_tui.trainer.atomic import atomic_path
from rwkv_tui.trainer.errors import CheckpointError, RwkvTuiError
from rwkv_tui.trainer.export_common import (
    ExportSource,
    Progress,
    ensure_free_space,
    ensure_output_free,
    load_export_source,
    no_progress,
    parse_outtype,
    require_rwkv7,
    tensor_bytes,
)
from rwkv_tui.trainer.spec import ModelSpec

GGUF_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
ARCH = "rwkv7"
CONTEXT_LENGTH = 1048576  # the converter's value: RWKV is not context limited
END_OF_TURN_TOKEN = 261  # "\n\n", what the converter marks as EOT so chats stop
_LERP_ORDER = ("r", "w", "k", "v", "a", "g")
_TOP_LEVEL = {"emb.weight": "token_embd.weight", "ln_out.weight": "output_norm.weight",
              "ln_out.bias": "output_norm.bias", "head.weight": "output.weight",
              "blocks.0.ln0.weight": "token_embd_norm.weight", "blocks.0.ln0.bias": "token_embd_norm.bias"}
_BLOCK_NAMES = {"ln1": "attn_norm", "ln2": "attn_norm_2", "att.receptance": "time_mix_receptance",
                "att.key": "time_mix_key", "att.value": "time_mix_value", "att.output": "time_mix_output",
                "att.ln_x": "time_mix_ln", "ffn.x_k": "channel_mix_lerp_k", "ffn.key": "channel_mix_key",
                "ffn.value": "channel_mix_value",
                **{f"att.{name}": f"time_mix_{name}" for name in
                   ("w0", "w1", "w2", "a0", "a1", "a2", "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k")}}
_ALWAYS_F32 = ("time_mix_w1.weight", "time_mix_w2.weight", "time_mix_lerp_fused.weight")


@dataclass(frozen=True)
class GgufTensor:
    name: str
    data: np.ndarray  # float32, numpy (row-major) order; GGUF stores the dims reversed


def require_gguf():
    try:
        import gguf
    except ImportError:
        raise RwkvTuiError("GGUF export needs the gguf package",
                           hint="pip install 'rwkv-tui[export]'  (or: pip install gguf)") from None
    return gguf


# ---------------------------------------------------------------------------- tensors


def gguf_tensors(tensors: dict[str, torch.Tensor], spec: ModelSpec) -> list[GgufTensor]:
    out = [GgufTensor(name, _numpy(tensors[key])) for key, name in _TOP_LEVEL.items()]
    for layer in range(spec.n_layer):
        out.extend(_block_tensors(tensors, layer))
    return out


def _block_tensors(tensors: dict[str, torch.Tensor], layer: int) -> list[GgufTensor]:
    prefix = f"blocks.{layer}."
    out = [_lerp_fused(tensors, layer)]
    for local, gguf_name in _BLOCK_NAMES.items():
        if layer == 0 and local in ("att.v0", "att.v1", "att.v2"):
            continue  # unused in block 0; the converter writes copies of a0/a1/a2 instead
        for suffix in ("weight", "bias") if _has_weight_suffix(local) else ("",):
            key = prefix + local + (f".{suffix}" if suffix else "")
            if key not in tensors:
                continue
            name = f"blk.{layer}.{gguf_name}.{suffix or 'weight'}"
            data = _converted(local, tensors[key])
            out.append(GgufTensor(name, data))
            if layer == 0 and local in ("att.a0", "att.a1", "att.a2"):
                out.append(GgufTensor(name.replace("time_mix_a", "time_mix_v"), data))
    return out


def _has_weight_suffix(local: str) -> bool:
    return local.startswith(("ln", "ffn.key", "ffn.value")) or local in (
        "att.receptance", "att.key", "att.value", "att.output", "att.ln_x")


def _converted(local: str, tensor: torch.Tensor) -> np.ndarray:
    if local[-1] in "12" and local[-2] in "wavg":
        return _numpy(tensor.t())
    if local == "att.r_k":
        return _numpy(tensor.reshape(-1))
    return _numpy(tensor.squeeze())


def _lerp_fused(tensors: dict[str, torch.Tensor], layer: int) -> GgufTensor:
    stacked = torch.stack([tensors[f"blocks.{layer}.att.x_{m}"] for m in _LERP_ORDER])  # [6, 1, 1, C]
    return GgufTensor(f"blk.{layer}.time_mix_lerp_fused.weight", _numpy(stacked))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().contiguous().numpy()


def storage_type(name: str, data: np.ndarray, outtype: str):
    """The GGML type the converter stores this tensor as for `--outtype`."""
    gguf = require_gguf()
    qtypes = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
              "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    if data.ndim <= 1 or name.endswith("_norm.weight") or name.endswith(_ALWAYS_F32) \
            or not name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return qtypes[outtype]


def encoded(name: str, data: np.ndarray, outtype: str):
    """(bytes as numpy, GGML type): quantized, or F16 where Q8_0's 32-value blocks do not fit."""
    gguf = require_gguf()
    qtype = storage_type(name, data, outtype)
    if qtype == gguf.GGMLQuantizationType.F32:
        return data, qtype
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


# ---------------------------------------------------------------------------- metadata


def world_vocabulary(vocab_size: int, path: Path | None = None) -> tuple[list[bytes], list[int]]:
    """(tokens, token types) as the converter writes the World vocabulary: `<s>` at 0, each
    token's bytes escaped as Python writes them, `[PAD{i}]` up to the model's vocab size."""
    gguf = require_gguf()
    from rwkv_tui.trainer.world_tokenizer import find_vocab_file, parse_vocab

    path = path or find_vocab_file()
    table = parse_vocab(path)
    if len(table) + 1 > vocab_size:
        raise CheckpointError(
            f"the model's vocabulary ({vocab_size} tokens) is smaller than the RWKV World vocabulary "
            f"({len(table) + 1}); llama.cpp's RWKV tokenizer needs the World vocabulary", path=path,
            hint="GGUF export supports World-vocabulary models (vocab size 65536)")
    tokens = [b"<s>"] + [repr(table[i])[2:-1].encode("utf-8") for i in range(1, len(table) + 1)]
    types = [gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * len(table)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode("utf-8"))
        types.append(gguf.TokenType.UNUSED)
    return tokens, types


def file_type(outtype: str):
    gguf = require_gguf()
    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]


def write_metadata(writer, spec: ModelSpec, outtype: str, name: str) -> None:
    gguf = require_gguf()
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_layer_norm_eps(1e-5)
    writer.add_wkv_head_size(spec.head_size)
    writer.add_decay_lora_rank(spec.d_decay)
    writer.add_iclr_lora_rank(spec.d_aaa)
    writer.add_value_residual_mix_lora_rank(spec.d_mv)
    writer.add_gate_lora_rank(spec.d_gate)
    writer.add_feed_forward_length(spec.dim_ffn)
    writer.add_file_type(file_type(outtype))
    writer.add_head_count(0)  # required by llama.cpp, unused for RWKV
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types = world_vocabulary(spec.vocab_size)
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_eot_token_id(END_OF_TURN_TOKEN)
    writer.add_chat_template("rwkv-world")


# ---------------------------------------------------------------------------- the export


_BYTES_PER_VALUE = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32}


def write_gguf_file(source: ExportSource, out: Path, outtype: str = "f16", force: bool = False,
                    progress: Progress = no_progress) -> Path:
    parse_outtype(outtype, {t: t for t in GGUF_OUTTYPES}, "GGUF")
    gguf = require_gguf()
    require_rwkv7(source.spec, source.path, "GGUF")
    ensure_output_free(out, force)
    ensure_free_space(out, tensor_bytes(source.tensors, _BYTES_PER_VALUE[outtype]))
    tensors = gguf_tensors(source.tensors, source.spec)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(path=str(tmp), arch=ARCH)
        write_metadata(writer, source.spec, outtype, out.stem)
        for done, tensor in enumerate(tensors, 1):
            data, qtype = encoded(tensor.name, tensor.data, outtype)
            writer.add_tensor(tensor.name, data, raw_dtype=qtype)
            progress(done, len(tensors))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def export_gguf(source: str | Path, out: str | Path, outtype: str = "f16", adapter: str | Path | None = None,
                force: bool = False, alpha: float | None = None, progress: Progress = no_progress) -> Path:
    """`source` (with `adapter` merged in memory) as a llama.cpp GGUF file at `out`."""
    parse_outtype(outtype, {t: t for t in GGUF_OUTTYPES}, "GGUF")
    require_gguf()
    return write_gguf_file(load_export_source(source, adapter, alpha), Path(out), outtype, force, progress)
