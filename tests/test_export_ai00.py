"""Ai00 export: the converter's rules (Ai00-X/ai00_server and web-rwkv
`assets/scripts/convert_safetensors.py`) and a reader that detects versions and sizes the way
web-rwkv's `src/runtime/loader.rs` does. Both are written here from those facts, independently
of trainer/export.py."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_tui.trainer.checkpoint import load_state_dict
from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.export import export_ai00

WIDTHS = {"x070": {"d_decay": 8, "d_aaa": 12, "d_mv": 4, "d_gate": 20}, "x060": {"d_mix": 8, "d_decay": 16},
          "x052": {}}

# The converter's rules, as written there: names renamed (substring replace), then the last two dims
# swapped when the new name contains any of these, every tensor in fp16.
RENAMES = {"time_faaaa": "time_first", "time_maa": "time_mix"}
TRANSPOSED_PARTS = ["time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
                    "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "time_state"]

# What those rules give for the tensors of block 1, spelled out per version: ours -> (Ai00's name, transposed).
FACTS = {
    "x070": {"att.w1": ("att.w1", True), "att.w2": ("att.w2", True), "att.a1": ("att.a1", True),
             "att.a2": ("att.a2", True), "att.g1": ("att.g1", True), "att.g2": ("att.g2", True),
             "att.v1": ("att.v1", True), "att.v2": ("att.v2", True), "att.v0": ("att.v0", False),
             "att.w0": ("att.w0", False), "att.x_r": ("att.x_r", False), "att.r_k": ("att.r_k", False),
             "att.key.weight": ("att.key.weight", False), "ffn.x_k": ("ffn.x_k", False)},
    "x060": {"att.time_maa_x": ("att.time_mix_x", False), "att.time_maa_w": ("att.time_mix_w", False),
             "att.time_maa_w1": ("att.time_mix_w1", True), "att.time_maa_w2": ("att.time_mix_w2", True),
             "att.time_decay_w1": ("att.time_decay_w1", True), "att.time_decay_w2": ("att.time_decay_w2", True),
             "att.time_decay": ("att.time_decay", False), "att.time_faaaa": ("att.time_first", False),
             "att.gate.weight": ("att.gate.weight", False), "ffn.time_maa_k": ("ffn.time_mix_k", False),
             "ffn.time_maa_r": ("ffn.time_mix_r", False)},
    "x052": {"att.time_mix_k": ("att.time_mix_k", False), "att.time_faaaa": ("att.time_first", False),
             "att.time_decay": ("att.time_decay", False), "ffn.time_mix_r": ("ffn.time_mix_r", False),
             "att.gate.weight": ("att.gate.weight", False)},
}


def converter_name(key: str) -> str:
    for old, new in RENAMES.items():
        if old in key:
            key = key.replace(old, new)
    return key


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, read byte by byte as its format defines it."""
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return json.loads(handle.read(size))


@dataclass(frozen=True)
class WebRwkvInfo:
    version: str
    num_layer: int
    num_emb: int
    num_hidden: int
    num_vocab: int
    num_head: int
    custom: dict


def web_rwkv_info(path: Path) -> WebRwkvInfo:
    """Model info the way web-rwkv's `Loader::info` reads it: version from which names exist, in
    its match order, and the sizes from the first dimension of the named tensors."""
    header = read_safetensors_header(path)
    names = {k for k in header if k != "__metadata__"}

    def shape(name: str) -> list[int]:
        return header[name]["shape"]

    def has(*suffixes: str) -> bool:
        return all(f"blocks.0.{s}" in names for s in suffixes)

    v4 = has("att.time_decay", "att.time_first", "att.time_mix_k", "att.time_mix_v", "att.time_mix_r")
    v5 = has("att.gate.weight", "att.ln_x.weight", "att.ln_x.bias")
    v6 = has("att.time_mix_x", "att.time_mix_w", "att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
             "att.time_mix_g", "att.time_mix_w1", "att.time_mix_w2", "att.time_decay_w1", "att.time_decay_w2",
             "ffn.time_mix_k", "ffn.time_mix_r")
    v7 = has("att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.w1", "att.w2",
             "att.a0", "att.a1", "att.a2", "att.g1", "att.g2", "att.r_k", "att.k_k", "att.k_a")
    if v4 and not (v5 or v6 or v7):
        version = "v4"
    elif v5 and not (v6 or v7):
        version = "v5"
    elif v6 and not v7:
        version = "v6"
    elif v7:
        version = "v7"
    else:
        raise AssertionError("web-rwkv: invalid model version")
    num_head = {"v4": 1, "v5": None, "v6": None}.get(version)
    if version in ("v5", "v6"):
        num_head = shape("blocks.0.att.time_first")[0]
    elif version == "v7":
        num_head = shape("blocks.0.att.r_k")[0]
    custom = {}
    if version == "v6":
        custom = {"time_mix": shape("blocks.0.att.time_mix_w1")[0] // 5,
                  "time_decay": shape("blocks.0.att.time_decay_w1")[0]}
    elif version == "v7":
        custom = {"w": shape("blocks.0.att.w1")[0], "a": shape("blocks.0.att.a1")[0],
                  "g": shape("blocks.0.att.g1")[0], "v": shape("blocks.1.att.v1")[0]}
    layers = 1 + max(int(n.split(".")[1]) for n in names if n.startswith("blocks."))
    return WebRwkvInfo(version, layers, shape("emb.weight")[1], shape("blocks.0.ffn.key.weight")[0],
                       shape("emb.weight")[0], num_head, custom)


