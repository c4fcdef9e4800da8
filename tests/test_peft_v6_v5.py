"""Every fine-tuning method on RWKV-6 (x060) and RWKV-5 (x052): trains, merges, and the
merged model and tuned state load in the official `rwkv` package with equal logits."""

from __future__ import annotations

import pytest
import torch

from conftest import write_tiny_checkpoint
from rwkv_oracle import run_official
from test_peft_methods import PARAMS, method_for, train_a_little
from rwkv_tui.trainer.adapters import merge_files, save_adapter, save_state_file
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.model import load_model
from rwkv_tui.trainer.vram import trainable_parameter_count

VERSIONS = ["x060", "x052"]


@pytest.fixture(params=VERSIONS)
def base(request, tmp_path):
    return write_tiny_checkpoint(tmp_path, version=request.param, n_layer=2, n_embd=64, vocab_size=256,
                                 head_size=16)


@pytest.mark.parametrize("name", ["lora", "pissa", "miss", "state", "lisa", "full"])
def test_every_method_lowers_the_loss(base, name):
    path, spec = base
    model = load_model(path)
    method = method_for(name, **PARAMS[name])
    method.apply(model)
    first, last = train_a_little(model, method, lr=0.3 if name == "state" else 1e-2)
    assert last < first
    if name == "state":
        assert method.parameter_report(model)[0] == spec.n_layer * spec.n_head * spec.head_size**2


@pytest.mark.parametrize("name", ["lora", "pissa", "miss"])
def test_merge_with_the_gates_equals_model_plus_adapter(base, tmp_path, name):
    """RWKV-6/5 have two more linear maps than RWKV-7 (att.gate, ffn.receptance); adapt them too."""
    path, _ = base
    model = load_model(path)
    targets = ["att.key", "att.value", "att.gate", "ffn.receptance", "ffn.key"]
    method = method_for(name, targets=targets, **PARAMS[name])
    method.apply(model)
    # The VRAM estimator's count is exact for these architectures too.
    config = RunConfig.for_method(name)
    config.method.targets, config.method.r = targets, PARAMS[name]["r"]
    assert method.parameter_report(model)[0] == trainable_parameter_count(model.spec, config.method)
    train_a_little(model, method, steps=4)
    adapter = save_adapter(model, method, tmp_path / f"{name}.pth", model.spec)
    merged = load_model(merge_files(path, adapter, tmp_path / "merged.pth", dtype=torch.float32))
    idx = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(idx)[0], model(idx)[0], rtol=1e-4, atol=1e-4)


def test_rwkv7_has_no_gate_to_adapt(tmp_path):
    path, _ = write_tiny_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="RWKV-7 models have no att.gate map"):
        method_for("lora", targets=["att.gate"]).apply(load_model(path))


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_lora_quantizes_the_whole_base(base, quant):
    pytest.importorskip("bitsandbytes")
    from rwkv_tui.trainer.peft.quant import is_quantized

    path, _ = base
    model = load_model(path)
    method = method_for("lora", quant=quant, **PARAMS["lora"])  # default targets: 6 of the 8 maps
    method.apply(model)
    assert len([m for m in model.modules() if is_quantized(m)]) == 2 * 8
    first, last = train_a_little(model, method)
    assert last < first


def test_merged_model_and_state_load_in_the_rwkv_package(base, tmp_path):
    """A merged LoRA .pth, and the state file mounted the way RWKV Runner does it (the state's
    tensors added to the model's weights, which the package transposes to key-major)."""
    pytest.importorskip("rwkv")
    path, spec = base
    model = load_model(path)
    lora = method_for("lora", r=4, alpha=8.0, dropout=0.0, targets=["att.key", "att.gate", "ffn.value"])
    lora.apply(model)
    train_a_little(model, lora, steps=4)
    merged_path = merge_files(path, save_adapter(model, lora, tmp_path / "lora.pth", spec),
                              tmp_path / "merged.pth", dtype=torch.float32)

    tuned = load_model(path)
    state_method = method_for("state")
    state_method.apply(tuned)
    train_a_little(tuned, state_method, steps=4, lr=0.3)
    states = torch.load(save_state_file(tuned, tmp_path / "state.pth"), weights_only=True)
    assert states["blocks.0.att.time_state"].shape == (spec.n_head, spec.head_size, spec.head_size)
    mounted = {**torch.load(path, weights_only=True), **states}
    torch.save(mounted, tmp_path / "with_state.pth")

    tokens = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(9)).tolist()
    official = run_official([{"path": str(merged_path), "tokens": tokens},
                             {"path": str(tmp_path / "with_state.pth"), "tokens": tokens}], tmp_path, v7=False)
    tuned.eval()
    with torch.no_grad():
        ours_merged, _ = load_model(merged_path)(torch.tensor([tokens]))
        ours_state, _ = tuned(torch.tensor([tokens]))
        # Our chat/generation path reads the same file with the state in it.
        reloaded, _ = load_model(tmp_path / "with_state.pth")(torch.tensor([tokens]))

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    assert rel(ours_merged[0], official[0]["logits"]) < 1e-4
    assert rel(ours_state[0], official[1]["logits"]) < 1e-4
    assert rel(reloaded[0], ours_state[0]) < 1e-6
