"""Fault injection (issue 13), on the CPU with a tiny model: each way a run folder, a checkpoint,
a setting or a signal can go wrong gets a clear message, never a traceback or lost data.

Sections: the run folder (one owner, honest pids, malformed lines, symlinks); checkpoints
(unsafe or damaged resume files, diverged weights, full disks, signals during saves, stops
inside a long accumulation); settings, data and merges (bounds, data_type, empty configs,
shape checks, the jsonl token cache).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` is not an installed package

from bench.checkpoint_save import measure  # noqa: E402
from conftest import MATH_CHAT, write_tiny_checkpoint, write_tiny_workspace  # noqa: E402
from rwkv_tui.launch import stop_training  # noqa: E402
from rwkv_tui.run_view import RunView  # noqa: E402
from rwkv_tui.trainer import checkpoint  # noqa: E402
from rwkv_tui.trainer.adapters import merge_files, merge_into, save_state_file  # noqa: E402
from rwkv_tui.trainer.atomic import DiskSpace, remove_stale_temporaries  # noqa: E402
from rwkv_tui.trainer.checkpoint import atomic_torch_save, load_checkpoint  # noqa: E402
from rwkv_tui.trainer.config import RunConfig, ensure_valid, load_config, save_config, validate  # noqa: E402
from rwkv_tui.trainer.data.datasets import build_dataset  # noqa: E402
from rwkv_tui.trainer.errors import CheckpointError, ConfigError, DataError, RwkvTuiError  # noqa: E402
from rwkv_tui.trainer.hardware import MemoryBudget  # noqa: E402
from rwkv_tui.trainer.spec import ModelSpec  # noqa: E402
from rwkv_tui.trainer.training import loop, resume as resume_module  # noqa: E402
from rwkv_tui.trainer.training.folder import RunFolder, RunLock, read_all_events, write_pid_file  # noqa: E402
from rwkv_tui.trainer.training.hooks import PeriodicHook  # noqa: E402
from rwkv_tui.trainer.training.listing import list_runs  # noqa: E402
from rwkv_tui.trainer.training.loop import run  # noqa: E402
from rwkv_tui.trainer.training.outputs import MAX_SANE_WEIGHT, weight_health  # noqa: E402
from rwkv_tui.trainer.training.resume import RESUME_FILE, read_resume_file  # noqa: E402
from rwkv_tui.trainer.training.signals import StopRequest  # noqa: E402


# ==============================================================================================
# Points 1, 3, 5 (stale temporaries), 6 (malformed lines), 8 (--set on resume, symlinks): the run folder


FOLDER_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder_workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("folder-faults")
    model_path, _ = write_tiny_checkpoint(directory, n_layer=1, n_embd=32, vocab_size=65536, head_size=16)
    data = directory / "chat.jsonl"
    data.write_text("".join(json.dumps({"text": f"User: say {i}.\n\nAssistant: {i}."}) + "\n" for i in range(8)))
    return model_path, data


def folder_config(workspace, steps: int = 2) -> RunConfig:
    model_path, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model_path), str(data)
    config.data.ctx_len, config.data.micro_bsz, config.data.loading = 16, 1, "pad"
    config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
    config.hardware.accelerator, config.hardware.precision = "cpu", "fp32"
    config.hardware.strategy, config.hardware.grad_cp = "auto", False
    return config


def folder_stopped_run(workspace, run_dir: Path) -> None:
    """A run stopped after its first step: resume.ckpt and config.toml exist, steps remain."""
    stop = StopRequest()
    run(folder_config(workspace, steps=4), run_dir, stop=stop, on_step=lambda step, event: stop.request())


def folder_sigint_recorder(marker: Path, folder: RunFolder | None = None) -> subprocess.Popen:
    """A child that records a SIGINT in `marker`; with `folder` it first takes that folder's lock."""
    take = (f"from rwkv_tui.trainer.training.folder import RunFolder, RunLock\n"
            f"lock = RunLock.acquire(RunFolder.at({str(folder.path)!r}))\n") if folder else ""
    code = (f"import signal, sys, time, pathlib\n{take}"
            f"signal.signal(signal.SIGINT, lambda *a: (pathlib.Path({str(marker)!r}).write_text('x'), sys.exit(0)))\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=FOLDER_ROOT)
    assert child.stdout.readline().strip() == "ready"
    return child


# --------------------------------------------------------------------------------- one owner


def test_a_second_trainer_is_refused_naming_the_owner(folder_workspace, tmp_path):
    folder = RunFolder.at(tmp_path / "run").create()
    folder.write_status(state="running", step=7)
    owner = RunLock.acquire(folder)  # as a live trainer holds it (flock: another open file conflicts)
    try:
        for kwargs in ({}, {"resume": True}, {"force": True}):
            with pytest.raises(RwkvTuiError, match=rf"in use by trainer pid {os.getpid()} \(running, step 7\)"):
                run(folder_config(folder_workspace), folder.path, **kwargs)
    finally:
        owner.release()
    assert sorted(p.name for p in folder.path.iterdir()) == ["checkpoints", "status.json", "trainer.lock"]


def test_a_folder_holding_a_run_needs_resume_or_force(folder_workspace, tmp_path):
    run_dir = tmp_path / "run"
    run(folder_config(folder_workspace), run_dir)
    folder = RunFolder.at(run_dir)
    before = {p: p.stat().st_mtime_ns for p in [folder.config, folder.events, *folder.checkpoints.iterdir()]}
    with pytest.raises(RwkvTuiError, match="already holds a run") as refused:
        run(folder_config(folder_workspace, steps=3), run_dir)
    assert "--resume" in refused.value.hint and "--force" in refused.value.hint
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing was touched

    result = run(folder_config(folder_workspace, steps=3), run_dir, force=True)
    assert result.step == 3
    kinds = [e["kind"] for e in read_all_events(folder)]
    assert kinds.count("start") == 1 and kinds[-1] == "done"  # the old run's events went, none interleave
    assert load_config(folder.config).epochs.epoch_steps == 3


def test_nothing_is_written_before_validation_passes(folder_workspace, tmp_path):
    bad = folder_config(folder_workspace)
    bad.model.path = str(tmp_path / "missing.pth")
    with pytest.raises(RwkvTuiError):
        run(bad, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # the folder it made went again

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(RwkvTuiError):
        run(bad, existing)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]  # no config.toml, status or lock left


def test_the_cli_refuses_a_used_run_dir_and_force_with_resume(folder_workspace, tmp_path, capsys):
    from rwkv_tui.cli import main

    model_path, data = folder_workspace
    run_dir = tmp_path / "run"
    RunFolder.at(run_dir).create()
    save_config(folder_config(folder_workspace), run_dir / "config.toml", only_changes=False)
    args = ["train", "--set", f"model.path={model_path}", "--set", f"data.path={data}", "--run-dir", str(run_dir)]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--force"]) == 2
    assert "--force replaces a run" in capsys.readouterr().err


# --------------------------------------------------------------------------------- honest pids


def test_a_reused_pid_is_shown_crashed_and_never_signalled(tmp_path):
    marker = tmp_path / "got-sigint"
    folder = RunFolder.at(tmp_path / "run").create()
    folder.events.write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    folder.write_status(state="running", step=3)
    bystander = folder_sigint_recorder(marker)  # the dead trainer's pid now belongs to this process
    try:
        write_pid_file(folder.pid_file, bystander.pid, cmdline=["python", "-m", "rwkv_tui", "train"])
        assert folder.trainer_pid() is None
        assert [r.state for r in list_runs(tmp_path)] == ["crashed"]
        assert stop_training(folder.path) is False
        folder.pid_file.write_text(str(bystander.pid))  # a bare pid (no identity) is not trusted either
        assert stop_training(folder.path) is False
        time.sleep(0.3)
        assert bystander.poll() is None and not marker.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_signals_the_process_holding_the_lock(tmp_path):
    marker = tmp_path / "got-sigint"
    folder = RunFolder.at(tmp_path / "run").create()
    folder.events.write_text(json.dumps({"kind": "start", "step": 0}) + "\n")
    folder.write_status(state="running")
    trainer = folder_sigint_recorder(marker, folder)
    try:
        folder.pid_file.write_text("1")  # whatever trainer.pid says, the lock's holder is the trainer
        assert folder.trainer_pid() == trainer.pid
        assert [r.state for r in list_runs(tmp_path)] == ["running"]
        assert stop_training(folder.path) is True
        trainer.wait(timeout=10)
        assert marker.exists()
    finally:
        trainer.kill()
    assert folder.trainer_pid() is None  # the kernel dropped the lock with the process
    assert [r.state for r in list_runs(tmp_path)] == ["crashed"]


# --------------------------------------------------------------------------------- stale temporaries


def test_stale_temporary_files_go_at_start_and_on_resume(folder_workspace, tmp_path):
    run_dir = tmp_path / "run"
    folder = RunFolder.at(run_dir).create()
    stale = [folder.checkpoints / "resume.ckpt.tmp", folder.checkpoints / ".epoch1-lora.pth.abc123.tmp",
             folder.path / ".status.json.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    folder_stopped_run(folder_workspace, run_dir)
    assert not any(path.exists() for path in stale)
    infos = [e["message"] for e in read_all_events(folder) if e["kind"] == "info"]
    assert any("removed 3 stale temporary file(s)" in m for m in infos), infos

    leftover = folder.checkpoints / "resume.ckpt.tmp"
    leftover.mkdir()  # DeepSpeed's temporary folder, from a save killed mid-way
    run(None, run_dir, resume=True)
    assert not leftover.exists()


# --------------------------------------------------------------------------------- malformed lines


def test_runs_skips_and_reports_a_malformed_status(tmp_path, capsys):
    from rwkv_tui.commands.runs import run as runs_command

    for name, status in [("list", "[1, 2]"), ("garbage", "{not json"), ("fields", json.dumps(
            {"state": "done", "step": "many", "updated": "yesterday", "loss": [1]}))]:
        folder = RunFolder.at(tmp_path / name).create()
        folder.events.write_text("")
        folder.status.write_text(status)
    assert runs_command(Namespace(root=str(tmp_path), json=False)) == 0
    captured = capsys.readouterr()
    assert "not a JSON object" in captured.err and "not valid JSON" in captured.err
    assert "field 'step'" in captured.err and "field 'updated'" in captured.err
    states = {r.path.name: r.state for r in list_runs(tmp_path)}
    assert states == {"list": "unknown", "garbage": "unknown", "fields": "done"}


def test_malformed_event_lines_are_skipped_and_reported(tmp_path):
    folder = RunFolder.at(tmp_path).create()
    lines = ['{"kind": "start", "step": 0, "total_steps": 4}', "42", "[1]", "{broken",
             '{"kind": "step", "step": "two", "loss": 1.0}', '{"kind": "step", "loss": 1.0}',
             '{"kind": "step", "step": 1, "loss": 2.0, "lr": "fast", "eta_s": "soon", "total_steps": "x"}',
             '{"kind": "epoch", "epoch": 1, "smoothed_loss": "low"}', '{"kind": "done", "reason": ["x"]}']
    folder.events.write_text("\n".join(lines) + "\n")
    view = RunView()
    for event in read_all_events(folder):
        view.apply(event)
    assert view.step == 1 and view.loss == [2.0] and view.total_steps == 4
    assert view.lr is None and view.eta_s is None  # wrong-typed fields are dropped, not shown
    assert view.problems == 5 and view.state == "stopped"
    assert sum("skipped" in line for _, line in view.log) == 5


@pytest.mark.asyncio
async def test_the_dashboard_survives_malformed_files(tmp_path):
    from conftest import wait_for
    from rwkv_tui.app import RwkvTuiApp
    from rwkv_tui.screens.dashboard import DashboardScreen

    folder = RunFolder.at(tmp_path / "run").create()
    folder.events.write_text('{"kind": "start", "step": 0, "total_steps": 2}\n7\n'
                             '{"kind": "step", "step": 1, "loss": "x"}\n{"kind": "done", "reason": "finished"}\n')
    folder.status.write_text('"not an object"')
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        await wait_for(pilot, lambda: screen.view.state == "done")
        await wait_for(pilot, lambda: screen.view.problems == 3)
        assert any("status.json" in line for _, line in screen.view.log)


# --------------------------------------------------------------------------------- --set on resume


def test_set_on_resume_is_refused_except_epochs(folder_workspace, tmp_path):
    run_dir = tmp_path / "run"
    folder_stopped_run(folder_workspace, run_dir)
    folder = RunFolder.at(run_dir)
    frozen = folder.config.read_text()
    with pytest.raises(RwkvTuiError, match="optim.lr_init cannot change on resume"):
        run(None, run_dir, resume=True, changes=["optim.lr_init=1e-3", "epochs.epoch_count=2"])
    assert folder.config.read_text() == frozen

    result = run(None, run_dir, resume=True, changes=["epochs.epoch_count=2", "epochs.epoch_save=2"])
    assert result.reason == "finished" and result.step == 8
    config = load_config(folder.config)
    assert (config.epochs.epoch_count, config.epochs.epoch_save) == (2, 2)
    infos = [e["message"] for e in read_all_events(folder) if e["kind"] == "info"]
    assert "on resume epochs.epoch_count: 1 -> 2" in infos and "on resume epochs.epoch_save: 1 -> 2" in infos


# --------------------------------------------------------------------------------- symlinks


def test_a_symlink_in_the_run_folder_is_an_error(folder_workspace, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "trainer.pid").symlink_to(target)
    with pytest.raises(RwkvTuiError, match="symbolic link") as refused:
        run(folder_config(folder_workspace), run_dir)
    assert refused.value.path == str(run_dir / "trainer.pid")
    assert target.read_text() == "keep me"
    assert not (run_dir / "config.toml").exists() and not (run_dir / "events.jsonl").exists()

    folder = RunFolder.at(tmp_path / "other").create()
    folder.pid_file.symlink_to(target)
    with pytest.raises(RwkvTuiError, match="symbolic link"):
        write_pid_file(folder.pid_file, os.getpid())  # O_NOFOLLOW: the link's target is never written
    assert target.read_text() == "keep me"
    folder.events.symlink_to(target)
    assert read_all_events(folder)[0]["kind"] == "warning"  # a reader reports it, never follows it


def test_sigint_to_a_foreign_process_is_impossible_after_the_trainer_exits(tmp_path):
    """The race Stop guards with a pidfd: the trainer exits between the check and the signal."""
    folder = RunFolder.at(tmp_path / "run").create()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_pid_file(folder.pid_file, child.pid, child.args)  # the command run, as the launcher records it
        assert folder.trainer_pid() == child.pid  # recorded identity matches: a launched trainer
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert folder.trainer_pid() is None and stop_training(folder.path) is False
    finally:
        child.kill()


# ==============================================================================================
# Points 2, 4, 5, 6, 7 (signals): checkpoints, saves and stops


CKPT_TEXTS = [f"User: What is {a} times {b}?\n\nAssistant: {a * b}." for a in range(6) for b in range(4)]


@pytest.fixture(scope="module")
def ckpt_workspace(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("faults_ckpt"), CKPT_TEXTS)


def ckpt_config(workspace, epoch_steps: int, epoch_count: int = 1, accumulate: int = 1) -> RunConfig:
    model, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model), str(data)
    config.data.ctx_len, config.data.micro_bsz, config.data.loading = 32, 2, "pad"
    config.data.accumulate_grad_batches = accumulate
    config.epochs.epoch_steps, config.epochs.epoch_count = epoch_steps, epoch_count
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    return config


def ckpt_lora_weights(ctx) -> dict[str, torch.Tensor]:
    core = ctx.model.module
    return {name: p for name, p in core.named_parameters() if p.requires_grad}


class CkptPayload:
    """Unpickling this creates a folder: the code a crafted resume.ckpt would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


# ---------------------------------------------------------------------------- point 2: weights_only


def test_a_resume_file_carrying_code_is_refused_even_when_the_environment_forces_full_unpickling(
        ckpt_workspace, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run(ckpt_config(ckpt_workspace, epoch_steps=2), run_dir)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    resume_path = run_dir / "checkpoints" / RESUME_FILE
    honest = read_resume_file(resume_path)  # our own file needs no extra safe globals
    assert honest["step"] == 2 and set(honest) >= {"model", "optimizer", "smoothed", "rng"}
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "crafted.ckpt"  # beside, then renamed: `honest` is memory-mapped from resume.ckpt
    torch.save({**honest, "step": CkptPayload(marker)}, crafted)
    os.replace(crafted, resume_path)
    with pytest.raises(RwkvTuiError) as caught:
        run(None, run_dir, resume=True)
    assert not marker.exists()
    assert str(resume_path) in str(caught.value) and "refused" in str(caught.value)


# ---------------------------------------------------------------------------- point 6: corrupt files


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a resume point"])
def test_a_damaged_resume_file_is_an_error_naming_it(ckpt_workspace, tmp_path, damage):
    run_dir = tmp_path / "run"
    run(ckpt_config(ckpt_workspace, epoch_steps=2), run_dir)
    resume_path = run_dir / "checkpoints" / RESUME_FILE
    content = resume_path.read_bytes()
    if damage == "truncated":
        resume_path.write_bytes(content[: len(content) // 2])
    elif damage == "garbage":
        resume_path.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        resume_path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)}, resume_path)
    with pytest.raises(CheckpointError) as caught:
        run(None, run_dir, resume=True)
    assert caught.value.path == str(resume_path)
    assert read_all_events(RunFolder.at(run_dir))[-1]["reason"] == "error"


# ---------------------------------------------------------------------------- point 4: sane checkpoints


def test_weight_health_flags_nan_inf_and_huge_values_and_names_the_tensor():
    assert weight_health({"a": torch.ones(3), "b": torch.full((2,), -50.0)}).sane
    for bad in (float("nan"), float("inf"), MAX_SANE_WEIGHT * 100):
        health = weight_health({"a": torch.ones(3), "b": torch.tensor([1.0, bad])})
        assert not health.sane and health.tensor == "b"


def test_huge_but_finite_weights_are_never_saved_and_the_run_points_at_the_last_good_step(
        ckpt_workspace, tmp_path):
    """The issue's lr=1e6 case: the adapter was finite but |w| = 1e6, and its merged model gave NaN."""
    def diverge(ctx):
        next(iter(ckpt_lora_weights(ctx).values())).view(-1)[0] = 1e6

    run_dir = tmp_path / "run"
    with pytest.raises(RwkvTuiError) as caught:
        run(ckpt_config(ckpt_workspace, epoch_steps=2, epoch_count=3), run_dir,
            hooks=[PeriodicHook(every=4, run=diverge)])
    text = str(caught.value)
    assert "the weights diverged by step 4" in text and "1e+06" in text
    assert "the last good checkpoint is step 2" in text and "epoch1-lora.pth" in text and "lr_init" in text
    checkpoints = run_dir / "checkpoints"
    assert read_resume_file(checkpoints / RESUME_FILE)["step"] == 2
    assert not (checkpoints / "epoch2-lora.pth").exists()


def test_a_nan_loss_ends_the_run_pointing_at_the_last_finite_checkpoint(ckpt_workspace, tmp_path):
    def poison(ctx):
        next(iter(ckpt_lora_weights(ctx).values())).fill_(float("nan"))

    run_dir = tmp_path / "run"
    with pytest.raises(RwkvTuiError) as caught:
        run(ckpt_config(ckpt_workspace, epoch_steps=2, epoch_count=3), run_dir,
            hooks=[PeriodicHook(every=3, run=poison)])
    text = str(caught.value)
    assert "the loss became nan at step 4" in text
    assert "the last good checkpoint is step 2" in text and "try" in text and "lr_init" in text


def test_after_a_real_divergence_at_lr_1e6_no_saved_file_holds_diverged_weights(ckpt_workspace, tmp_path):
    config = ckpt_config(ckpt_workspace, epoch_steps=1, epoch_count=8)
    config.optim.lr_init = config.optim.lr_final = 1e6
    run_dir = tmp_path / "run"
    with pytest.raises(RwkvTuiError) as caught:
        run(config, run_dir)
    assert "step" in str(caught.value) and "lr_init" in str(caught.value)
    for saved in (run_dir / "checkpoints").glob("*-lora.pth"):
        assert weight_health(checkpoint.load_state_dict(saved)).sane, saved
    resume_path = run_dir / "checkpoints" / RESUME_FILE
    if resume_path.exists():
        assert weight_health(read_resume_file(resume_path)["model"]).sane


# ---------------------------------------------------------------------------- point 5: streaming saves


def test_saves_stage_their_temp_files_in_checkpoints_never_in_tmpdir(ckpt_workspace, tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))
    staged: list[Path] = []
    real_output = checkpoint.atomic_output

    @contextlib.contextmanager
    def recording_output(path, mode="wb"):
        with real_output(path, mode) as handle:
            staged.append(Path(os.readlink(f"/proc/self/fd/{handle.fileno()}")))
            yield handle

    monkeypatch.setattr(checkpoint, "atomic_output", recording_output)
    run_dir = tmp_path / "run"
    run(ckpt_config(ckpt_workspace, epoch_steps=2), run_dir)
    checkpoints = (run_dir / "checkpoints").resolve()
    assert any(p.name.startswith(f".{RESUME_FILE}.") for p in staged)
    assert all(p.parent.resolve() == checkpoints and p.suffix == ".tmp" for p in staged), staged
    unrelated = "torchinductor_"  # torch's compile cache lives in $TMPDIR by design
    assert [p for p in tmpdir.iterdir() if not p.name.startswith(unrelated)] == []
    assert not list(checkpoints.glob("*.tmp"))


