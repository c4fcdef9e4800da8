"""`rwkv-tui train` headless: a preset trains the tiny model; SIGINT stops with a checkpoint; resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_workspace
from rwkv_oracle import run_official
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events

ROOT = Path(__file__).resolve().parent.parent


def workspace(tmp_path):
    return write_tiny_workspace(tmp_path)


def test_preset_trains_headless_and_outputs_load_in_rwkv(tmp_path, capsys):
    from rwkv_tui.cli import main

    model, data = workspace(tmp_path)
    code = main(["train", str(ROOT / "presets" / "demo-cpu.toml"), "--set", f"model.path={model}",
                 "--set", f"data.path={data}", "--set", "epochs.epoch_steps=6", "--run-dir", str(tmp_path / "run"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "finished at step 12" in out
    files = {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert {"epoch1-lora.pth", "epoch2-lora.pth", "final-merged.pth", "resume.ckpt"} <= files
    tokens = [33155, 40213, 11, 261]
    official = run_official([{"path": str(tmp_path / "run" / "checkpoints" / "final-merged.pth"), "tokens": tokens}],
                            tmp_path)
    assert torch.isfinite(official[0]["logits"]).all()


def test_bad_config_exits_2_with_every_problem(tmp_path, capsys):
    from rwkv_tui.cli import main

    model, data = workspace(tmp_path)
    code = main(["train", str(ROOT / "presets" / "demo-cpu.toml"), "--set", f"model.path={model}",
                 "--set", f"data.path={data}", "--set", "optim.lr_init=-1", "--set", "data.micro_bsz=0",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "optim.lr_init" in err and "data.micro_bsz" in err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    model, data = workspace(tmp_path)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "rwkv_tui", "train", str(ROOT / "presets" / "demo-cpu.toml"),
           "--set", f"model.path={model}", "--set", f"data.path={data}", "--set", "epochs.epoch_steps=40",
           "--set", "epochs.epoch_count=1", "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = RunFolder.at(run_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(e["kind"] == "step" for e in read_all_events(folder)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    events = read_all_events(folder)
    done = [e for e in events if e["kind"] == "done"][-1]
    assert done["reason"] == "stopped by SIGINT"
    stopped_at = done["step"]
    assert (run_dir / "checkpoints" / "resume.ckpt").exists()
    assert (run_dir / "checkpoints" / f"step{stopped_at}-lora.pth").exists()
    assert folder.read_status()["state"] == "stopped"

    resume = subprocess.run([sys.executable, "-m", "rwkv_tui", "train", "--resume", str(run_dir), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    steps = [e["step"] for e in read_all_events(folder) if e["kind"] == "step"]
    assert stopped_at < 40 and steps == list(range(1, 41))
