"""Hugging Face export (fla-hub RWKV7 layout): read back into our model with equal logits."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_tui.cli import main
from rwkv_tui.trainer.checkpoint import load_checkpoint
from rwkv_tui.trainer.errors import CheckpointError, ConfigError
from rwkv_tui.trainer.export_hf import export_hf, read_hf_export
from rwkv_tui.trainer.model import model_from_state_dict

EXPECTED_FILES = {"config.json", "model.safetensors", "rwkv_vocab_v20230424.txt", "hf_rwkv_tokenizer.py",
                  "tokenizer_config.json", "special_tokens_map.json"}


def logits(state_dict, spec, tokens=(1, 5, 9, 200, 3)):
    with torch.no_grad():
        return model_from_state_dict(state_dict, spec)(torch.tensor([tokens]))[0]


def test_the_export_reads_back_into_our_model_with_equal_logits(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    base, spec = load_checkpoint(path)
    out = export_hf(path, tmp_path / "hf", outtype="f32")
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    back = read_hf_export(out)
    assert set(back) == set(base)
    assert torch.equal(logits(back, spec), logits(base, spec))


def test_config_and_key_layout_follow_fla(tmp_path):
    from safetensors import safe_open

    path, spec = write_tiny_checkpoint(tmp_path, dtype=torch.bfloat16)
    out = export_hf(path, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "rwkv7" and config["architectures"] == ["RWKV7ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (64, 2, 16)
    assert (config["decay_low_rank_dim"], config["a_low_rank_dim"], config["v_low_rank_dim"],
            config["gate_low_rank_dim"]) == (spec.d_decay, spec.d_aaa, spec.d_mv, spec.d_gate)
    assert config["torch_dtype"] == "bfloat16"  # the base's dtype by default
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.1.attn.w_lora.lora.0.weight").shape == (spec.d_decay, 64)
        assert f.get_tensor("model.layers.1.attn.w_lora.lora.2.bias").shape == (64,)
        assert f.get_tensor("model.layers.1.attn.x_r").shape == (1, 1, 64)
        assert f.get_tensor("model.layers.1.attn.k_k").shape == (64,)
        assert f.get_tensor("model.layers.0.pre_norm.weight").dtype == torch.bfloat16
        assert "model.layers.1.attn.r_proj.weight" in f.keys() and "lm_head.weight" in f.keys()


def test_the_tokenizer_file_encodes_like_the_world_tokenizer(tmp_path, monkeypatch):
    """Our hf_rwkv_tokenizer.py, run against a stand-in for transformers' base class."""
    from rwkv_tui.trainer.world_tokenizer import WorldTokenizer

    path, _ = write_tiny_checkpoint(tmp_path)
    out = export_hf(path, tmp_path / "hf")
    stand_in = types.ModuleType("transformers")
    stand_in.PreTrainedTokenizer = type("PreTrainedTokenizer", (), {"__init__": lambda self, **kw: None})
    monkeypatch.setitem(sys.modules, "transformers", stand_in)
    spec = importlib.util.spec_from_file_location("hf_rwkv_tokenizer", out / "hf_rwkv_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.RwkvTokenizer(str(out / "rwkv_vocab_v20230424.txt"))
    text = "User: 你好, what is 2+2?\n\nAssistant: 4 🙂"
    ids = [tokenizer._convert_token_to_id(t) for t in tokenizer._tokenize(text)]
    assert ids == WorldTokenizer().encode(text)
    assert tokenizer.convert_tokens_to_string([tokenizer._convert_id_to_token(i) for i in ids]) == text


def test_existing_folder_needs_force_and_failures_leave_no_folder(tmp_path, monkeypatch, capsys):
    path, _ = write_tiny_checkpoint(tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "mine.txt").write_text("keep")
    assert main(["export", str(path), "--hf", str(tmp_path / "hf")]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["export", str(path), "--hf", str(tmp_path / "hf"), "--force"]) == 0
    assert {p.name for p in (tmp_path / "hf").iterdir()} == EXPECTED_FILES
    with pytest.raises(ConfigError, match="unknown --outtype 'q8_0'"):
        export_hf(path, tmp_path / "other", outtype="q8_0")

    from rwkv_tui.trainer import export_hf as module

    def broken(folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_tokenizer_files", broken)
    with pytest.raises(OSError):
        export_hf(path, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "tiny.pth"]


def test_rwkv6_is_refused_with_the_ai00_hint(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, version="x060")
    with pytest.raises(CheckpointError, match="supports RWKV-7"):
        export_hf(path, tmp_path / "hf")