def test_stale_temp_files_and_folders_are_removed(tmp_path):
    (tmp_path / ".resume.ckpt.abc123.tmp").write_bytes(b"x" * 100)
    (tmp_path / "resume.ckpt.tmp").mkdir()
    (tmp_path / "epoch1-lora.pth").write_bytes(b"keep")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".resume.ckpt.abc123.tmp", "resume.ckpt.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["epoch1-lora.pth"]


@pytest.mark.slow
def test_a_save_streams_peak_extra_ram_is_about_one_tensor_not_the_checkpoint():
    """128 MB in 8 tensors of 16 MB: Lightning's fabric.save holds the whole file in RAM (twice)."""
    ours = measure("atomic_torch_save", megabytes=128, tensors=8)
    lightning = measure("lightning_atomic_save", megabytes=128, tensors=8)
    assert ours.peak_extra_mb <= ours.largest_tensor_mb + 8, ours
    assert lightning.peak_extra_mb >= ours.checkpoint_mb, lightning  # the measurement can see a copy


# ---------------------------------------------------------------------------- point 6: disk full


def test_a_short_disk_is_refused_before_writing_and_the_previous_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "resume.ckpt"
    atomic_torch_save({"w": torch.ones(4)}, target)
    before = target.read_bytes()
    monkeypatch.setattr(checkpoint, "disk_space",
                        lambda directory: DiskSpace(free_bytes=300_000, mount=Path("/mnt/small")))
    with pytest.raises(CheckpointError) as caught:
        atomic_torch_save({"w": torch.zeros(1_000_000)}, target)
    assert caught.value.message == (f"disk full while writing {target}: 6 MB needed, 1 MB free on /mnt/small; "
                                    "the previous checkpoint is intact")
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_that_hits_enospc_is_the_disk_full_message_not_a_traceback(tmp_path, monkeypatch):
    @contextlib.contextmanager
    def full_disk(path, mode="wb"):
        with open("/dev/full", mode) as handle:
            yield handle

    monkeypatch.setattr(checkpoint, "atomic_output", full_disk)
    target = tmp_path / "epoch1-lora.pth"
    with pytest.raises(CheckpointError) as caught:
        atomic_torch_save({"w": torch.zeros(1_000_000)}, target)
    assert caught.value.message.startswith(f"disk full while writing {target}: 6 MB needed, ")
    assert caught.value.message.endswith("; the previous checkpoint is intact")


