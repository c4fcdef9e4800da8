"""Merges in fp32 cast once, the base's dtype by default, RWKV-7 states refused (never a merged
file that ignores its input), and every key of the base kept in every output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import write_tiny_checkpoint
from rwkv_oracle import run_official
from rwkv_tui.trainer.adapters import merge_files, save_adapter, save_state_file
from rwkv_tui.trainer.checkpoint import load_checkpoint, load_state_dict
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.errors import CheckpointError
from rwkv_tui.trainer.model import load_model
from rwkv_tui.trainer.peft import build_method

PARAMS = {"lora": {"r": 4, "alpha": 8.0, "dropout": 0.0}, "pissa": {"r": 4, "svd_niter": 0}, "miss": {"r": 8},
          "state": {}, "full": {}, "lisa": {"lisa_r": 1, "lisa_k": 2}}
# Official files carry block 0's value-residual tensors, which the model never uses.
BLOCK0_UNUSED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def method_for(name: str):
    config = RunConfig.for_method(name)
    for key, value in PARAMS[name].items():
        setattr(config.method, key, value)
    return build_method(config.method, seed=3)


def trained(path, name: str, steps: int = 3):
    """A model of `path` with `name` applied and trained a few Adam steps on a fixed batch."""
    model = load_model(path)
    method = method_for(name)
    method.apply(model)
    idx = torch.randint(0, model.spec.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(method.optimizer_parameters(model), lr=0.3 if name == "state" else 1e-2)
    for step in range(steps):
        logits, _ = model(idx[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.on_step(model, step + 1)
    return model.eval(), method


def logits_of(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)[0]


def tokens(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(5))


def bf16_base(tmp_path, **kwargs):
    return write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=256, head_size=16,
                                 dtype=torch.bfloat16, **kwargs)


def with_block0_unused(path):
    """A copy of the file with block 0's v0/v1/v2, as every official RWKV-7 file has them."""
    weights, spec = load_checkpoint(path)
    g = torch.Generator().manual_seed(7)
    extra = {"blocks.0.att.v0": torch.randn(1, 1, spec.n_embd, generator=g),
             "blocks.0.att.v1": torch.randn(spec.n_embd, spec.d_mv, generator=g),
             "blocks.0.att.v2": torch.randn(spec.d_mv, spec.n_embd, generator=g)}
    official = path.with_name("official.pth")  # not over `path`: its tensors are memory-mapped
    torch.save({**weights, **{k: v.to(torch.bfloat16) for k, v in extra.items()}}, official)
    return official


@pytest.mark.parametrize("name", ["lora", "pissa", "miss"])
def test_fp32_merge_of_a_bf16_base_equals_the_unmerged_model(tmp_path, name):
    path, spec = bf16_base(tmp_path)
    model, method = trained(path, name)
    adapter = save_adapter(model, method, tmp_path / f"{name}.pth", spec)
    merged_path = merge_files(path, adapter, tmp_path / "merged.pth", dtype=torch.float32)
    merged = load_model(merged_path)
    expected = logits_of(model, tokens())
    torch.testing.assert_close(logits_of(merged, tokens()), expected, rtol=1e-5, atol=1e-5)
    # The check has teeth: rounding W + BA to the base's bf16 first (the old merge) misses it.
    rounded = {k: v.to(torch.bfloat16).float() for k, v in load_state_dict(merged_path).items()}
    from rwkv_tui.trainer.model import model_from_state_dict

    old_way = logits_of(model_from_state_dict(rounded, spec), tokens())
    assert (old_way - expected).abs().max() > 1e-4


def test_chat_merges_the_adapter_in_fp32(tmp_path):
    from rwkv_tui.trainer.generate import load_for_chat

    path, spec = bf16_base(tmp_path)
    model, method = trained(path, "lora")
    adapter = save_adapter(model, method, tmp_path / "lora.pth", spec)
    torch.testing.assert_close(logits_of(load_for_chat(path, adapter=adapter), tokens()),
                               logits_of(model, tokens()), rtol=1e-5, atol=1e-5)


