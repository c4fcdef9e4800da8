"""Infctx (data.chunk_ctx): a sample trained in chunks with the state carried, gradients and all,
equals the unchunked sample: loss and every gradient (adapter, state, full weights) within 1e-5
relative in fp32, for every method and x070/x060/x052; long runs stay finite; resume stays exact."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import step_losses, write_tiny_checkpoint
from rwkv_tui.trainer.config import OPS as CONFIG_OPS
from rwkv_tui.trainer.config import RunConfig, validate
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.infctx import (FORWARD_ONLY_OPS, OPS_WITH_STATE_GRADIENTS, chunked_batch_loss,
                                              chunked_loss, ensure_state_gradients)
from rwkv_tui.trainer.training.loop import accumulate_gradients, masked_cross_entropy, run
from rwkv_tui.trainer.training.setup import fabric_unwrap
from rwkv_tui.trainer.training.signals import StopRequest

CTX, CHUNK, VOCAB = 256, 64, 256


def tiny_config(method: str, version: str = "x070", grad_cp: bool = False, quant: str = "none") -> RunConfig:
    config = RunConfig.for_method(method)
    config.method.quant = quant
    config.hardware.accelerator, config.hardware.precision = "cpu", "fp32"
    config.hardware.grad_cp = grad_cp
    config.data.ctx_len, config.data.chunk_ctx = CTX, CHUNK
    config.method.dropout = 0.0  # the two passes compared would draw different dropout masks
    if method == "lisa":
        config.method.lisa_r = 1
    if method == "miss":
        config.method.r = 16
    return config


def build(tmp_path, method: str, version: str = "x070", grad_cp: bool = False, quant: str = "none"):
    """A Fabric-built tiny model with `method` applied, its trainable weights moved off their
    initial values (LoRA's zero B, a zero time_state), so every gradient is non-trivial."""
    from lightning.fabric import Fabric

    from rwkv_tui.trainer.checkpoint import load_checkpoint
    from rwkv_tui.trainer.training.setup import build_training

    path, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=VOCAB, head_size=16, version=version)
    state_dict, spec = load_checkpoint(path)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    training = build_training(tiny_config(method, version, grad_cp, quant), state_dict, spec, fabric)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in training.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    training.model.train()
    return fabric, training.model


def sample_batch(mask_from: int = 0) -> dict[str, torch.Tensor]:
    """Two samples; the loss mask leaves out random tokens (SFT), all of sample 1's first half
    (padding-like), and everything before `mask_from`."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (2, CTX + 1), generator=generator)
    mask = (torch.rand(2, CTX, generator=generator) > 0.3).float()
    mask[1, : CTX // 2] = 0
    mask[:, :mask_from] = 0
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask}


def loss_and_gradients(fabric, model, batch, loss_fn=None):
    model.zero_grad(set_to_none=True)
    loss = accumulate_gradients(fabric, model, iter([batch]), 1, loss_fn=loss_fn)
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss, grads


def assert_same_training_signal(fabric, model, batch):
    whole_loss, whole = loss_and_gradients(fabric, model, batch)
    chunked_loss_value, chunked = loss_and_gradients(fabric, model, batch, chunked_batch_loss(fabric, CHUNK))
    assert chunked_loss_value == pytest.approx(whole_loss, rel=1e-5)
    assert whole and chunked.keys() == whole.keys()
    for name, grad in whole.items():
        assert grad.norm() > 0, name
        error = (chunked[name] - grad).norm() / grad.norm()
        assert error < 1e-5, f"{name}: relative gradient error {error:.2e}"
    return whole


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "pissa", "miss", "lisa", "state"])
def test_chunked_loss_and_gradients_equal_the_unchunked_ones(tmp_path, method):
    fabric, model = build(tmp_path, method)
    grads = assert_same_training_signal(fabric, model, sample_batch())
    if method == "state":
        assert all("time_state" in name for name in grads) and len(grads) == 2


@pytest.mark.slow
@pytest.mark.parametrize("version,method", [("x060", "lora"), ("x060", "state"), ("x052", "full")])
def test_rwkv6_and_rwkv5_chunked_equal_unchunked(tmp_path, version, method):
    fabric, model = build(tmp_path, method, version)
    assert_same_training_signal(fabric, model, sample_batch())


@pytest.mark.slow
@pytest.mark.parametrize("method,quant", [("lora", "nf4"), ("state", "int8")])
def test_a_quantized_base_trains_chunked_as_unchunked(tmp_path, method, quant):
    """QLoRA and quantized state tuning: the frozen int8/nf4 base dequantizes in every chunk's
    recomputation exactly as in the unchunked pass (bitsandbytes runs on the CPU too)."""
    pytest.importorskip("bitsandbytes")
    from rwkv_tui.trainer.peft.quant import is_quantized

    fabric, model = build(tmp_path, method, quant=quant)
    assert any(is_quantized(m) for m in model.modules())
    assert_same_training_signal(fabric, model, sample_batch())


@pytest.mark.slow
def test_the_tuned_state_learns_from_the_last_chunk_through_the_carried_state(tmp_path):
    """Only the last chunk is trained: the first chunk's initial state (the tuned time_state) gets
    its gradient only through the WKV states carried across three chunk boundaries."""
    fabric, model = build(tmp_path, "state")
    grads = assert_same_training_signal(fabric, model, sample_batch(mask_from=CTX - CHUNK))
    assert all(grad.abs().max() > 0 for grad in grads.values())


@pytest.mark.slow
def test_chunks_inside_per_block_gradient_checkpointing(tmp_path):
    """hardware.grad_cp's block checkpoints nest inside the chunk checkpoints."""
    fabric, model = build(tmp_path, "lora", grad_cp=True)
    assert_same_training_signal(fabric, model, sample_batch())


