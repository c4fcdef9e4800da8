"""The loop's structure: short functions, one epoch formula, periodic hooks, and rank 0 as the only writer."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import write_tiny_workspace
from rwkv_tui.trainer.config import EpochConfig, RunConfig
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
from rwkv_tui.trainer.training.epochs import epoch_of
from rwkv_tui.trainer.training.hooks import HookSchedule, PeriodicHook
from rwkv_tui.trainer.training.loop import run
from rwkv_tui.trainer.training.run_log import RunLog
from rwkv_tui.trainer.training.setup import RUN_DIR_VARIABLE, launch_rank_is_zero, launched_run_dir
from rwkv_tui.trainer.training.signals import StopRequest

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "trainer" / "training"  # loop.py and the phases it calls
MAX_FUNCTION_LINES = 60


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("loop"))


def tiny_config(workspace, steps: int) -> RunConfig:
    model, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model), str(data)
    config.data.ctx_len, config.data.micro_bsz, config.data.loading = 32, 2, "pad"
    config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    return config


def test_no_function_in_the_loop_is_longer_than_60_lines():
    lengths = {}
    for path in sorted(TRAINING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert "loop.py:run" in lengths and "loop.py:_train" in lengths
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long


@pytest.mark.parametrize("epoch_begin,epoch_save", [(0, 1), (3, 2)])
def test_epoch_of_gives_the_numbers_events_always_had(epoch_begin, epoch_save):
    epochs = EpochConfig(epoch_steps=4, epoch_count=5, epoch_begin=epoch_begin, epoch_save=epoch_save)
    for step in range(1, 21):
        position = epoch_of(step, epochs)
        assert position.number == (step - 1) // 4 + 1 + epoch_begin  # step events
        assert position.completed == step // 4 + epoch_begin           # checkpoint events
        assert position.ends_epoch == (step % 4 == 0)
        assert position.save_due == (step % 4 == 0 and (step // 4) % epoch_save == 0)
        if position.ends_epoch:  # epoch events and epoch files: both formulas agree there
            assert position.number == position.completed
    start = epoch_of(0, epochs)
    assert (start.number, start.completed, start.ends_epoch, start.save_due) == (epoch_begin, epoch_begin, False, False)


class FakeModel:
    def __init__(self):
        self.training = True

    def eval(self):
        self.training = False

    def train(self):
        self.training = True


def test_hook_schedule_runs_each_hook_when_due_and_never_twice_at_a_step():
    ctx = SimpleNamespace(step=0, model=FakeModel())
    seen: dict[str, list] = {"every2": [], "every3_end": [], "end_only": []}

    def recorder(name):
        return lambda c: seen[name].append((c.step, c.model.training, torch.is_grad_enabled()))

    schedule = HookSchedule([PeriodicHook(every=2, run=recorder("every2"), at_start=True, at_end=True),
                             PeriodicHook(every=3, run=recorder("every3_end"), at_end=True),
                             PeriodicHook(every=100, run=recorder("end_only"), at_end=True)])
    schedule.at_start(ctx)
    for ctx.step in range(1, 7):
        schedule.after_step(ctx)
    schedule.at_end(ctx)
    assert [s for s, *_ in seen["every2"]] == [0, 2, 4, 6]  # step 6: not again at the end
    assert [s for s, *_ in seen["every3_end"]] == [3, 6]
    assert [s for s, *_ in seen["end_only"]] == [6]
    assert all(not training and not grad for _, training, grad in sum(seen.values(), []))
    assert ctx.model.training  # back to training after each hook


def test_a_hook_that_fails_still_leaves_the_model_training():
    ctx = SimpleNamespace(step=0, model=FakeModel())

    def broken(_):
        raise RuntimeError("validation data missing")

    with pytest.raises(RuntimeError, match="validation data missing"):
        HookSchedule([PeriodicHook(every=1, run=broken, at_start=True)]).at_start(ctx)
    assert ctx.model.training


def test_periodic_hook_refuses_a_period_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        PeriodicHook(every=0, run=lambda ctx: None)


def test_hooks_run_inside_a_real_run_at_start_every_n_steps_and_at_a_stop(workspace, tmp_path):
    calls = []

    def validate(ctx):
        calls.append((ctx.step, ctx.model.training, torch.is_grad_enabled()))
        ctx.log.emit("info", message=f"validated at step {ctx.step}")

    stop = StopRequest()
    result = run(tiny_config(workspace, steps=8), tmp_path / "run", stop=stop,
                 on_step=lambda step, event: stop.request("stopped by test") if step == 5 else None,
                 hooks=[PeriodicHook(every=2, run=validate, at_start=True, at_end=True)])
    assert result.step == 5 and result.reason == "stopped by test"
    assert calls == [(0, False, False), (2, False, False), (4, False, False), (5, False, False)]
    events = read_all_events(RunFolder.at(tmp_path / "run"))
    order = [(e["kind"], e.get("step")) for e in events if e["kind"] in ("step", "info", "checkpoint")]
    validated = [i for i, (kind, _) in enumerate(order) if kind == "info"]
    assert [order[i - 1] for i in validated[1:]] == [("step", 2), ("step", 4), ("step", 5)]
    assert order[validated[-1] + 1] == ("checkpoint", 5)  # the end hook runs before the last save


def test_launch_rank_comes_from_the_launchers_variables():
    assert launch_rank_is_zero({})
    assert launch_rank_is_zero({"LOCAL_RANK": "0", "NODE_RANK": "0"})
    assert not launch_rank_is_zero({"LOCAL_RANK": "1"})           # Fabric's launcher, second device
    assert not launch_rank_is_zero({"RANK": "3", "LOCAL_RANK": "0"})  # torchrun, second machine
    assert not launch_rank_is_zero({"NODE_RANK": "1"})            # Fabric's launcher, second machine
    assert not launch_rank_is_zero({"SLURM_PROCID": "2"})
    # LOCAL_RANK comes before SLURM_PROCID, which SLURM sets even when it does not start the ranks.
    assert launch_rank_is_zero({"LOCAL_RANK": "0", "SLURM_PROCID": "5"})


def test_launched_ranks_use_rank_zeros_run_folder(tmp_path):
    mine = tmp_path / "lora-20250101-000001"
    handed_down = {RUN_DIR_VARIABLE: str(tmp_path / "lora-20250101-000000")}
    assert launched_run_dir(mine, handed_down) == mine  # rank 0 keeps its own
    assert launched_run_dir(mine, {**handed_down, "LOCAL_RANK": "1"}) == tmp_path / "lora-20250101-000000"
    assert launched_run_dir(mine, {"LOCAL_RANK": "1"}) == mine  # started by another launcher (torchrun)


def test_a_run_log_on_another_rank_writes_nothing(tmp_path):
    folder = RunFolder.at(tmp_path / "run").create()
    quiet = RunLog(folder, writes=False)
    quiet.emit("start", step=0)
    quiet.log("a line")
    quiet.status(state="running")
    quiet.close()
    assert [p.name for p in folder.path.iterdir()] == ["checkpoints"]

    log = RunLog(folder, writes=True)
    assert folder.pid_file.exists()
    log.follow_rank(False)  # Fabric says otherwise: this process stops writing and drops its pid file
    log.emit("start", step=0)
    assert not folder.pid_file.exists() and read_all_events(folder) == []
    log.follow_rank(True)
    log.emit("start", step=0)
    log.close()
    assert [e["kind"] for e in read_all_events(folder)] == ["start"] and not folder.pid_file.exists()


@pytest.mark.slow
def test_a_two_process_ddp_run_writes_the_folder_once_and_stops_together(workspace, tmp_path):
    """Fabric's launcher re-runs the command for rank 1 (gloo on CPU). SIGINT reaches rank 0 only,
    as the dashboard's Stop does; both ranks must stop at the same step, and only rank 0 writes."""
    model, data = workspace
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "rwkv_tui", "train", str(ROOT / "presets" / "demo-cpu.toml"),
           "--set", f"model.path={model}", "--set", f"data.path={data}", "--set", "epochs.epoch_steps=60",
           "--set", "epochs.epoch_count=1", "--set", "hardware.devices=2", "--set", "data.ctx_len=32",
           "--set", "data.micro_bsz=2", "--set", f"output.proj_dir={runs}", "--quiet"]  # no --run-dir: a timed name
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        folder = wait_for_steps(runs, proc, steps=3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    run_folders = [p.name for p in runs.iterdir() if p.name != ".token-cache"]  # the root's shared token cache
    assert run_folders == [folder.path.name]  # rank 1 used rank 0's folder
    events = read_all_events(folder)
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("done") == 1 and kinds[-1] == "done"
    done = events[-1]
    assert done["reason"] == "stopped by SIGINT" and 3 <= done["step"] < 60
    assert [e["step"] for e in events if e["kind"] == "step"] == list(range(1, done["step"] + 1))
    assert folder.read_status()["pid"] == proc.pid and folder.read_status()["state"] == "stopped"
    assert sum("[start]" in line for line in folder.log.read_text().splitlines()) == 1
    assert (folder.checkpoints / f"step{done['step']}-lora.pth").exists()
    assert (folder.checkpoints / "resume.ckpt").exists() and not folder.pid_file.exists()
    assert "GLOBAL_RANK: 1" in out  # there were two processes


def wait_for_steps(runs: Path, proc: subprocess.Popen, steps: int, timeout: float = 240) -> RunFolder:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        folders = list(runs.glob("*/events.jsonl"))
        if folders:
            folder = RunFolder.at(folders[0].parent)
            if sum(e["kind"] == "step" for e in read_all_events(folder)) >= steps:
                return folder
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {steps} steps before the deadline:\n{proc.communicate()[0]}")