def test_merge_defaults_to_the_base_dtype_and_says_so(tmp_path, capsys):
    from rwkv_tui.cli import main

    path, spec = bf16_base(tmp_path)
    model, method = trained(path, "lora", steps=1)
    adapter = save_adapter(model, method, tmp_path / "lora.pth", spec)
    assert main(["merge", str(path), str(adapter), str(tmp_path / "m.pth")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'm.pth'} (bfloat16, the base model's dtype)"
    assert {t.dtype for t in load_state_dict(tmp_path / "m.pth").values()} == {torch.bfloat16}
    assert main(["merge", str(path), str(adapter), str(tmp_path / "m32.pth"), "--dtype", "fp32"]) == 0
    assert "(float32, --dtype)" in capsys.readouterr().out
    assert {t.dtype for t in load_state_dict(tmp_path / "m32.pth").values()} == {torch.float32}


def test_final_merged_is_in_the_base_dtype_and_the_log_says_which(tmp_path):
    from rwkv_tui.trainer.peft.catalog import MERGED_FILE
    from rwkv_tui.trainer.training.outputs import finish_outputs, save_method_output

    class Log:
        def __init__(self):
            self.events = []

        def emit(self, kind, **fields):
            self.events.append((kind, fields))

    path, spec = bf16_base(tmp_path)
    model, method = trained(path, "lora", steps=1)
    config = RunConfig.for_method("lora", model__path=str(path), output__save_dtype="fp32", method__r=4)
    saved = save_method_output(model, method, spec, config, tmp_path, "final")
    log = Log()
    [merged] = finish_outputs(config, saved, tmp_path, log=log)
    assert merged.name == MERGED_FILE
    assert {t.dtype for t in load_state_dict(merged).values()} == {torch.bfloat16}
    assert log.events == [("info", {"message": f"merged the adapter into {MERGED_FILE} in bfloat16 "
                                               "(the base model's dtype)"})]


def test_an_rwkv7_state_merge_is_refused_and_writes_nothing(tmp_path, capsys):
    from rwkv_tui.cli import main
    from rwkv_tui.trainer.peft.state import StateMergeError

    path, _ = bf16_base(tmp_path)
    model, _ = trained(path, "state", steps=1)
    state = save_state_file(model, tmp_path / "s-state.pth")
    with pytest.raises(StateMergeError, match="RWKV-7 state cannot be merged") as refused:
        merge_files(path, state, tmp_path / "merged.pth")
    assert refused.value.path == str(state) and "RWKV Runner and Ai00 load it" in refused.value.hint
    assert main(["merge", str(path), str(state), str(tmp_path / "merged.pth")]) == 2
    assert "wrote" not in capsys.readouterr().out
    assert not (tmp_path / "merged.pth").exists()


@pytest.mark.parametrize("version", ["x060", "x052"])
def test_rwkv6_and_5_state_merges_load_in_the_rwkv_package(tmp_path, version):
    """There the rwkv package reads `time_state` from the model file: the merged file is the tuned model."""
    pytest.importorskip("rwkv")
    path, _ = write_tiny_checkpoint(tmp_path, version=version, n_layer=2, n_embd=64, vocab_size=256,
                                    head_size=16)
    model, _ = trained(path, "state")
    merged = merge_files(path, save_state_file(model, tmp_path / "s-state.pth"), tmp_path / "merged.pth",
                         dtype=torch.float32)
    ids = tokens(12)
    [official] = run_official([{"path": str(merged), "tokens": ids[0].tolist()}], tmp_path, v7=False)
    ours = logits_of(model, ids)[0]
    assert ((official["logits"] - ours).norm() / ours.norm()).item() < 1e-4


def test_chat_mounts_an_rwkv7_state_and_refuses_a_file_without_one(tmp_path):
    from rwkv_tui.trainer.generate import load_for_chat

    path, spec = bf16_base(tmp_path)
    model, _ = trained(path, "state")
    state = save_state_file(model, tmp_path / "s-state.pth")
    expected = logits_of(model, tokens())
    torch.testing.assert_close(logits_of(load_for_chat(path, state=state), tokens()), expected)
    torch.testing.assert_close(logits_of(load_for_chat(path, adapter=state), tokens()), expected)
    lora, method = trained(path, "lora", steps=1)
    adapter = save_adapter(lora, method, tmp_path / "lora.pth", spec)
    with pytest.raises(CheckpointError, match="not a state file"):
        load_for_chat(path, state=adapter)


@pytest.mark.parametrize("name", ["full", "lisa", "lora"])
def test_every_output_keeps_every_key_of_the_base(tmp_path, name):
    from rwkv_tui.trainer.training.outputs import finish_outputs, save_method_output

    path = with_block0_unused(bf16_base(tmp_path)[0])
    spec = load_checkpoint(path)[1]
    base = load_state_dict(path)
    model, method = trained(path, name, steps=1)
    config = RunConfig.for_method(name, model__path=str(path), method__r=4, method__lisa_r=1)
    outputs = save_method_output(model, method, spec, config, tmp_path, "final")
    outputs += finish_outputs(config, outputs, tmp_path)
    model_files = outputs if name != "lora" else outputs[1:]  # the adapter itself holds only its tensors
    assert model_files
    for output in model_files:
        written = load_state_dict(output)
        assert set(base) <= set(written), sorted(set(base) - set(written))
        for key in BLOCK0_UNUSED:
            assert torch.equal(written[key], base[key])
        load_model(output)  # and it still loads as a model