def test_a_disk_that_fills_mid_run_fails_the_run_cleanly_keeping_the_last_checkpoint(
        ckpt_workspace, tmp_path, monkeypatch):
    def fill_disk(ctx):
        monkeypatch.setattr(checkpoint, "disk_space", lambda d: DiskSpace(free_bytes=0, mount=Path("/")))

    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"disk full while writing .*epoch2-lora\.pth: 2 MB needed, 0 MB free on /; the previous"):
        run(ckpt_config(ckpt_workspace, epoch_steps=2, epoch_count=2), run_dir,
            hooks=[PeriodicHook(every=3, run=fill_disk)])
    monkeypatch.undo()
    assert read_resume_file(run_dir / "checkpoints" / RESUME_FILE)["step"] == 2
    events = read_all_events(RunFolder.at(run_dir))
    assert [e["kind"] for e in events[-2:]] == ["error", "done"] and "disk full" in events[-2]["message"]


# ---------------------------------------------------------------------------- signals (points 6 and 7)


def test_a_second_ctrl_c_during_the_save_is_ignored_and_reported(ckpt_workspace, tmp_path, monkeypatch):
    """The first SIGINT stops the run; a second one arrives while resume.ckpt is written. Without the
    guard it would reach the previous handler (here a recorder, normally KeyboardInterrupt)."""
    reached_previous = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: reached_previous.append(signum))
    real_save = resume_module.atomic_torch_save

    def save_with_second_ctrl_c(obj, path):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes: let it
        real_save(obj, path)

    monkeypatch.setattr(resume_module, "atomic_torch_save", save_with_second_ctrl_c)
    try:
        result = run(ckpt_config(ckpt_workspace, epoch_steps=6), tmp_path / "run",
                     on_step=lambda step, event: step == 2 and os.kill(os.getpid(), signal.SIGINT))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.reason == "stopped by SIGINT" and result.step == 2 and reached_previous == []
    assert read_resume_file(tmp_path / "run" / "checkpoints" / RESUME_FILE)["step"] == 2
    events = read_all_events(RunFolder.at(tmp_path / "run"))
    warnings = [e["message"] for e in events if e["kind"] == "warning"]
    assert warnings == ["SIGINT during the checkpoint save was ignored; the save finished"]
    assert events[-1]["kind"] == "done" and events[-1]["reason"] == "stopped by SIGINT"