@pytest.mark.slow
def test_a_chunk_keeps_no_activations_for_backward(tmp_path):
    """Outside the chunk checkpoints nothing of a chunk's activations stays saved for backward:
    what forward keeps is the small per-layer states (and the token ids), not the logits."""
    from rwkv_tui.trainer.model import model_from_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec

    spec = rwkv7_spec(1, 32, vocab_size=VOCAB, head_size=16, d_decay=8, d_aaa=8, d_mv=4, d_gate=16)
    model = model_from_state_dict(random_state_dict(spec, seed=0), spec, dtype=torch.float32).train()
    batch = sample_batch()

    def saved_bytes(compute) -> int:
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            compute()
        return sum(sizes)

    whole = saved_bytes(lambda: masked_cross_entropy(model(batch["input_ids"])[0], batch["targets"],
                                                     batch["loss_mask"]))
    chunked = saved_bytes(lambda: chunked_loss(model, batch["input_ids"], batch["targets"], batch["loss_mask"],
                                               CHUNK))
    logits_bytes = 2 * CTX * VOCAB * 4
    assert whole > logits_bytes and chunked < logits_bytes / 20, (whole, chunked)


def test_a_shorter_last_chunk_still_equals_the_whole_sample():
    """chunked_loss itself accepts a last chunk shorter than chunk_ctx (validation forbids it for runs)."""
    from rwkv_tui.trainer.model import model_from_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec

    spec = rwkv7_spec(1, 32, vocab_size=64, head_size=16, d_decay=8, d_aaa=8, d_mv=4, d_gate=16)
    model = model_from_state_dict(random_state_dict(spec, seed=3), spec, dtype=torch.float64)
    ids = torch.randint(0, 64, (1, 51), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(1, 50)
    whole = masked_cross_entropy(model(ids[:, :-1])[0], ids[:, 1:], mask)
    assert chunked_loss(model, ids[:, :-1], ids[:, 1:], mask, 16).item() == pytest.approx(whole.item(), rel=1e-12)
    with pytest.raises(ValueError, match="chunk_ctx"):
        chunked_loss(model, ids[:, :-1], ids[:, 1:], mask, 0)


# ---- which WKV ops carry state gradients ----------------------------------------------------

def test_every_wkv_op_is_judged_for_state_gradients():
    """A new op in the dispatcher's table must be added to OPS_WITH_STATE_GRADIENTS (after its
    tests show the initial and final state gradients) before chunked runs may use it, or to
    FORWARD_ONLY_OPS when it has no backward."""
    from rwkv_tui.kernels.dispatch import OPS

    assert {entry.name for entry in OPS} <= OPS_WITH_STATE_GRADIENTS | FORWARD_ONLY_OPS
    for op in CONFIG_OPS:
        ensure_state_gradients(op)
    for op in ("a_new_op", *FORWARD_ONLY_OPS):
        with pytest.raises(RwkvTuiError, match="passes gradients through the state"):
            ensure_state_gradients(op)


# ---- configuration --------------------------------------------------------------------------

def chunk_problems(**changes) -> list:
    config = RunConfig()
    config.model.path, config.data.path = "/m/model.pth", "/d/data.jsonl"
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        setattr(getattr(config, section), name, value)
    return [p for p in validate(config) if p.field == "data.chunk_ctx"]


def test_chunk_ctx_must_divide_ctx_len():
    assert chunk_problems(data__ctx_len=4096, data__chunk_ctx=0) == []
    assert chunk_problems(data__ctx_len=4096, data__chunk_ctx=1024) == []
    assert chunk_problems(data__ctx_len=4096, data__chunk_ctx=4096) == []
    (problem,) = chunk_problems(data__ctx_len=4096, data__chunk_ctx=1000)
    assert "multiple of chunk_ctx=1000" in problem.message and "chunk_ctx=4096" in problem.fix
    (problem,) = chunk_problems(data__ctx_len=512, data__chunk_ctx=1024)
    assert "multiple" in problem.message and "chunk_ctx=512" in problem.fix
    (problem,) = chunk_problems(data__chunk_ctx=-1)
    assert "0 (off)" in problem.message


def test_chunk_ctx_runs_on_one_device():
    (problem,) = chunk_problems(data__ctx_len=2048, data__chunk_ctx=512, hardware__devices=2)
    assert "one device" in problem.message and "devices=1" in problem.fix
    assert chunk_problems(data__ctx_len=2048, data__chunk_ctx=512, hardware__strategy="deepspeed_stage_2")


# ---- whole runs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("infctx")
    model_path, _ = write_tiny_checkpoint(directory, n_layer=2, n_embd=64, vocab_size=65536, head_size=16)
    data = directory / "math.jsonl"  # about 1,500 tokens: a few dozen packed samples of 64
    texts = [f"User: What is {a} plus {b}?\n\nAssistant: {a + b}." for a in range(10) for b in range(10)]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return directory, model_path, data


def run_config(workspace, *, steps: int, ctx_len: int, chunk_ctx: int, lr: float = 1e-2):
    directory, model_path, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model_path), str(data)
    config.data.ctx_len, config.data.chunk_ctx, config.data.micro_bsz = ctx_len, chunk_ctx, 1
    config.data.loading, config.data.loss_mask = "pack", "none"
    config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    config.optim.lr_init, config.optim.lr_final, config.optim.warmup_steps = lr, lr / 10, 2
    config.method.dropout = 0.0  # chunked and whole runs would draw different dropout masks
    config.output.proj_dir = str(directory / "runs")
    return config


