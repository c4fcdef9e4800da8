"""GGUF export: read back with gguf's reader and checked against llama.cpp's facts
(tests/data/gguf_rwkv7_facts.json); bad input and interrupted writes leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_tui.cli import main
from rwkv_tui.trainer.checkpoint import load_checkpoint
from rwkv_tui.trainer.errors import CheckpointError, ConfigError
from rwkv_tui.trainer.export_gguf import export_gguf

gguf = pytest.importorskip("gguf", reason="GGUF tests need the gguf package (pip install 'rwkv-tui[dev]')")

FACTS = json.loads((Path(__file__).parent / "data" / "gguf_rwkv7_facts.json").read_text())


@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> tuple[Path, object]:
    """A tiny model with the World vocabulary, which llama.cpp's RWKV tokenizer needs."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("gguf"), vocab_size=65536, n_embd=64)


def sizes(spec) -> dict:
    return {"n_embd": spec.n_embd, "n_vocab": spec.vocab_size, "n_lora_decay": spec.d_decay,
            "n_lora_iclr": spec.d_aaa, "n_lora_value_res_mix": spec.d_mv, "n_lora_gate": spec.d_gate,
            "n_ff": spec.dim_ffn}


def expected_tensors(spec, outtype: str) -> dict[str, tuple[list[int], str]]:
    dims = sizes(spec)
    out_type = FACTS["outtype_types"][outtype]
    expected = {}
    rows = [(row, None) for row in FACTS["global_tensors"]]
    rows += [(row, bid) for bid in range(spec.n_layer) for row in FACTS["block_tensors"]]
    for row, bid in rows:
        shape = row.get("block0_shape", row["shape"]) if bid == 0 else row["shape"]
        name = row["name"].format(bid=bid)
        shape = [dims.get(d, d) for d in shape]
        expected[name] = (shape, stored_type(shape, out_type if row["type"] == "out" else row["type"]))
    return expected


def stored_type(shape: list[int], qtype: str) -> str:
    fallback = FACTS["q8_0_fallback"]
    return fallback["type"] if qtype == "Q8_0" and shape[0] % 32 else qtype


def field_value(reader, key):
    return reader.fields[key].contents()


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_names_shapes_types_and_metadata_match_llama_cpp(world_model, tmp_path, outtype):
    path, spec = world_model
    out = export_gguf(path, tmp_path / "m.gguf", outtype=outtype)
    reader = gguf.GGUFReader(str(out))
    found = {t.name: ([int(n) for n in t.shape], t.tensor_type.name) for t in reader.tensors}
    assert found == expected_tensors(spec, outtype)
    for fact in FACTS["metadata"]:
        expected = getattr(spec, fact["spec"]) if "spec" in fact else fact["value"]
        assert field_value(reader, fact["key"]) == pytest.approx(expected), fact["key"]
    assert field_value(reader, "general.file_type") == FACTS["file_type"][outtype]


def test_the_world_vocabulary_is_written_as_the_converter_writes_it(world_model, tmp_path):
    from rwkv_tui.trainer.world_tokenizer import find_vocab_file, parse_vocab

    path, spec = world_model
    reader = gguf.GGUFReader(str(export_gguf(path, tmp_path / "m.gguf", outtype="q8_0")))
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    table = parse_vocab(find_vocab_file())
    vocab = FACTS["vocabulary"]
    assert len(tokens) == len(types) == spec.vocab_size
    assert tokens[0] == vocab["token_0"] and types[0] == vocab["token_0_type"]
    assert tokens[1:4] == [repr(table[i])[2:-1] for i in (1, 2, 3)]
    assert tokens[-1] == vocab["padding"].format(i=spec.vocab_size - 1) and types[-1] == vocab["padding_type"]
    assert types[len(table)] == vocab["normal_type"]


def test_f32_values_are_the_models_converted(world_model, tmp_path):
    path, spec = world_model
    tensors, _ = load_checkpoint(path)
    reader = gguf.GGUFReader(str(export_gguf(path, tmp_path / "m.gguf", outtype="f32")))
    data = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert np.array_equal(data["token_embd.weight"], tensors["emb.weight"].float().numpy())
    assert np.array_equal(data["blk.1.time_mix_w1.weight"], tensors["blocks.1.att.w1"].float().t().numpy())
    fused = torch.stack([tensors[f"blocks.1.att.x_{m}"] for m in "rwkvag"]).float().numpy()
    assert np.array_equal(data["blk.1.time_mix_lerp_fused.weight"], fused)
    assert np.array_equal(data["blk.0.time_mix_v1.weight"], data["blk.0.time_mix_a1.weight"])
    assert np.array_equal(data["blk.1.time_mix_r_k.weight"], tensors["blocks.1.att.r_k"].float().reshape(-1).numpy())