def test_sigterm_stops_within_one_micro_batch_even_with_huge_accumulation(ckpt_workspace, tmp_path):
    """1,024 micro batches (the most validation allows) take about a minute here; the stop must come
    at the next micro batch."""
    sent = []

    def send_sigterm_soon(ctx):
        def send():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Timer(0.5, send).start()

    result = run(ckpt_config(ckpt_workspace, epoch_steps=1, accumulate=1024), tmp_path / "run",
                 hooks=[PeriodicHook(every=1, at_start=True, run=send_sigterm_soon)])
    assert result.reason == "stopped by SIGTERM" and result.step == 0
    assert time.monotonic() - sent[0] < 5
    events = read_all_events(RunFolder.at(tmp_path / "run"))
    assert events[-1]["kind"] == "done" and events[-1]["reason"] == "stopped by SIGTERM"
    assert read_resume_file(tmp_path / "run" / "checkpoints" / RESUME_FILE)["step"] == 0


def test_sighup_is_treated_like_sigterm_checkpoint_and_done(ckpt_workspace, tmp_path):
    run_dir = tmp_path / "run"
    result = run(ckpt_config(ckpt_workspace, epoch_steps=8), run_dir,
                 on_step=lambda step, event: step == 3 and os.kill(os.getpid(), signal.SIGHUP))
    assert result.reason == "stopped by SIGHUP" and result.step == 3
    assert (run_dir / "checkpoints" / "step3-lora.pth").exists()
    assert read_resume_file(run_dir / "checkpoints" / RESUME_FILE)["step"] == 3
    events = read_all_events(RunFolder.at(run_dir))
    assert events[-1]["kind"] == "done" and events[-1]["reason"] == "stopped by SIGHUP"
    assert RunFolder.at(run_dir).read_status()["state"] == "stopped"


