"""CUDA-only checks (skipped without a GPU): bf16 kernels and training, DeepSpeed strategies."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_tiny_checkpoint

pytestmark = pytest.mark.cuda


def test_chunked_kernel_on_cuda_matches_float64_reference():
    from rwkv_tui.kernels import wkv7, wkv7_sequential
    from test_kernels_wkv7 import make_inputs

    x64 = make_inputs(2, 100, 4, 64, seed=1)
    state = torch.randn(2, 4, 64, 64, dtype=torch.float64)
    ref_y, ref_s = wkv7_sequential(*x64, state=state)
    for dtype, tol in [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)]:
        out = wkv7(*[t.to("cuda", dtype) for t in x64], state=state.to("cuda"))
        assert out.op == "torch_chunked"
        assert ((out.y.double().cpu() - ref_y).norm() / ref_y.norm()) < tol
        assert ((out.state.double().cpu() - ref_s).norm() / ref_s.norm()) < tol


@pytest.mark.parametrize("strategy,quant", [("auto", "none"), ("deepspeed_stage_1", "none"),
                                            ("deepspeed_stage_2", "none"), ("auto", "int8"), ("auto", "nf4")])
def test_bf16_lora_run_on_cuda(tmp_path, strategy, quant):
    """Also QLoRA: the base is quantized on the CPU, then Fabric moves it to the GPU."""
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    if quant != "none":
        pytest.importorskip("bitsandbytes")
    from rwkv_tui.kernels import available_ops
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.training.loop import run

    model, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=128, vocab_size=65536, head_size=64)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"User: {i}?\n\nAssistant: {i * 2}."}) + "\n" for i in range(32)))
    config = RunConfig.for_method("lora", model__path=str(model), data__path=str(data), data__ctx_len=64,
                                  data__micro_bsz=4, epochs__epoch_steps=10, optim__lr_init=1e-2,
                                  optim__lr_final=1e-3, hardware__accelerator="gpu", hardware__precision="bf16",
                                  hardware__strategy=strategy, method__quant=quant)
    result = run(config, tmp_path / "run")
    assert result.reason == "finished" and result.step == 10
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["kind"] == "step"]
    assert "vram_gb" in steps[0] and steps[-1]["loss"] < steps[0]["loss"]
    assert steps[0]["wkv_op"] in available_ops("cuda", torch.bfloat16)  # whichever auto measured fastest
