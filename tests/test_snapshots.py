"""SVG snapshots of the screens at 80×24 and 120×40 (regenerate with `pytest --snapshot-update`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rwkv_tui.app import RwkvTuiApp
from test_dashboard import finished_run

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def fixed_run(tmp_path):
    return finished_run(tmp_path / "run")


async def _until(pilot, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen did not get ready in time"
        await pilot.pause(0.05)
    await pilot.pause()


async def _steady_cursors(pilot):
    """A focused text field's cursor blinks: without this, a snapshot depends on the moment it is taken."""
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


async def _open(pilot, screen, ready=lambda: True):
    """Push `screen` and wait until it is shown, its workers are done and `ready()` holds,
    rather than sleeping a fixed time that a slow machine may overrun."""
    pilot.app.push_screen(screen)
    await _until(pilot, lambda: pilot.app.screen is screen and screen.is_mounted)
    # DirectoryTree keeps a "_loader" worker alive for the screen's lifetime: not waited for.
    # (An empty list would mean "wait for every worker".)
    finite = [w for w in pilot.app.workers if w.group != "_loader"]
    if finite:
        await pilot.app.workers.wait_for_complete(finite)
    await _until(pilot, ready)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_snapshot(snap_compare, fixed_run, size):
    app = RwkvTuiApp(attach=fixed_run.path, runs_root=Path("/nonexistent"))

    async def settle(pilot):
        await _until(pilot, lambda: getattr(app.screen, "view", None) is not None and app.screen.view.state == "done")

    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_stopped_with_val_and_samples_snapshot(snap_compare, tmp_path, size):
    """A stopped run: the val curve and legend, the best step, the samples panel, what to do next."""
    from test_dashboard_runs import learning_run

    folder = learning_run(tmp_path / "run", state="stopped")
    app = RwkvTuiApp(attach=folder.path, runs_root=Path("/nonexistent"))

    async def settle(pilot):
        await _until(pilot, lambda: getattr(app.screen, "view", None) is not None
                     and app.screen.view.state == "stopped" and app.screen.view.best is not None)

    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_home_snapshot(snap_compare, size):
    assert snap_compare(RwkvTuiApp(runs_root=Path("/nonexistent")), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_method_screen_snapshot(snap_compare, size):
    from rwkv_tui.screens.wizard import WizardState, screen_for
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(spec=rwkv7_spec(24, 2048))
    state.hardware = HardwareReport([GpuInfo(0, "NVIDIA GeForce RTX 4090", 24 * 1024**3, 23 * 1024**3,
                                             "560.35", "12.6", "8.9")], source="nvml")
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_method(pilot):
        await _open(pilot, screen_for("method", state))

    assert snap_compare(app, terminal_size=size, run_before=open_method)


def _wizard_state():
    from rwkv_tui.screens.wizard import WizardState
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(config=RunConfig.for_method("lora", model__path="/models/rwkv7-1.5b.pth",
                                                    data__path="/data/chat.bin"),
                        spec=rwkv7_spec(24, 2048))
    state.config.data.data_type = "binidx"
    state.hardware = HardwareReport([GpuInfo(0, "NVIDIA GeForce RTX 4090", 24 * 1024**3, 23 * 1024**3,
                                             "560.35", "12.6", "8.9")], source="nvml")
    return state


@pytest.mark.parametrize("step", ["hardware", "params", "review"])
@pytest.mark.parametrize("size", SIZES)
def test_wizard_screen_snapshots(snap_compare, monkeypatch, step, size):
    import rwkv_tui.trainer.hardware as hardware
    from rwkv_tui.screens.wizard import screen_for

    state = _wizard_state()
    monkeypatch.setattr(hardware, "detect_hardware", lambda: state.hardware)
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_step(pilot):
        await _open(pilot, screen_for(step, state))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_step)


@pytest.mark.parametrize("size", SIZES)
def test_presets_screen_snapshot(snap_compare, monkeypatch, tmp_path, size):
    from rwkv_tui.screens.presets import PresetsScreen

    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path))
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_presets(pilot):
        await _open(pilot, PresetsScreen())

    assert snap_compare(app, terminal_size=size, run_before=open_presets)


@pytest.mark.parametrize("size", SIZES)
def test_model_screen_snapshot(snap_compare, monkeypatch, size):
    """The model step browses the working folder: a fixed fixture folder keeps the tree stable."""
    from rwkv_tui.screens.wizard import WizardState, screen_for

    monkeypatch.chdir(Path(__file__).parent / "fixtures")
    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_steps(pilot):
        from textual.widgets import DirectoryTree

        screen = screen_for("model", WizardState())
        await _open(pilot, screen, ready=lambda: bool(screen.query_one(DirectoryTree).root.children))

    assert snap_compare(app, terminal_size=size, run_before=open_steps)


@pytest.mark.parametrize("size", SIZES)
def test_data_screen_snapshot(snap_compare, size):
    from rwkv_tui.screens.wizard import WizardState, screen_for

    app = RwkvTuiApp(runs_root=Path("/nonexistent"))

    async def open_data(pilot):
        await _open(pilot, screen_for("data", WizardState()))
        await _steady_cursors(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_data)


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen_snapshot(snap_compare, tmp_path, monkeypatch, size):
    import json

    from rwkv_tui.screens.runs import RunsScreen

    folder = finished_run(tmp_path / "lora-20261122-120000", steps=12)
    status = json.loads(folder.status.read_text())
    status["updated"] = 1_790_000_000.0  # a fixed time: the list shows it
    folder.status.write_text(json.dumps(status))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)  # the title shows the root: keep it the same on every machine
    app = RwkvTuiApp(runs_root=Path("."))

    async def open_runs(pilot):
        await _open(pilot, RunsScreen(Path(".")))

    assert snap_compare(app, terminal_size=size, run_before=open_runs)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen_snapshot(snap_compare, tmp_path, monkeypatch, size):
    from conftest import write_tiny_checkpoint
    from rwkv_tui.screens.chat import ChatScreen

    write_tiny_checkpoint(tmp_path, vocab_size=65536)
    monkeypatch.chdir(tmp_path)
    app = RwkvTuiApp(runs_root=Path("."))

    async def open_chat(pilot):
        chat = ChatScreen("tiny.pth")
        await _open(pilot, chat, ready=lambda: getattr(chat, "model", None) is not None)

    assert snap_compare(app, terminal_size=size, run_before=open_chat)