def lora_adapter(folder: Path, spec, rank: int = 4) -> Path:
    """An RWKV-PEFT style LoRA file (no metadata: alpha comes from --lora-alpha)."""
    g = torch.Generator().manual_seed(1)
    tensors = {"blocks.1.att.key.lora_A": torch.randn(rank, spec.n_embd, generator=g),
               "blocks.1.att.key.lora_B": torch.randn(spec.n_embd, rank, generator=g)}
    torch.save(tensors, folder / "lora.pth")
    return folder / "lora.pth"


def test_adapter_is_merged_in_memory_in_fp32(world_model, tmp_path):
    from rwkv_tui.trainer.adapters import load_adapter_file, merge_into

    path, spec = world_model
    adapter = lora_adapter(tmp_path, spec)
    out = export_gguf(path, tmp_path / "m.gguf", outtype="f32", adapter=adapter, alpha=8.0)
    base, _ = load_checkpoint(path)
    lora, metadata = load_adapter_file(adapter)
    merged = merge_into({k: v.float() for k, v in base.items()}, lora, metadata, alpha=8.0)
    key = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(out)).tensors}["blk.1.time_mix_key.weight"]
    assert np.array_equal(key, merged["blocks.1.att.key.weight"].numpy())
    assert not np.array_equal(key, base["blocks.1.att.key.weight"].float().numpy())


def test_an_x070_state_with_adapter_is_refused(world_model, tmp_path):
    path, spec = world_model
    torch.save({"blocks.0.att.time_state": torch.randn(spec.n_head, spec.head_size, spec.head_size)},
               tmp_path / "state.pth")
    with pytest.raises(CheckpointError, match="state cannot be merged"):
        export_gguf(path, tmp_path / "m.gguf", adapter=tmp_path / "state.pth")
    assert not (tmp_path / "m.gguf").exists()


def test_bad_input_is_refused_clearly(world_model, tmp_path, capsys):
    path, _ = world_model
    with pytest.raises(ConfigError, match="unknown --outtype 'q4_0'"):
        export_gguf(path, tmp_path / "m.gguf", outtype="q4_0")
    not_a_model = tmp_path / "notes.pth"
    torch.save({"weight": torch.zeros(2)}, not_a_model)
    with pytest.raises(CheckpointError, match="not an RWKV checkpoint"):
        export_gguf(not_a_model, tmp_path / "m.gguf")
    adapter = tmp_path / "lora.pth"
    torch.save({"blocks.0.att.key.lora_A": torch.zeros(2, 64)}, adapter)
    with pytest.raises(CheckpointError, match="adapter or state file, not a model"):
        export_gguf(adapter, tmp_path / "m.gguf")
    (tmp_path / "m.gguf").write_text("keep me")
    assert main(["export", str(path), "--gguf", str(tmp_path / "m.gguf")]) == 2
    assert "output exists" in capsys.readouterr().err
    assert (tmp_path / "m.gguf").read_text() == "keep me"
    assert main(["export", str(path), "--gguf", str(tmp_path / "m.gguf"), "--outtype", "q8_0", "--force"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors


def test_a_small_vocabulary_is_refused(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=256)
    with pytest.raises(CheckpointError, match="smaller than the RWKV World vocabulary"):
        export_gguf(path, tmp_path / "m.gguf")
    assert list(tmp_path.glob("*.gguf*")) == [] and list(tmp_path.glob(".m.gguf*")) == []


def test_no_space_is_refused_before_writing(world_model, tmp_path, monkeypatch):
    from rwkv_tui.trainer import export_common
    from rwkv_tui.trainer.atomic import DiskSpace

    path, _ = world_model
    monkeypatch.setattr(export_common, "disk_space", lambda folder: DiskSpace(free_bytes=1000, mount=Path("/")))
    with pytest.raises(CheckpointError, match="not enough disk space"):
        export_gguf(path, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_file(world_model, tmp_path, monkeypatch):
    from rwkv_tui.trainer import export_gguf as module

    path, _ = world_model
    calls = []

    def fail_late(name, data, outtype):
        calls.append(name)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return real(name, data, outtype)

    real = module.encoded
    monkeypatch.setattr(module, "encoded", fail_late)
    with pytest.raises(OSError):
        export_gguf(path, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_llama_cpp_logits_match_ours(world_model, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed on this machine")
    from rwkv_tui.trainer.model import load_model

    path, _ = world_model
    out = export_gguf(path, tmp_path / "m.gguf", outtype="f32")
    tokens = [33, 44, 55, 66]
    llm = llama_cpp.Llama(model_path=str(out), logits_all=True, verbose=False, n_ctx=64)
    llm.eval(tokens)
    theirs = np.asarray(llm.scores[: len(tokens)])
    with torch.no_grad():
        ours, _ = load_model(path)(torch.tensor([tokens]))
    np.testing.assert_allclose(theirs, ours[0].numpy(), atol=1e-3, rtol=1e-3)
