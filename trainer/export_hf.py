"""Hugging Face export: the fla-hub RWKV7 layout (flash-linear-attention's `RWKV7ForCausalLM`).

The folder holds `config.json` (model_type "rwkv7"), `model.safetensors` and the World
tokenizer (`rwkv_vocab_v20230424.txt`, `hf_rwkv_tokenizer.py`, `tokenizer_config.json`,
`special_tokens_map.json`). transformers loads it after `import fla`; llama.cpp's
`convert_hf_to_gguf.py` converts it.

Key mapping (the facts of flash-linear-attention's `utils/convert_from_rwkv7.py`):
`emb`→`model.embeddings`, `ln_out`→`model.norm`, `head`→`lm_head`, `blocks.i`→`model.layers.i`
with `att`→`attn`, `ln0/ln1/ln2`→`pre_norm/attn_norm/ffn_norm`, `receptance/key/value/output/ln_x`
→`r_proj/k_proj/v_proj/o_proj/g_norm`, and each low-rank `{w,a,v,g}{0,1,2}` →
`{x}_lora.lora.{2.bias, 0.weight, 2.weight}` with `1` and `2` transposed (they become
nn.Linear weights). `[1, 1, C]` vectors are stored as `[C]`, except the attention's token-shift
mixes `attn.x_*`, which keep `[1, 1, C]`. Block 0's `v0/v1/v2` are unused and dropped.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.export_common import (
    ExportSource,
    Progress,
    atomic_output_dir,
    cast_floating,
    ensure_free_space,
    ensure_output_free,
    load_export_source,
    no_progress,
    parse_outtype,
    require_rwkv7,
    tensor_bytes,
)
from rwkv_tui.trainer.spec import ModelSpec

HF_OUTTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
WEIGHTS_FILE = "model.safetensors"
END_OF_TEXT = "<|rwkv_tokenizer_end_of_text|>"

_TOP_LEVEL = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
              "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}
_BLOCK_PARTS = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
_ATTENTION_PROJECTIONS = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj",
                          "ln_x": "g_norm"}
_LORA_SLOTS = {"0": "lora.2.bias", "1": "lora.0.weight", "2": "lora.2.weight"}
_UNUSED = {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
_LOW_RANK = re.compile(r"^([wvag])([012])$")


# ---------------------------------------------------------------------------- key mapping


def fla_key(key: str) -> str | None:
    """The fla-hub name of an official tensor name, or None for the unused block-0 v0/v1/v2."""
    if key in _UNUSED:
        return None
    if key in _TOP_LEVEL:
        return _TOP_LEVEL[key]
    parts = key.split(".")
    if parts[0] != "blocks" or len(parts) < 4 or parts[2] not in _BLOCK_PARTS:
        raise CheckpointError(f"{key} has no place in the Hugging Face RWKV7 layout",
                              hint="export a plain RWKV-7 model (merge adapters with --adapter)")
    part = _BLOCK_PARTS[parts[2]]
    leaf = parts[3]
    if part == "attn" and (low_rank := _LOW_RANK.match(leaf)):
        kind, slot = low_rank.groups()
        return f"model.layers.{parts[1]}.attn.{kind}_lora.{_LORA_SLOTS[slot]}"
    if part == "attn" and leaf in _ATTENTION_PROJECTIONS:
        leaf = _ATTENTION_PROJECTIONS[leaf]
    return ".".join(["model.layers", parts[1], part, leaf, *parts[4:]])


def fla_tensor(key: str, fla_name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Transpose the low-rank matrices into nn.Linear weights; `[1, 1, C]` vectors become `[C]`
    except the attention's `x_*` mixes."""
    if fla_name.endswith(("lora.0.weight", "lora.2.weight")):
        return tensor.t().contiguous()
    if tensor.dim() == 3 and tensor.shape[:2] == (1, 1) and ".attn.x_" not in fla_name:
        return tensor.reshape(-1)
    return tensor.contiguous()


