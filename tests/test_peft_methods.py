"""Fine-tuning methods: what trains, what stays frozen, and merges that equal the unmerged model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import write_tiny_checkpoint
from rwkv_oracle import run_official
from rwkv_tui.trainer.adapters import load_adapter_file, merge_files, merge_into, save_adapter, save_state_file
from rwkv_tui.trainer.checkpoint import load_checkpoint
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.model import load_model, model_from_state_dict
from rwkv_tui.trainer.peft import build_method


def method_for(name: str, **params):
    config = RunConfig.for_method(name)
    for key, value in params.items():
        setattr(config.method, key, value)
    return build_method(config.method, seed=3)


def train_a_little(model, method, steps=8, lr=1e-2):
    """A plain loop on a fixed batch; returns (first loss, last loss)."""
    idx = torch.randint(0, model.spec.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(method.optimizer_parameters(model), lr=lr)
    losses = []
    for step in range(steps):
        logits, _ = model(idx[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.on_step(model, step + 1)
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.fixture
def base(tmp_path):
    path, spec = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=256, head_size=16)
    return path, spec


PARAMS = {"lora": {"r": 4, "alpha": 12.0, "dropout": 0.0}, "pissa": {"r": 4, "svd_niter": 0},
          "miss": {"r": 8}, "state": {}, "lisa": {"lisa_r": 1, "lisa_k": 2}, "full": {}}


@pytest.mark.parametrize("name", ["lora", "pissa", "miss", "state", "lisa", "full"])
def test_method_lowers_loss_and_keeps_frozen_weights(base, name):
    path, spec = base
    model = load_model(path)
    method = method_for(name, **PARAMS[name])
    method.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    first, last = train_a_little(model, method, lr=0.3 if name == "state" else 1e-2)
    assert last < first
    trainable, total = method.parameter_report(model)
    assert 0 < trainable <= total
    if name in ("lora", "pissa", "miss", "state"):
        for key, value in model.state_dict().items():
            if key not in trainable_names:
                assert torch.equal(value, before[key]), f"{key} changed"
    if name == "state":
        assert trainable == spec.n_layer * spec.n_head * spec.head_size**2


def test_lora_parameter_count_is_exact(base):
    path, spec = base
    model = load_model(path)
    method = method_for("lora", r=4)
    method.apply(model)
    C, F_ = 64, 256
    per_block = 4 * 4 * (C + C) + 4 * (C + F_) + 4 * (F_ + C)  # att r/k/v/o + ffn key + ffn value
    assert method.parameter_report(model)[0] == 2 * per_block


def test_lisa_redraws_layers_deterministically(base):
    path, _ = base
    model = load_model(path)
    method = method_for("lisa", lisa_r=1, lisa_k=2)
    method.apply(model)
    draws = [tuple(method.layers_for_step(s, 2)) for s in range(12)]
    assert draws == [tuple(method_for("lisa", lisa_r=1, lisa_k=2).layers_for_step(s, 2)) for s in range(12)]
    assert len(set(draws)) == 2  # both layers get their turn
    assert draws[0] == draws[1]  # constant within k steps
    method.on_step(model, 0)
    frozen = [i for i, b in enumerate(model.blocks) if not b.att.key.weight.requires_grad]
    assert frozen == [i for i in range(2) if i not in method.active]
    assert model.emb.weight.requires_grad and model.blocks[frozen[0]].ln1.weight.requires_grad


@pytest.mark.parametrize("name", ["lora", "pissa", "miss"])  # an RWKV-7 state is refused: test_merge_precision.py
def test_merged_model_equals_model_plus_adapter(base, tmp_path, name):
    path, spec = base
    model = load_model(path)
    method = method_for(name, **PARAMS[name])
    method.apply(model)
    train_a_little(model, method, steps=4, lr=0.3 if name == "state" else 1e-2)
    adapter_path = save_adapter(model, method, tmp_path / f"{name}.pth", spec)
    tensors, metadata = load_adapter_file(adapter_path)
    assert metadata["method"] == name and metadata["base_spec"]["n_embd"] == 64
    out = merge_files(path, adapter_path, tmp_path / "merged.pth", dtype=torch.float32)
    merged = load_model(out)
    idx = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        expected, _ = model(idx)
        got, _ = merged(idx)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_rwkv_peft_lora_file_needs_alpha(base, tmp_path):
    path, spec = base
    base_sd, _ = load_checkpoint(path)
    g = torch.Generator().manual_seed(1)
    foreign = {"model.blocks.0.att.key.lora_A": torch.randn(8, 64, generator=g) * 0.1,
               "model.blocks.0.att.key.lora_B": torch.randn(64, 8, generator=g) * 0.1,
               "model.blocks.1.ln1.weight": torch.full((64,), 0.5)}
    torch.save(foreign, tmp_path / "peft.pth")
    tensors, metadata = load_adapter_file(tmp_path / "peft.pth")
    assert metadata is None and "blocks.0.att.key.lora_A" in tensors
    with pytest.raises(CheckpointError, match="alpha"):
        merge_into(base_sd, tensors, metadata)
    merged = merge_into(base_sd, tensors, metadata, alpha=16.0)
    delta = merged["blocks.0.att.key.weight"] - base_sd["blocks.0.att.key.weight"]
    expected = foreign["model.blocks.0.att.key.lora_B"] @ foreign["model.blocks.0.att.key.lora_A"] * (16.0 / 8)
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(merged["blocks.1.ln1.weight"], torch.full((64,), 0.5))


def test_adapter_for_another_model_is_refused(base, tmp_path):
    path, spec = base
    other, _ = write_tiny_checkpoint(tmp_path, n_layer=3, n_embd=64, vocab_size=256, head_size=16, name="other.pth")
    model = load_model(path)
    method = method_for("lora", r=4)
    method.apply(model)
    adapter = save_adapter(model, method, tmp_path / "a.pth", spec)
    with pytest.raises(CheckpointError, match="trained on a L2 C64"):
        merge_files(other, adapter, tmp_path / "m.pth")


def test_merged_model_and_state_file_load_in_the_rwkv_package(base, tmp_path):
    pytest.importorskip("rwkv")
    path, spec = base
    # LoRA -> merged .pth (bf16, the official dtype)
    model = load_model(path)
    method = method_for("lora", r=4, alpha=8.0, dropout=0.0)
    method.apply(model)
    train_a_little(model, method, steps=4)
    adapter = save_adapter(model, method, tmp_path / "lora.pth", spec)
    merged_path = merge_files(path, adapter, tmp_path / "merged.pth", dtype=torch.bfloat16)
    # state tuning -> state file
    tuned = load_model(path)
    state_method = method_for("state")
    state_method.apply(tuned)
    train_a_little(tuned, state_method, steps=4, lr=0.3)
    state_path = save_state_file(tuned, tmp_path / "state.pth")
    states = torch.load(state_path, weights_only=True)
    assert set(states) == {"blocks.0.att.time_state", "blocks.1.att.time_state"}
    assert states["blocks.0.att.time_state"].shape == (4, 16, 16)
    flat = []
    for i in range(spec.n_layer):
        flat += [torch.zeros(64), states[f"blocks.{i}.att.time_state"].float(), torch.zeros(64)]
    torch.save(flat, tmp_path / "state_list.pt")

    tokens = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(9)).tolist()
    official = run_official([
        {"path": str(merged_path), "tokens": tokens},
        {"path": str(path), "tokens": tokens, "state": str(tmp_path / "state_list.pt")},
    ], tmp_path)
    merged_model = load_model(merged_path)
    tuned.eval()
    with torch.no_grad():
        ours_merged, _ = merged_model(torch.tensor([tokens]))
        ours_state, _ = tuned(torch.tensor([tokens]))
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(ours_merged[0], official[0]["logits"]) < 1e-4
    assert rel(ours_state[0], official[1]["logits"]) < 1e-4


def test_ai00_export_of_model_and_state(base, tmp_path):
    from safetensors.torch import load_file

    from rwkv_tui.cli import main

    path, spec = base
    tuned = load_model(path)
    method = method_for("state")
    method.apply(tuned)
    train_a_little(tuned, method, steps=2, lr=0.3)
    state_path = save_state_file(tuned, tmp_path / "state.pth")
    assert main(["export", str(state_path), "--ai00", str(tmp_path / "state.st")]) == 0
    assert main(["export", str(path), "--ai00", str(tmp_path / "model.st")]) == 0
    st = load_file(str(tmp_path / "state.st"))
    original = torch.load(state_path, weights_only=True)["blocks.1.att.time_state"]
    assert st["blocks.1.att.time_state"].dtype == torch.float16
    torch.testing.assert_close(st["blocks.1.att.time_state"].float(), original.transpose(-1, -2), rtol=1e-3, atol=1e-3)
    model_st = load_file(str(tmp_path / "model.st"))
    assert model_st["emb.weight"].dtype == torch.float16 and model_st["emb.weight"].shape == (256, 64)
    lora = method_for("lora", r=4)
    m = load_model(path)
    lora.apply(m)
    adapter = save_adapter(m, lora, tmp_path / "a.pth", spec)
    assert main(["export", str(adapter), "--ai00", str(tmp_path / "a.st")]) == 2


@pytest.mark.parametrize("name,quant", [("lora", "nf4"), ("lora", "int8"), ("pissa", "nf4"), ("miss", "int8"),
                                        ("state", "nf4")])
def test_quantized_base_trains_and_stays_frozen(base, tmp_path, name, quant):
    pytest.importorskip("bitsandbytes")
    from rwkv_tui.trainer.peft.quant import is_quantized

    path, spec = base
    model = load_model(path)
    method = method_for(name, quant=quant, **PARAMS[name])
    method.apply(model)
    quantized = [m for m in model.modules() if is_quantized(m)]
    assert len(quantized) == 2 * 6  # every big linear map of both blocks
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".quantized." in k or k.endswith("weight_format")}
    first, last = train_a_little(model, method, lr=0.3 if name == "state" else 1e-2)
    assert last < first
    for key, value in model.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    if name != "state":
        adapter = save_adapter(model, method, tmp_path / "q.pth", spec)
        assert load_adapter_file(adapter)[1]["quant"] == quant
        merged = load_model(merge_files(path, adapter, tmp_path / "merged.pth", dtype=torch.float32))
        assert merged.spec == load_model(path).spec


def test_quantization_is_refused_for_methods_that_train_the_base():
    from rwkv_tui.trainer.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be quantized"):
        method_for("full", quant="nf4")


@pytest.mark.parametrize("name", ["lora", "pissa", "miss", "state"])
def test_warm_start_continues_from_a_saved_adapter(base, tmp_path, name):
    path, spec = base
    trained = load_model(path)
    method = method_for(name, **PARAMS[name])
    method.apply(trained)
    train_a_little(trained, method, steps=3, lr=0.3 if name == "state" else 1e-2)
    adapter = save_adapter(trained, method, tmp_path / "a.pth", spec)

    fresh = load_model(path)
    again = method_for(name, **PARAMS[name])
    again.apply(fresh)
    tensors, metadata = load_adapter_file(adapter)
    again.load_adapter(fresh, tensors, metadata)
    idx = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(2))
    trained.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx)[0], trained(idx)[0], rtol=1e-4, atol=1e-4)


def test_warm_start_from_an_rwkv_peft_file_and_wrong_rank(base, tmp_path):
    path, spec = base
    g = torch.Generator().manual_seed(4)
    foreign = {}
    for i in range(2):
        for t, (out_f, in_f) in {"att.receptance": (64, 64), "att.key": (64, 64), "att.value": (64, 64),
                                 "att.output": (64, 64), "ffn.key": (256, 64), "ffn.value": (64, 256)}.items():
            foreign[f"model.blocks.{i}.{t}.lora_A"] = torch.randn(4, in_f, generator=g) * 0.05
            foreign[f"model.blocks.{i}.{t}.lora_B"] = torch.randn(out_f, 4, generator=g) * 0.05
    torch.save(foreign, tmp_path / "peft.pth")
    tensors, metadata = load_adapter_file(tmp_path / "peft.pth")
    model = load_model(path)
    method = method_for("lora", r=4, alpha=8.0, dropout=0.0)
    method.apply(model)
    method.load_adapter(model, tensors, metadata)
    merged = model_from_state_dict(merge_into(load_checkpoint(path)[0], tensors, None, alpha=8.0), spec)
    idx = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], merged(idx)[0], rtol=1e-4, atol=1e-4)
    wrong = load_model(path)
    rank8 = method_for("lora", r=8)
    rank8.apply(wrong)
    with pytest.raises(CheckpointError, match="does not fit this lora setup"):
        rank8.load_adapter(wrong, tensors, metadata)