@pytest.mark.slow
def test_a_chunked_run_trains_as_the_unchunked_one_and_resumes_exactly(workspace, tmp_path):
    whole = run(run_config(workspace, steps=8, ctx_len=64, chunk_ctx=0), tmp_path / "whole")
    config = run_config(workspace, steps=8, ctx_len=64, chunk_ctx=16)
    chunked = run(config, tmp_path / "chunked")
    assert whole.step == chunked.step == 8
    assert step_losses(tmp_path / "chunked") == pytest.approx(step_losses(tmp_path / "whole"), rel=1e-4)

    stop = StopRequest()
    stopped = run(config, tmp_path / "resumed", stop=stop,
                  on_step=lambda step, event: stop.request("stopped by test") if step == 3 else None)
    assert stopped.step == 3
    resumed = run(None, tmp_path / "resumed", resume=True)
    assert resumed.step == 8 and resumed.reason == "finished"
    assert step_losses(tmp_path / "resumed") == pytest.approx(step_losses(tmp_path / "chunked"), rel=1e-5)


@pytest.mark.slow
def test_200_steps_at_ctx_1024_in_chunks_of_128_stay_finite(tmp_path):
    """Full fine-tuning at a brisk learning rate through the trainer's step (Fabric, AdamW, clipping),
    on long repeating sequences: 200 steps of 8 chunks each, every loss finite, and it learns."""
    from rwkv_tui.trainer.training.loop import optimizer_step

    fabric, model = build(tmp_path, "full")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer = fabric.setup(fabric_unwrap(model), optimizer)
    generator = torch.Generator().manual_seed(5)

    def batches():
        while True:  # a random-period pattern: learnable only by remembering earlier tokens
            period = int(torch.randint(8, 64, (1,), generator=generator))
            motif = torch.randint(0, VOCAB, (period,), generator=generator)
            ids = motif.repeat(1025 // period + 1)[:1025].unsqueeze(0)
            yield {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": torch.ones(1, 1024)}

    stream, loss_fn = batches(), chunked_batch_loss(fabric, 128)
    losses = []
    for _ in range(200):
        losses.append(accumulate_gradients(fabric, model, stream, 1, loss_fn=loss_fn))
        optimizer_step(fabric, model, optimizer, grad_clip=1.0)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-20:]) < sum(losses[:20]), losses  # it learns (from ~6.0 to ~5.6 in 200 steps)