def hf_state_dict(tensors: dict[str, torch.Tensor], dtype: torch.dtype,
                  progress: Progress = no_progress) -> dict[str, torch.Tensor]:
    out = {}
    for done, (key, tensor) in enumerate(tensors.items(), 1):
        if (name := fla_key(key)) is not None:
            out[name] = cast_floating(fla_tensor(key, name, tensor), dtype).contiguous()
        progress(done, len(tensors))
    return out


def official_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse mapping: fla-hub tensors back under the official names and shapes."""
    inverse = {v: k for k, v in _TOP_LEVEL.items()}
    parts_back = {v: k for k, v in _BLOCK_PARTS.items()}
    projections_back = {v: k for k, v in _ATTENTION_PROJECTIONS.items()}
    slots_back = {v: k for k, v in _LORA_SLOTS.items()}
    out = {}
    for name, tensor in hf.items():
        if name in inverse:
            out[inverse[name]] = tensor
            continue
        _, _, layer, part, leaf, *rest = name.split(".")
        part = parts_back[part]
        if leaf.endswith("_lora"):
            slot = slots_back[".".join(rest)]
            key = f"blocks.{layer}.att.{leaf[0]}{slot}"
            out[key] = tensor.t().contiguous() if slot in "12" else tensor.reshape(1, 1, -1)
            continue
        leaf = projections_back.get(leaf, leaf) if part == "att" else leaf
        key = ".".join(["blocks", layer, part, leaf, *rest])
        out[key] = tensor.reshape(1, 1, -1) if leaf in ("k_k", "k_a") or key.endswith("ffn.x_k") else tensor
    return out


def read_hf_export(folder: str | Path) -> dict[str, torch.Tensor]:
    """An exported folder's weights under the official names (to check or re-import an export)."""
    from safetensors.torch import load_file

    return official_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))


# ---------------------------------------------------------------------------- config and tokenizer