# ==============================================================================================
# Points 7 (bounds), 8 (data_type, empty config, merge shapes, the jsonl token cache): settings, data, merges


cfg_CHAT = MATH_CHAT
cfg_SPEC = ModelSpec("x070", 2, 64, 4, 16, 65536, 256, n_params=9_000_000)
cfg_GB = 1024**3


def cfg_write_chat(path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in cfg_CHAT))
    return path


@pytest.fixture(scope="module")
def cfg_workspace(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faults-config")
    model, spec = write_tiny_checkpoint(directory, n_layer=2, n_embd=64, vocab_size=65536, head_size=16)
    return model, cfg_write_chat(directory / "math.jsonl")


def cfg_tiny_run(workspace, tmp_path: Path, steps: int = 2) -> RunConfig:
    model, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model), str(data)
    config.data.ctx_len, config.data.micro_bsz, config.data.loading = 32, 2, "pad"
    config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    config.output.proj_dir = str(tmp_path / "runs")
    return config


# ------------------------------------------------------------------ 7: bounds and memory


def test_micro_bsz_that_cannot_fit_the_cpu_ram_is_refused_with_the_sizes():
    config = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl", data__micro_bsz=4096,
                                  data__ctx_len=4096, hardware__accelerator="cpu", hardware__precision="fp32")
    cpu = MemoryBudget("CPU RAM", None, 16 * cfg_GB)
    problems = validate(config, cfg_SPEC, memory=cpu)
    assert [p.field for p in problems] == ["data.micro_bsz"]
    assert "4,096 × 4,096" in problems[0].message and "on CPU RAM, 16.0 GB free" in problems[0].message
    fitting = int(problems[0].fix.split("lower micro_bsz to ")[1].split(" ")[0])
    config.data.micro_bsz = fitting  # the suggested size does fit, one more does not
    assert validate(config, cfg_SPEC, memory=cpu) == []
    config.data.micro_bsz = fitting + 1
    assert validate(config, cfg_SPEC, memory=cpu) != []


