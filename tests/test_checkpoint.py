"""Checkpoint loading: spec inference, and a specific error for every kind of bad file."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_tui.trainer.checkpoint import (
    detect_version,
    inspect_checkpoint,
    load_checkpoint,
    load_state_dict,
    save_state_dict,
)
from rwkv_tui.trainer.errors import CheckpointError, UnsupportedModelError


@pytest.mark.parametrize(
    "n_layer,n_embd,vocab,head_size,dtype",
    [(2, 64, 256, 16, torch.float32), (3, 128, 1000, 32, torch.bfloat16), (4, 256, 65536, 64, torch.bfloat16)],
)
def test_spec_is_inferred_from_the_tensors(tmp_path, n_layer, n_embd, vocab, head_size, dtype):
    path, spec = write_tiny_checkpoint(tmp_path, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab,
                                       head_size=head_size, dtype=dtype, d_decay=16, d_aaa=24, d_mv=8, d_gate=32)
    got = inspect_checkpoint(path)
    assert got.version == "x070"
    assert (got.n_layer, got.n_embd, got.vocab_size) == (n_layer, n_embd, vocab)
    assert (got.n_head, got.head_size) == (n_embd // head_size, head_size)
    assert (got.d_decay, got.d_aaa, got.d_mv, got.d_gate) == (16, 24, 8, 32)
    assert got.dim_ffn == 4 * n_embd
    assert got.dtype == str(dtype).removeprefix("torch.")
    assert got.n_params == spec.n_params == sum(t.numel() for t in torch.load(path, weights_only=True).values())


def test_block0_value_residual_placeholders_are_tolerated(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    sd = torch.load(path, weights_only=True)
    sd["blocks.0.att.v0"] = torch.ones(1, 1, 64)
    sd["blocks.0.att.v1"] = torch.ones(64, 4)
    sd["blocks.0.att.v2"] = torch.ones(4, 64)
    torch.save(sd, tmp_path / "with_v.pth")
    spec = inspect_checkpoint(tmp_path / "with_v.pth")
    assert spec.d_mv == 4


def test_saved_file_uses_official_names_and_bf16(tmp_path):
    path, spec = write_tiny_checkpoint(tmp_path, dtype=torch.bfloat16)
    sd = torch.load(path, weights_only=True)
    assert {"emb.weight", "head.weight", "blocks.0.ln0.weight", "blocks.1.att.v1", "blocks.1.ffn.value.weight"} <= set(sd)
    assert all(t.dtype == torch.bfloat16 for t in sd.values())
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_atomic_save_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path, _ = write_tiny_checkpoint(tmp_path)
    before = path.read_bytes()

    def exploding_save(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_state_dict({"x": torch.ones(2)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["tiny.pth"]


# ------------------------------------------------------------------ every bad file has its own message


def _message(exc_info) -> str:
    return str(exc_info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as exc:
        load_state_dict(tmp_path / "nope.pth")
    assert "nope.pth" in _message(exc)


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_state_dict(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(tmp_path / "empty.pth")


def test_not_a_torch_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(bad)


def test_safetensors_file_gets_a_hint(tmp_path):
    from safetensors.torch import save_file

    st = tmp_path / "model.st"
    save_file({"emb.weight": torch.ones(4, 4)}, str(st))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_state_dict(st)


def test_truncated_file(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(cut)


def test_corrupt_file(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    # Overwrite the zip's central directory records so the archive index is garbage.
    idx = data.rfind(b"PK\x01\x02")
    data[idx: idx + 40] = b"\xff" * 40
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load_state_dict(bad)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run > pwned.txt",))


def test_pickle_that_carries_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.ones(2, 2), "payload": _RunsCode()}, evil)
    with pytest.raises(CheckpointError, match="refused") as exc:
        load_state_dict(evil)
    assert "run code" in _message(exc)
    assert not (tmp_path / "pwned.txt").exists()


def test_legacy_serialization_still_loads(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    sd = torch.load(path, weights_only=True)
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    assert inspect_checkpoint(legacy).n_layer == 2


def test_non_tensor_content(tmp_path):
    odd = tmp_path / "list.pth"
    torch.save([torch.ones(2)], odd)
    with pytest.raises(CheckpointError, match="dict of named tensors"):
        load_state_dict(odd)


def test_missing_keys_are_named(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    sd = torch.load(path, weights_only=True)
    del sd["blocks.1.att.k_k"]
    del sd["blocks.0.ffn.value.weight"]
    torch.save(sd, tmp_path / "holes.pth")
    with pytest.raises(CheckpointError, match="missing tensors") as exc:
        load_checkpoint(tmp_path / "holes.pth")
    assert "blocks.1.att.k_k" in _message(exc) and "blocks.0.ffn.value.weight" in _message(exc)


def test_inconsistent_shapes_are_named(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    sd = torch.load(path, weights_only=True)
    sd["blocks.1.att.key.weight"] = torch.ones(64, 48)
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="inconsistent shapes") as exc:
        load_checkpoint(tmp_path / "mixed.pth")
    assert "blocks.1.att.key.weight is [64, 48], expected [64, 64]" in _message(exc)


def test_adapter_file_is_not_a_model(tmp_path):
    lora = {"blocks.0.att.key.lora_A": torch.ones(4, 64), "blocks.0.att.key.lora_B": torch.ones(64, 4)}
    torch.save(lora, tmp_path / "adapter.pth")
    with pytest.raises(CheckpointError, match="not an RWKV checkpoint"):
        load_checkpoint(tmp_path / "adapter.pth")


@pytest.mark.parametrize("version,name", [("x060", "RWKV-6"), ("x052", "RWKV-5")])
def test_rwkv6_and_rwkv5_specs_are_read_from_the_weights(tmp_path, version, name):
    path, spec = write_tiny_checkpoint(tmp_path, version=version, n_layer=3, n_embd=96, head_size=32)
    got = inspect_checkpoint(path)
    assert got.version == version and got.display_name.startswith(name)
    assert (got.n_layer, got.n_embd, got.n_head, got.head_size, got.vocab_size) == (3, 96, 3, 32, 256)
    assert (got.dim_ffn, got.d_mix, got.d_decay) == (spec.dim_ffn, spec.d_mix, spec.d_decay)
    assert got.n_params == spec.n_params


def test_rwkv6_missing_and_misshapen_tensors_are_named(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, version="x060")
    sd = torch.load(path, weights_only=True)
    del sd["blocks.1.ffn.time_maa_r"], sd["blocks.0.att.gate.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="blocks.0.att.gate.weight, blocks.1.ffn.time_maa_r"):
        load_checkpoint(tmp_path / "missing.pth")
    sd = torch.load(path, weights_only=True)
    sd["blocks.1.att.time_decay_w2"] = torch.ones(3, 64)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"blocks.1.att.time_decay_w2 is \[3, 64\], expected \[16, 64\]"):
        load_checkpoint(tmp_path / "shape.pth")


def test_rwkv4_is_recognised_and_refused(tmp_path):
    keys = ["blocks.0.att.time_first", "blocks.0.att.time_decay", "emb.weight"]
    assert detect_version(keys) == "x040"
    torch.save({k: torch.ones(2) for k in keys}, tmp_path / "old.pth")
    with pytest.raises(UnsupportedModelError, match="RWKV-4.*not supported"):
        load_checkpoint(tmp_path / "old.pth")


# ------------------------------------------------------------------ the CLI


def test_inspect_cli_table_and_json(tmp_path, capsys):
    from rwkv_tui.cli import main

    path, spec = write_tiny_checkpoint(tmp_path, n_layer=3, n_embd=128, head_size=32, seed=7)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "RWKV-7 (x070)" in out and "128" in out and "4 × head size 32" in out
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_layer"] == 3 and data["n_head"] == 4 and data["n_params"] == spec.n_params


def test_inspect_cli_bad_input_exits_2_without_traceback(tmp_path, capsys):
    from rwkv_tui.cli import main

    assert main(["inspect", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "file not found" in err and "Traceback" not in err