def hf_config(spec: ModelSpec, dtype: torch.dtype) -> dict:
    """config.json for fla's RWKV7Config (fields as its converter fills them)."""
    return {
        "architectures": ["RWKV7ForCausalLM"],
        "model_type": "rwkv7",
        "attn_mode": "chunk",
        "hidden_size": spec.n_embd,
        "hidden_ratio": spec.dim_ffn / spec.n_embd,
        "intermediate_size": spec.dim_ffn,
        "num_hidden_layers": spec.n_layer,
        "head_dim": spec.head_size,
        "num_heads": spec.n_head,
        "decay_low_rank_dim": spec.d_decay,
        "gate_low_rank_dim": spec.d_gate,
        "a_low_rank_dim": spec.d_aaa,
        # fla's converter falls back to 32 when there is no block 1 to read the width from
        "v_low_rank_dim": spec.d_mv or 32,
        "value_dim": [spec.n_embd] * spec.n_layer,
        "hidden_act": "sqrelu",
        "max_position_embeddings": 4096,
        "norm_first": True,
        "norm_bias": True,
        "norm_eps": 1e-5,
        "attn": None,
        "use_cache": True,
        "fuse_norm": True,
        "fuse_cross_entropy": True,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "vocab_size": spec.vocab_size,
        # RWKV World: token 0 both starts and ends a text
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def tokenizer_config() -> dict:
    special = {"content": END_OF_TEXT, "lstrip": False, "normalized": False, "rstrip": False,
               "single_word": False, "special": True}
    return {
        "tokenizer_class": "RwkvTokenizer",
        "auto_map": {"AutoTokenizer": ["hf_rwkv_tokenizer.RwkvTokenizer", None]},
        "added_tokens_decoder": {"0": special},
        **special_tokens_map(),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000_000,
    }


def special_tokens_map() -> dict:
    return {name: END_OF_TEXT for name in ("bos_token", "eos_token", "unk_token", "pad_token")}


# Our own transformers tokenizer for the World vocabulary: greedy longest byte match, the rule
# the World tokenizer follows. Tokens are byte strings shown as latin-1 text (one character per
# byte), so every token, valid UTF-8 or not, is a reversible string key.
TOKENIZER_SOURCE = '''"""RWKV World tokenizer for transformers, written by rwkv-tui's Hugging Face export."""

import ast
import os
import shutil

from transformers import PreTrainedTokenizer

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
END_OF_TEXT = "<|rwkv_tokenizer_end_of_text|>"


def read_vocab(path):
    """id -> token bytes; each line is `<id> <python literal> <byte length>`."""
    table = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            first, last = line.index(" "), line.rstrip().rindex(" ")
            token = ast.literal_eval(line[first:last].strip())
            table[int(line[:first])] = token.encode("utf-8") if isinstance(token, str) else token
    return table


class RwkvTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, **kwargs):
        self.vocab_file = vocab_file
        table = read_vocab(vocab_file)
        self.encoder = {data.decode("latin-1"): idx for idx, data in table.items()}
        self.encoder[END_OF_TEXT] = 0
        self.decoder = {idx: token for token, idx in self.encoder.items()}
        self.longest = max(len(data) for data in table.values())
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            kwargs.setdefault(name, END_OF_TEXT)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return len(self.encoder)

    def get_vocab(self):
        return {**self.encoder, **self.added_tokens_encoder}

    def _tokenize(self, text, **kwargs):
        data = text.encode("utf-8")
        tokens, start = [], 0
        while start < len(data):
            for end in range(min(len(data), start + self.longest), start, -1):
                piece = data[start:end].decode("latin-1")
                if piece in self.encoder:
                    tokens.append(piece)
                    start = end
                    break
            else:
                raise ValueError(f"byte {data[start]} is not in the RWKV World vocabulary")
        return tokens

    def _convert_token_to_id(self, token):
        return self.encoder.get(token, 0)

    def _convert_id_to_token(self, index):
        return self.decoder.get(index, END_OF_TEXT)

    def convert_tokens_to_string(self, tokens):
        data = b"".join(token.encode("latin-1") for token in tokens if token != END_OF_TEXT)
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory, filename_prefix=None):
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)
'''


def write_tokenizer_files(folder: Path) -> None:
    from rwkv_tui.trainer.world_tokenizer import VOCAB_FILE, find_vocab_file

    shutil.copyfile(find_vocab_file(), folder / VOCAB_FILE)
    (folder / "hf_rwkv_tokenizer.py").write_text(TOKENIZER_SOURCE, encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", tokenizer_config())
    _write_json(folder / "special_tokens_map.json", special_tokens_map())


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- the export


def default_dtype(spec: ModelSpec) -> str:
    """The base's own dtype when the layout can hold it (official files are bf16)."""
    return {"float32": "f32", "float16": "f16"}.get(spec.dtype, "bf16")


def write_hf_folder(source: ExportSource, out: Path, outtype: str | None = None, force: bool = False,
                    progress: Progress = no_progress) -> Path:
    require_rwkv7(source.spec, source.path, "Hugging Face")
    dtype = parse_outtype(outtype or default_dtype(source.spec), HF_OUTTYPES, "Hugging Face")
    ensure_output_free(out, force, folder=True)
    ensure_free_space(out, tensor_bytes(source.tensors, torch.finfo(dtype).bits / 8))
    from safetensors.torch import save_file

    weights = hf_state_dict(source.tensors, dtype, progress)
    with atomic_output_dir(out, force) as folder:
        save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        _write_json(folder / "config.json", hf_config(source.spec, dtype))
        write_tokenizer_files(folder)
    return out


def export_hf(source: str | Path, out: str | Path, outtype: str | None = None, adapter: str | Path | None = None,
              force: bool = False, alpha: float | None = None, progress: Progress = no_progress) -> Path:
    """`source` (with `adapter` merged in memory) as a fla-hub RWKV7 folder at `out`."""
    return write_hf_folder(load_export_source(source, adapter, alpha), Path(out), outtype, force, progress)