def test_the_gpu_check_uses_free_vram_and_the_ram_offloaded_states_take():
    config = RunConfig.for_method("full", model__path="m.pth", data__path="d.jsonl", data__ctx_len=512,
                                  hardware__strategy="deepspeed_stage_2_offload")
    roomy_gpu = MemoryBudget("GPU 0 (test)", 80 * cfg_GB, 16 * cfg_GB)
    assert validate(config, cfg_SPEC, memory=roomy_gpu) == []
    big = ModelSpec("x070", 32, 4096, 64, 64, 65536, 16384, n_params=7_000_000_000)
    fields = [p.field for p in validate(config, big, memory=MemoryBudget("GPU 0 (test)", 80 * cfg_GB, 16 * cfg_GB))]
    assert fields == ["hardware.strategy"]  # 7B of Adam moments do not fit 16 GB of RAM
    small_gpu = MemoryBudget("GPU 0 (test)", 1 * cfg_GB, 64 * cfg_GB)
    assert [p.field for p in validate(config, cfg_SPEC, memory=small_gpu)] == ["data.micro_bsz"]


@pytest.mark.parametrize("dotted", ["data.micro_bsz", "data.accumulate_grad_batches", "data.ctx_len",
                                    "epochs.epoch_steps", "epochs.epoch_count", "method.lisa_k", "hardware.devices"])