def tiny(tmp_path: Path, version: str, dtype=torch.bfloat16):
    return write_tiny_checkpoint(tmp_path, version=version, n_layer=3, n_embd=64, vocab_size=256, head_size=16,
                                 dtype=dtype, **WIDTHS[version])


@pytest.mark.parametrize("version", ["x070", "x060", "x052"])
def test_model_export_follows_the_converter_rules(tmp_path, version):
    from safetensors.torch import load_file

    path, _ = tiny(tmp_path, version)
    out = export_ai00(path, tmp_path / "model.st")
    source, exported = load_state_dict(path), load_file(str(out))
    assert set(exported) == {converter_name(k) for k in source}
    for ours, (theirs, transposed) in FACTS[version].items():
        expected = source[f"blocks.1.{ours}"].half()
        assert torch.equal(exported[f"blocks.1.{theirs}"], expected.transpose(-1, -2) if transposed else expected)
    for key, tensor in source.items():
        name = converter_name(key)
        expected = tensor.half()
        if any(part in name for part in TRANSPOSED_PARTS):
            expected = expected.transpose(-1, -2)
        assert exported[name].dtype == torch.float16 and torch.equal(exported[name], expected), key
    header = read_safetensors_header(out)
    assert header["__metadata__"]["format"] == "pt"
    assert {entry["dtype"] for name, entry in header.items() if name != "__metadata__"} == {"F16"}


@pytest.mark.parametrize("version,expected", [
    ("x070", {"w": 8, "a": 12, "g": 20, "v": 4}),
    ("x060", {"time_mix": 8, "time_decay": 16}),
    ("x052", {}),
])
def test_web_rwkv_detects_the_version_and_sizes(tmp_path, version, expected):
    path, spec = tiny(tmp_path, version)
    info = web_rwkv_info(export_ai00(path, tmp_path / "model.st"))
    assert info == WebRwkvInfo({"x070": "v7", "x060": "v6", "x052": "v5"}[version], spec.n_layer, spec.n_embd,
                               spec.dim_ffn, spec.vocab_size, spec.n_head, expected)


def test_web_rwkv_multiplies_with_every_low_rank_matrix_as_out_by_in(tmp_path):
    """web-rwkv's matmul reads each matrix as [out, in], as it reads key.weight: x070's w1 maps C -> d."""
    path, spec = tiny(tmp_path, "x070")
    header = read_safetensors_header(export_ai00(path, tmp_path / "model.st"))
    C = spec.n_embd
    for layer in (1, 2):
        for letter, width in (("w", 8), ("a", 12), ("g", 20), ("v", 4)):
            assert header[f"blocks.{layer}.att.{letter}1"]["shape"] == [width, C]
            assert header[f"blocks.{layer}.att.{letter}2"]["shape"] == [C, width]
        assert header[f"blocks.{layer}.att.key.weight"]["shape"] == [C, C]


@pytest.mark.parametrize("version", ["x070", "x060"])
def test_state_export_is_fp16_and_key_major(tmp_path, version):
    """web-rwkv's `read_state` loads `blocks.{i}.att.time_state` for every layer as an f16 matrix."""
    from safetensors.torch import load_file

    _, spec = tiny(tmp_path, version)
    g = torch.Generator().manual_seed(4)
    states = {f"blocks.{i}.att.time_state": torch.randn(spec.n_head, spec.head_size, spec.head_size, generator=g)
              for i in range(spec.n_layer)}
    torch.save(states, tmp_path / "state.pth")
    out = export_ai00(tmp_path / "state.pth", tmp_path / "state.st")
    exported = load_file(str(out))
    assert set(exported) == set(states)
    for key, state in states.items():
        assert exported[key].dtype == torch.float16
        assert torch.equal(exported[key], state.half().transpose(-1, -2))
    assert read_safetensors_header(out)["__metadata__"]["rwkv_tui_kind"] == "state"


def test_not_a_model_is_refused_and_nothing_is_written(tmp_path):
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not an RWKV checkpoint"):
        export_ai00(tmp_path / "junk.pth", tmp_path / "junk.st")
    assert not (tmp_path / "junk.st").exists()


def test_weights_beyond_fp16_are_refused_and_nothing_is_written(tmp_path):
    path, _ = tiny(tmp_path, "x070", dtype=torch.float32)
    weights = load_state_dict(path)
    weights["blocks.2.ffn.value.weight"][0, 0] = 1e6
    torch.save(weights, tmp_path / "diverged.pth")
    with pytest.raises(CheckpointError, match=r"blocks.2.ffn.value.weight has values beyond fp16's range"):
        export_ai00(tmp_path / "diverged.pth", tmp_path / "diverged.st")
    assert list(tmp_path.glob("diverged.st*")) == [] and list(tmp_path.glob(".diverged.st*")) == []
