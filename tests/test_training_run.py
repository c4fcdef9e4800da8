"""End-to-end runs on CPU with a tiny model: the run folder, every method, resume, stop, NaN guard."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import step_losses, tiny_cpu_config, write_tiny_checkpoint
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
from rwkv_tui.trainer.training.loop import TrainingError, run
from rwkv_tui.trainer.training.signals import StopRequest

CHAT = [
    "User: What is water?\n\nAssistant: Water is a clear liquid.",
    "User: Name a colour.\n\nAssistant: Blue.",
    "User: Say hi.\n\nAssistant: Hi there!",
    "User: Two plus two?\n\nAssistant: Four.",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("train")
    model_path, spec = write_tiny_checkpoint(directory, n_layer=2, n_embd=64, vocab_size=65536, head_size=16)
    data = directory / "chat.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in CHAT))
    return directory, model_path, data


def make_config(workspace, method: str, steps: int = 12, **extra) -> RunConfig:
    directory, model_path, data = workspace
    return tiny_cpu_config(method, model_path, data, directory / "runs", data__ctx_len=32, data__micro_bsz=2,
                           data__loading="pad", epochs__epoch_steps=steps, epochs__epoch_count=1,
                           hardware__strategy="auto", **extra)


LRS = {"full": 1e-3, "lora": 1e-2, "pissa": 1e-3, "miss": 1e-3, "lisa": 1e-3, "state": 1.0}


@pytest.mark.parametrize("method", ["full", "lora", "pissa", "miss", "lisa", "state"])
def test_every_method_trains_and_writes_the_run_folder(workspace, tmp_path, method):
    extra = {"optim__lr_init": LRS[method], "optim__lr_final": LRS[method], "optim__warmup_steps": 0}
    if method == "lisa":
        extra.update(method__lisa_r=1, method__lisa_k=4)
    config = make_config(workspace, method, steps=15, **extra)
    result = run(config, tmp_path / "run")
    folder = RunFolder.at(tmp_path / "run")
    assert result.reason == "finished" and result.step == 15
    assert {p.name for p in folder.path.iterdir()} >= {"config.toml", "events.jsonl", "train.log", "status.json",
                                                      "checkpoints"}
    events = read_all_events(folder)
    kinds = [e["kind"] for e in events if e["kind"] != "loading"]  # "loading model…" etc. come before start
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 15
    step = next(e for e in events if e["kind"] == "step")
    for key in ("loss", "smoothed_loss", "lr", "tokens_per_s", "step", "epoch", "eta_s"):
        assert key in step
    assert step["wkv_op"].startswith("torch")
    losses = step_losses(folder.path)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert folder.read_status()["state"] == "done"
    assert result.outputs and all(p.exists() for p in result.outputs)
    assert not folder.pid_file.exists()


def test_resume_after_stop_continues_the_same_loss_curve(workspace, tmp_path):
    config = make_config(workspace, "lora", steps=10, optim__lr_init=1e-2, optim__lr_final=1e-3,
                         optim__warmup_steps=2)
    straight = run(config, tmp_path / "straight")
    assert straight.step == 10

    stop = StopRequest()
    stopped = run(config, tmp_path / "resumed", stop=stop,
                  on_step=lambda step, event: stop.request("stopped by test") if step == 4 else None)
    assert stopped.reason == "stopped by test" and stopped.step == 4
    events = read_all_events(RunFolder.at(tmp_path / "resumed"))
    done = [e for e in events if e["kind"] == "done"]
    assert done[-1]["reason"] == "stopped by test"
    # Inside an epoch, steps name the epoch they belong to, a checkpoint the epochs it completed.
    assert {e["epoch"] for e in events if e["kind"] == "step"} == {1}
    assert [(e["step"], e["epoch"]) for e in events if e["kind"] == "checkpoint"] == [(4, 0)]
    assert (tmp_path / "resumed" / "checkpoints" / "step4-lora.pth").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "resume.ckpt").exists()

    resumed = run(None, tmp_path / "resumed", resume=True)
    assert resumed.step == 10 and resumed.reason == "finished"
    assert step_losses(tmp_path / "resumed") == pytest.approx(step_losses(tmp_path / "straight"), rel=1e-4)


def test_non_finite_loss_stops_with_a_clear_error(workspace, tmp_path, monkeypatch):
    import rwkv_tui.trainer.training.loop as loop

    calls = {"n": 0}
    real = loop.masked_cross_entropy

    def poisoned(logits, targets, mask):
        calls["n"] += 1
        loss = real(logits, targets, mask)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "masked_cross_entropy", poisoned)
    config = make_config(workspace, "lora", steps=6)
    with pytest.raises(TrainingError, match="loss became nan at step 3"):
        run(config, tmp_path / "nan")
    folder = RunFolder.at(tmp_path / "nan")
    assert folder.read_status()["state"] == "failed"
    kinds = [e["kind"] for e in read_all_events(folder)]
    assert kinds[-2:] == ["error", "done"] and kinds.count("step") == 2


def test_masked_cross_entropy_ignores_unmasked_tokens():
    from rwkv_tui.trainer.training.loop import masked_cross_entropy

    logits = torch.randn(1, 4, 10)
    targets = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits[0, 1:3], targets[0, 1:3])
    assert masked_cross_entropy(logits, targets, mask) == pytest.approx(expected.item(), rel=1e-6)
    logits2 = logits.clone()
    logits2[0, 0] += 100  # changes at masked-out positions do not matter
    assert masked_cross_entropy(logits2, targets, mask) == pytest.approx(expected.item(), rel=1e-6)


def test_qlora_run_through_the_trainer(workspace, tmp_path):
    pytest.importorskip("bitsandbytes")
    config = make_config(workspace, "lora", steps=6, method__quant="nf4", optim__lr_init=1e-2, optim__lr_final=1e-2)
    result = run(config, tmp_path / "qlora")
    assert result.reason == "finished"
    assert {p.name for p in result.outputs} == {"epoch1-lora.pth", "final-merged.pth"}


def test_warm_start_through_the_trainer(workspace, tmp_path):
    from rwkv_tui.trainer.errors import RwkvTuiError

    first = run(make_config(workspace, "lora", steps=6, optim__lr_init=1e-2, optim__lr_final=1e-2), tmp_path / "a")
    adapter = next(p for p in first.outputs if p.name.endswith("-lora.pth"))
    config = make_config(workspace, "lora", steps=3, method__init_from=str(adapter))
    run(config, tmp_path / "b")
    infos = [e["message"] for e in read_all_events(RunFolder.at(tmp_path / "b")) if e["kind"] == "info"]
    assert any("started from" in m for m in infos)
    assert step_losses(tmp_path / "b")[0] < step_losses(tmp_path / "a")[0]  # continues, not from scratch
    with pytest.raises(RwkvTuiError, match="holds a lora adapter"):
        run(make_config(workspace, "state", steps=2, method__init_from=str(adapter)), tmp_path / "c")


def test_out_of_memory_names_what_to_change(workspace, tmp_path, monkeypatch):
    import rwkv_tui.trainer.training.loop as loop

    def oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "masked_cross_entropy", oom)
    with pytest.raises(TrainingError, match="ran out of memory with micro_bsz=2, ctx_len=32") as exc:
        run(make_config(workspace, "lora", steps=3), tmp_path / "oom")
    assert "grad_cp" in exc.value.hint and "int8/nf4" in exc.value.hint
    events = read_all_events(RunFolder.at(tmp_path / "oom"))
    assert events[-2]["kind"] == "error" and "micro_bsz" in events[-2]["message"]


def test_wandb_logging(workspace, tmp_path, monkeypatch):
    import sys
    import types

    logged = []
    fake = types.ModuleType("wandb")

    class FakeRun:
        def log(self, data, step):
            logged.append((step, data))

        def finish(self):
            logged.append(("finished", {}))

    fake.init = lambda **kwargs: logged.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run(make_config(workspace, "lora", steps=3, output__wandb="my-project"), tmp_path / "wb")
    assert logged[0][0] == "init" and logged[0][1]["project"] == "my-project"
    assert [s for s, _ in logged[1:4]] == [1, 2, 3] and "loss" in logged[1][1]
    assert logged[-1][0] == "finished"


@pytest.mark.parametrize("version,method", [("x060", "lora"), ("x060", "state"), ("x052", "pissa")])
def test_rwkv6_and_rwkv5_runs_train_and_resume(workspace, tmp_path, version, method):
    """The whole engine (data, Fabric loop, outputs, resume) on RWKV-6/5 models."""
    model_path, _ = write_tiny_checkpoint(tmp_path, version=version, n_layer=2, n_embd=64, vocab_size=65536,
                                          head_size=16)
    lr = LRS[method]
    config = make_config(workspace, method, steps=8, optim__lr_init=lr, optim__lr_final=lr, optim__warmup_steps=0)
    config.model.path = str(model_path)
    stop = StopRequest()
    stopped = run(config, tmp_path / "run", stop=stop,
                  on_step=lambda step, event: stop.request("paused") if step == 5 else None)
    assert stopped.step == 5
    result = run(None, tmp_path / "run", resume=True)
    assert result.reason == "finished" and result.step == 8
    losses = step_losses(tmp_path / "run")
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses
    assert result.outputs and all(p.exists() for p in result.outputs)
    start = next(e for e in read_all_events(RunFolder.at(tmp_path / "run")) if e["kind"] == "start")
    assert start["model"].startswith({"x060": "RWKV-6", "x052": "RWKV-5"}[version])
    assert start["version"] == version  # what the dashboard's Export reads