def test_counts_have_upper_bounds_without_any_facts(dotted):
    config = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl")
    section, name = dotted.split(".")
    setattr(getattr(config, section), name, 10**9)
    problems = validate(config)
    assert [p.field for p in problems] == [dotted] and "must be at most" in problems[0].message


def test_a_run_too_big_for_ram_stops_before_the_model_is_built(cfg_workspace, tmp_path, monkeypatch):
    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before validation refused the run")

    monkeypatch.setattr(loop, "build_training", must_not_build)
    config = cfg_tiny_run(cfg_workspace, tmp_path)
    config.data.micro_bsz, config.data.ctx_len = 4096, 1 << 20  # ~10 TB of logits alone
    with pytest.raises(ConfigError, match=r"micro_bsz × ctx_len = 4,096 × 1,048,576 needs about .* on CPU RAM"):
        loop.run(config, tmp_path / "run")


def test_the_trainer_names_an_empty_model_path_not_a_folder(cfg_workspace, tmp_path):
    config = cfg_tiny_run(cfg_workspace, tmp_path)
    config.model.path = ""
    with pytest.raises(ConfigError, match="no base model chosen"):
        loop.run(config, tmp_path / "run")


# ------------------------------------------------------------------ 8: data_type


def test_data_type_jsonl_reads_a_file_without_the_suffix(tmp_path):
    data = cfg_write_chat(tmp_path / "math.txt")
    with pytest.raises(DataError, match="binidx file not found"):
        build_dataset(data, ctx_len=16)  # auto: not .jsonl, so a binidx prefix
    dataset = build_dataset(data, ctx_len=16, data_type="jsonl")
    assert len(dataset) == len(cfg_CHAT)


def test_data_type_binidx_is_honoured_and_contradictions_are_refused(tmp_path):
    from rwkv_tui.trainer.data.prepare import prepare_binidx

    prepare_binidx(cfg_write_chat(tmp_path / "math.jsonl"), tmp_path / "math", workers=1)
    assert len(build_dataset(tmp_path / "math", ctx_len=16, data_type="binidx", loss_mask="none")) == len(cfg_CHAT)
    config = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl", data__data_type="binidx")
    assert [p.field for p in validate(config)] == ["data.data_type"]
    config.data.path, config.data.data_type = "d.bin", "jsonl"
    assert [p.field for p in validate(config)] == ["data.data_type"]


def test_the_trainer_honours_data_type(cfg_workspace, tmp_path):
    config = cfg_tiny_run(cfg_workspace, tmp_path, steps=1)
    config.data.path = str(cfg_write_chat(tmp_path / "math.txt"))
    config.data.data_type = "jsonl"
    result = loop.run(config, tmp_path / "run")
    assert result.reason == "finished" and result.step == 1
    cache = tmp_path / ".token-cache"  # beside the run (in its runs root), not beside the data
    assert len(list(cache.glob(".math_txt-*.bin"))) == 1 and not list(tmp_path.glob(".math_txt-*"))
    assert loop.run(config, tmp_path / "second").reason == "finished"  # the next run there reuses it
    assert len(list(cache.glob(".math_txt-*.bin"))) == 1


