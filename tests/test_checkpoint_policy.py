"""output.save_every_steps and output.keep_last: extra step checkpoints, old ones deleted, resume exact."""

from __future__ import annotations

import pytest

from conftest import step_losses, tiny_cpu_config, write_tiny_workspace
from rwkv_tui.trainer.config import EpochConfig, RunConfig, validate
from rwkv_tui.trainer.peft.catalog import method_info
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
from rwkv_tui.trainer.training.loop import run
from rwkv_tui.trainer.training.outputs import drop_old_checkpoints, numbered_checkpoints
from rwkv_tui.trainer.training.signals import StopRequest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("policy")
    model, data = write_tiny_workspace(directory)
    return directory, model, data


def make_config(workspace, **extra) -> RunConfig:
    directory, model, data = workspace
    return tiny_cpu_config("lora", model, data, directory / "runs", data__ctx_len=16, data__micro_bsz=2,
                           epochs__epoch_steps=3, epochs__epoch_count=2, optim__lr_init=1e-2, optim__lr_final=1e-3,
                           optim__warmup_steps=1, **extra)


def names(folder) -> set[str]:
    return {p.name for p in (folder / "checkpoints").iterdir()}


def test_numbered_checkpoints_are_ordered_by_the_step_they_hold(tmp_path):
    info = method_info("lora")
    for name in ("epoch2-lora.pth", "step5-lora.pth", "epoch11-lora.pth", "step25-lora.pth", "final-lora.pth",
                 "best-lora.pth", "final-merged.pth", "resume.ckpt", "epoch1-state.pth", "step4-lora.pth.tmp"):
        (tmp_path / name).write_bytes(b"x")
    epochs = EpochConfig(epoch_steps=10, epoch_begin=1)  # epoch 2 ends at step 10, epoch 11 at step 100
    found = numbered_checkpoints(tmp_path, info, epochs)
    assert [(step, p.name) for step, p in found] == [(5, "step5-lora.pth"), (10, "epoch2-lora.pth"),
                                                     (25, "step25-lora.pth"), (100, "epoch11-lora.pth")]
    dropped = drop_old_checkpoints(tmp_path, info, epochs, keep_last=1)
    assert [p.name for p in dropped] == ["step5-lora.pth", "epoch2-lora.pth", "step25-lora.pth"]
    assert {p.name for p in tmp_path.iterdir()} == {"epoch11-lora.pth", "final-lora.pth", "best-lora.pth",
                                                    "final-merged.pth", "resume.ckpt", "epoch1-state.pth",
                                                    "step4-lora.pth.tmp"}
    assert drop_old_checkpoints(tmp_path, info, epochs, keep_last=0) == []  # 0 keeps all


@pytest.mark.slow
def test_save_every_steps_and_keep_last_in_a_run(workspace, tmp_path):
    result = run(make_config(workspace, output__save_every_steps=2), tmp_path / "all")
    assert result.reason == "finished"
    # steps 2 and 4 by save_every_steps, 3 and 6 at the epochs' ends (step 6 is not saved twice)
    assert names(tmp_path / "all") == {"step2-lora.pth", "epoch1-lora.pth", "step4-lora.pth", "epoch2-lora.pth",
                                       "final-merged.pth", "resume.ckpt"}
    saved = [e["step"] for e in read_all_events(RunFolder.at(tmp_path / "all")) if e["kind"] == "checkpoint"]
    assert saved == [2, 3, 4, 6, 6]  # the last one: the merged model

    result = run(make_config(workspace, output__save_every_steps=2, output__keep_last=2), tmp_path / "two")
    assert names(tmp_path / "two") == {"step4-lora.pth", "epoch2-lora.pth", "final-merged.pth", "resume.ckpt"}
    assert [p.name for p in result.outputs] == ["step4-lora.pth", "epoch2-lora.pth", "final-merged.pth"]
    assert step_losses(tmp_path / "two") == step_losses(tmp_path / "all")  # saving changes nothing of the run


@pytest.mark.slow
def test_resume_stays_exact_with_the_policy(workspace, tmp_path):
    config = make_config(workspace, output__save_every_steps=2, output__keep_last=1)
    straight = run(config, tmp_path / "straight")
    assert straight.step == 6

    stop = StopRequest()
    stopped = run(config, tmp_path / "resumed", stop=stop,
                  on_step=lambda step, event: stop.request("stopped by test") if step == 5 else None)
    assert stopped.step == 5
    assert names(tmp_path / "resumed") == {"step5-lora.pth", "resume.ckpt"}  # step4 and epoch1 went
    resumed = run(None, tmp_path / "resumed", resume=True)
    assert resumed.step == 6 and resumed.reason == "finished"
    assert step_losses(tmp_path / "resumed") == pytest.approx(step_losses(tmp_path / "straight"), rel=1e-5)
    assert names(tmp_path / "resumed") == {"epoch2-lora.pth", "final-merged.pth", "resume.ckpt"}


def test_policy_settings_are_range_checked(workspace):
    config = make_config(workspace, output__save_every_steps=-1, output__keep_last=-2)
    fields = {p.field for p in validate(config)}
    assert {"output.save_every_steps", "output.keep_last"} <= fields
    config = make_config(workspace, output__keep_last=10**7)
    assert "output.keep_last" in {p.field for p in validate(config)}