# ---- the VRAM estimate and the wizard's proposal --------------------------------------------

def lora_config(ctx_len: int, chunk_ctx: int = 0) -> RunConfig:
    config = RunConfig.for_method("lora")
    config.data.ctx_len, config.data.chunk_ctx = ctx_len, chunk_ctx
    return config


def test_the_estimate_follows_the_chunk_not_ctx_len():
    from rwkv_tui.trainer.model.init import rwkv7_spec
    from rwkv_tui.trainer.vram import estimate

    spec = rwkv7_spec(24, 2048)
    short = estimate(spec, lora_config(1024)).total
    chunked = estimate(spec, lora_config(16384, 1024))
    whole = estimate(spec, lora_config(16384)).total
    assert chunked.parts["carried states"] > 0
    assert short < chunked.total < 1.1 * short < whole / 3  # the aim: within 1.5× of ctx 1024


def wizard_state(free_gb: float, ctx_len: int = 8192, documents: list[int] | None = None):
    from rwkv_tui.screens.wizard import WizardState
    from rwkv_tui.trainer.data.check import CheckReport
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(config=lora_config(ctx_len), spec=rwkv7_spec(24, 2048))
    if free_gb:
        state.hardware = HardwareReport([GpuInfo(0, "gpu", 24 * 1024**3, int(free_gb * 1024**3))])
    if documents is not None:
        state.check = CheckReport(path="d.jsonl", samples=len(documents), token_counts=documents, ctx_len=ctx_len)
    return state


def test_the_wizard_proposes_chunks_when_ctx_len_does_not_fit_whole():
    from rwkv_tui.screens.wizard.method import chunking_proposal

    ctx_len, chunk, why = chunking_proposal(wizard_state(10))  # 1.5B LoRA at 8192 needs about 12 GB whole
    assert ctx_len == 8192 and 0 < chunk < 8192 and 8192 % chunk == 0
    assert why == f"ctx_len 8192 in chunks of {chunk} fits in 10 GB"
    assert chunking_proposal(wizard_state(10, ctx_len=1024)) is None  # fits whole: nothing to propose
    assert chunking_proposal(wizard_state(0.5)) is None  # not even chunked: nothing to propose


def test_the_wizard_proposes_chunks_for_documents_over_ctx_len():
    from rwkv_tui.screens.wizard.method import chunking_proposal

    ctx_len, chunk, why = chunking_proposal(wizard_state(23, ctx_len=1024, documents=[300, 5000, 900]))
    assert ctx_len == 8192 and 8192 % chunk == 0
    assert why.startswith("1 documents are longer than ctx_len 1024: ctx_len 8192 in chunks of")
    ctx_len, chunk, why = chunking_proposal(wizard_state(0, ctx_len=1024, documents=[3000]))  # CPU
    assert (ctx_len, chunk) == (4096, 1024) and "train them whole" in why
    assert chunking_proposal(wizard_state(0, ctx_len=1024, documents=[1000])) is None


@pytest.mark.asyncio
async def test_the_method_step_applies_the_proposal(tmp_path):
    from textual.widgets import Button

    from conftest import wait_for
    from rwkv_tui.app import RwkvTuiApp
    from rwkv_tui.screens.wizard import screen_for

    state = wizard_state(10)
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await app.push_screen(screen_for("method", state))
        await wait_for(pilot, lambda: app.screen.query("#apply-chunking") and app.screen.query_one("#chunking").display)
        app.screen.query_one("#apply-chunking", Button).press()
        await wait_for(pilot, lambda: state.config.data.chunk_ctx > 0)
        assert state.config.data.ctx_len == 8192 and 8192 % state.config.data.chunk_ctx == 0
        await wait_for(pilot, lambda: not app.screen.query_one("#chunking").display)