def test_a_read_only_data_folder_caches_its_tokens_in_the_runs_root(tmp_path, monkeypatch):
    from rwkv_tui.trainer.data import prepare

    data = cfg_write_chat(tmp_path / "math.jsonl")
    real = prepare.prepare_binidx

    def read_only_beside_the_data(source, prefix, **kwargs):
        if Path(prefix).parent == tmp_path:  # what a read-only folder (or a mount) answers, even to root
            raise PermissionError(errno.EACCES, "Permission denied", str(prefix))
        return real(source, prefix, **kwargs)

    monkeypatch.setattr(prepare, "prepare_binidx", read_only_beside_the_data)
    fallback = tmp_path / "runs" / ".token-cache"
    assert len(build_dataset(data, ctx_len=16, fallback_dir=fallback)) == len(cfg_CHAT)
    assert len(list(fallback.glob("*.bin"))) == 1 and not list(tmp_path.glob(".*.bin"))
    with pytest.raises(DataError, match=f"cannot write the token cache of {data} in {tmp_path}: Permission denied"):
        build_dataset(data, ctx_len=16)  # no fallback: the folder is named


# ------------------------------------------------------------------ 8: empty config


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_an_empty_config_is_named_empty(tmp_path, text):
    path = tmp_path / "empty.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path} is empty"):
        load_config(path)


def test_train_with_an_empty_config_exits_2_with_the_message(tmp_path, capsys):
    from rwkv_tui.cli import main

    path = tmp_path / "empty.toml"
    path.write_text("")
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"config file {path} is empty" in err and "is a directory" not in err
    assert not (tmp_path / "run").exists()


def test_a_folder_given_as_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# ------------------------------------------------------------------ 8: merge shapes


@pytest.fixture
def cfg_two_models(tmp_path):
    """Two RWKV-6 sizes: their states merge into a model file (an RWKV-7 state merge is refused)."""
    small, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=256, head_size=16, name="small.pth",
                                     version="x060")
    wide, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=128, vocab_size=256, head_size=16, name="wide.pth",
                                    version="x060")
    return small, wide


def cfg_state_file(model_path: Path, out: Path) -> Path:
    from rwkv_tui.trainer.model import model_from_state_dict

    state_dict, spec = load_checkpoint(model_path)
    model = model_from_state_dict(state_dict, spec)
    for block in model.blocks:
        block.att.time_state = torch.nn.Parameter(torch.randn(spec.n_head, spec.head_size, spec.head_size))
    return save_state_file(model, out)


def test_merge_refuses_a_state_file_from_a_different_size_model(cfg_two_models, tmp_path):
    small, wide = cfg_two_models
    state = cfg_state_file(wide, tmp_path / "wide-state.pth")
    differs = r"blocks.0.att.time_state is 8 × 16 × 16, the base needs 4 × 16 × 16"
    with pytest.raises(CheckpointError, match=differs):
        merge_files(small, state, tmp_path / "merged.pth")
    assert not (tmp_path / "merged.pth").exists()
    assert merge_files(wide, state, tmp_path / "ok.pth").exists()  # its own base takes it


def test_merge_command_exits_2_and_writes_nothing_for_a_misfit(cfg_two_models, tmp_path, capsys):
    from rwkv_tui.cli import main

    small, wide = cfg_two_models
    state = cfg_state_file(wide, tmp_path / "wide-state.pth")
    assert main(["merge", str(small), str(state), str(tmp_path / "merged.pth")]) == 2
    assert "does not fit the base model" in capsys.readouterr().err
    assert not (tmp_path / "merged.pth").exists()


def test_merge_refuses_a_foreign_lora_and_extra_layers_whose_shapes_differ(cfg_two_models):
    small, _ = cfg_two_models
    base, _ = load_checkpoint(small)
    wrong_in = {"blocks.0.att.key.lora_A": torch.zeros(8, 128), "blocks.0.att.key.lora_B": torch.zeros(64, 8)}
    with pytest.raises(CheckpointError, match=r"lora_A is 8 × 128, which does not fit blocks.0.att.key.weight"):
        merge_into(base, wrong_in, None, alpha=16.0)
    extra_layer = {"blocks.0.att.key.lora_A": torch.zeros(8, 64), "blocks.0.att.key.lora_B": torch.zeros(64, 8),
                   "blocks.5.ln1.weight": torch.ones(64)}
    with pytest.raises(CheckpointError, match="blocks.5.ln1.weight is not a tensor of the base model"):
        merge_into(base, extra_layer, None, alpha=16.0)
    wrong_norm = {"blocks.0.att.key.disha": torch.zeros(16, 64), "blocks.1.ln1.weight": torch.ones(128)}
    with pytest.raises(CheckpointError, match=r"blocks.1.ln1.weight is 128, the base's is 64"):
        merge_into(base, wrong_norm, None)


def test_ensure_valid_lists_bounds_and_memory_together():
    config = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl",
                                  data__accumulate_grad_batches=10**9)
    with pytest.raises(ConfigError, match="data.accumulate_grad_batches: must be at most 1,024"):
        ensure_valid(config, cfg_SPEC, memory=MemoryBudget("CPU RAM", None, 16 * cfg_GB))
