"""SVG snapshots of the wizard states issue 17 added, at 80×24 and 120×40: several GPUs picked, the
data step with its proposals, a parameter outlined with its message, Review on several nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MATH_CHAT
from test_snapshots import SIZES, _open, _steady_cursors, _until

from rwkv_tui.app import RwkvTuiApp

GB = 1024**3


def _gpus():
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport

    return HardwareReport([GpuInfo(0, "NVIDIA A100 80GB", 80 * GB, 70 * GB, "560.35", "12.6", "8.0"),
                           GpuInfo(1, "NVIDIA A100 80GB", 80 * GB, 60 * GB, "560.35", "12.6", "8.0"),
                           GpuInfo(2, "NVIDIA A100 40GB", 40 * GB, 30 * GB, "560.35", "12.6", "8.0")],
                          cpu_count=16, source="nvml")


def _state(**config):
    from rwkv_tui.screens.wizard import WizardState
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(config=RunConfig.for_method("lora", model__path="/models/rwkv7-1.5b.pth", **config),
                        spec=rwkv7_spec(24, 2048))
    state.hardware = _gpus()
    state.gpu_indices = [1, 2]
    state.config.hardware.accelerator, state.config.hardware.devices = "gpu", 2
    state.config.hardware.strategy = "deepspeed_stage_1"
    return state


@pytest.mark.parametrize("size", SIZES)
def test_hardware_two_gpus_picked_snapshot(snap_compare, monkeypatch, size):
    import rwkv_tui.trainer.hardware as hardware
    from rwkv_tui.screens.wizard import screen_for

    state = _state(data__path="/data/chat.jsonl")
    monkeypatch.setattr(hardware, "detect_hardware", _gpus)
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_step(pilot):
        await _open(pilot, screen_for("hardware", state))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_step)


@pytest.mark.parametrize("size", SIZES)
def test_data_step_with_proposals_snapshot(snap_compare, tmp_path, monkeypatch, size):
    """A checked file: its summary and the settings proposed from it, each with its reason."""
    from rwkv_tui.screens.wizard import screen_for

    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in MATH_CHAT))
    monkeypatch.chdir(tmp_path)  # a relative path: the screen shows the same on every machine
    state = _state(data__path="chat.jsonl")
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_step(pilot):
        screen = screen_for("data", state)
        await _open(pilot, screen, ready=lambda: bool(state.proposals))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_step)


@pytest.mark.parametrize("size", SIZES)
def test_params_bad_field_snapshot(snap_compare, size):
    from rwkv_tui.screens.wizard import screen_for

    state = _state(data__path="/data/chat.bin")
    state.config.data.data_type = "binidx"
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_step(pilot):
        screen = screen_for("params", state)
        await _open(pilot, screen)
        screen.query_one("#f-method-alpha").value = "lots"
        await _until(pilot, lambda: bool(screen.query("#f-method-alpha.invalid")))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_step)


@pytest.mark.parametrize("size", SIZES)
def test_review_two_nodes_snapshot(snap_compare, size):
    from rwkv_tui.screens.wizard import screen_for

    state = _state(data__path="/data/chat.bin")
    state.config.data.data_type = "binidx"
    state.config.hardware.num_nodes = 2
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_step(pilot):
        screen = screen_for("review", state)
        await _open(pilot, screen, ready=lambda: "no estimate" in str(screen.query_one("#review-time").render()))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_step)
