"""The dashboard follows a run folder: finished, live and crashed runs, Stop and Detach."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from conftest import wait_for

from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.run_view import RunView, format_duration
from rwkv_tui.screens.dashboard import DashboardScreen
from rwkv_tui.widgets.loss_chart import plot_braille
from rwkv_tui.trainer.training.folder import EventWriter, RunFolder, write_pid_file

T0 = 1_700_000_000.0


def write_events(folder: RunFolder, events: list[dict]) -> None:
    with folder.events.open("a") as handle:
        for e in events:
            handle.write(json.dumps(e) + "\n")


def finished_run(path, steps=30) -> RunFolder:
    folder = RunFolder.at(path).create()
    events = [{"t": T0, "kind": "start", "step": 0, "total_steps": steps, "epoch_steps": 10,
               "model": "RWKV-7 1.2M (L2 C64)", "method": "lora", "device": "cpu"}]
    for s in range(1, steps + 1):
        loss = 5.0 / (1 + 0.2 * s)
        events.append({"t": T0 + s, "kind": "step", "step": s, "epoch": (s - 1) // 10, "loss": loss,
                       "smoothed_loss": loss * 1.05, "lr": 1e-3, "tokens_per_s": 1000.0, "eta_s": steps - s,
                       "total_steps": steps, "ram_peak_gb": 0.5 + s / 100})
        if s % 10 == 0:
            events.append({"t": T0 + s, "kind": "checkpoint", "step": s, "epoch": s // 10,
                           "files": [f"/x/epoch{s // 10}-lora.pth"]})
    events.append({"t": T0 + steps, "kind": "done", "reason": "finished", "step": steps})
    write_events(folder, events)
    folder.write_status(state="done", step=steps)
    return folder


def test_run_view_folds_events():
    view = RunView()
    view.apply({"kind": "start", "total_steps": 4, "step": 0, "model": "m", "method": "lora", "device": "cpu"})
    view.apply({"kind": "step", "step": 1, "loss": 2.0, "smoothed_loss": 2.0, "lr": 0.1, "vram_gb": 3.0,
                "vram_total_gb": 80.0})
    view.apply({"kind": "warning", "message": "slow"})
    view.apply({"kind": "done", "reason": "stopped by SIGINT", "step": 1})
    assert view.state == "stopped" and view.loss == [2.0] and view.memory_history == [3.0]
    assert view.problems == 1 and view.progress == 0.25 and view.memory_total_gb == 80.0
    view.apply({"kind": "step", "step": 2, "loss": 1.0, "vram_gb": 3.0, "vram_total_gb": 80.0,
                "gpus": [{"index": 0, "used_gb": 3.5, "total_gb": 80.0}, {"index": 1, "used_gb": 3.4, "total_gb": 80.0}]})
    assert [g["index"] for g in view.gpus] == [0, 1]
    assert format_duration(3725) == "1h02m" and format_duration(None) == "–"


def test_braille_plot_marks_extremes():
    cells, low, high = plot_braille([[3.0, 1.0]], width=4, height=2)
    assert (low, high) == (1.0, 3.0)
    assert cells[0][0] >> 8 and cells[-1][-1] >> 8  # top-left and bottom-right dots drawn
    assert plot_braille([[]], 4, 2)[0] == [[0] * 4] * 2


@pytest.mark.asyncio
async def test_finished_run_shows_full_history(tmp_path):
    folder = finished_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        await wait_for(pilot, lambda: screen.view.state == "done")
        assert len(screen.view.loss) == 30 and len(screen.view.checkpoints) == 3
        assert screen.view.memory_label == "RAM peak"


@contextlib.contextmanager
def live_run(path, **start):
    """A run folder whose trainer is a live stand-in process: (folder, event writer, process)."""
    folder = RunFolder.at(path).create()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_pid_file(folder.pid_file, child.pid, child.args)  # the command run, as the launcher records it
        folder.write_status(state="running")
        writer = EventWriter(folder)
        writer.emit("start", step=0, epoch_steps=start["total_steps"], device="cpu", **start)
        yield folder, writer, child
        writer.close()
    finally:
        child.kill()


@pytest.mark.asyncio
async def test_live_run_updates_and_crash_is_detected(tmp_path):
    with live_run(tmp_path / "live", total_steps=10, model="m", method="state") as (folder, writer, child):
        app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen.view.state == "running")
            writer.emit("step", step=1, loss=3.0, smoothed_loss=3.0, lr=1.0, total_steps=10)
            writer.emit("step", step=2, loss=2.0, smoothed_loss=2.5, lr=1.0, total_steps=10)
            await wait_for(pilot, lambda: screen.view.step == 2)
            child.kill()
            child.wait()
            await wait_for(pilot, lambda: screen.view.state == "crashed")
            assert any("gone" in line for _, line in screen.view.log)


@pytest.mark.asyncio
async def test_stop_sends_sigint_after_confirmation(tmp_path):
    marker = tmp_path / "got-sigint"
    code = ("import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGINT, lambda *a: (pathlib.Path({str(marker)!r}).write_text('x'), sys.exit(0)))\n"
            "print('ready', flush=True)\ntime.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        folder = finished_run(tmp_path / "run", steps=3)
        write_pid_file(folder.pid_file, child.pid, child.args)  # the command run, as the launcher records it
        app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("s")
            await pilot.pause()
            assert not marker.exists()  # the first press only asks for confirmation
            await pilot.press("s")
            child.wait(timeout=10)
        assert marker.exists()
    finally:
        child.kill()


@pytest.mark.asyncio
async def test_detach_leaves_the_trainer_alone(tmp_path):
    folder = finished_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, DashboardScreen)


def test_opening_the_app_does_not_import_torch():
    code = ("import sys, asyncio\n"
            "from rwkv_tui.app import RwkvTuiApp\n"
            "async def main():\n"
            "    app = RwkvTuiApp(runs_root='/nonexistent')\n"
            "    async with app.run_test(size=(80, 24)) as pilot:\n"
            "        await pilot.pause()\n"
            "asyncio.run(main())\n"
            "heavy = [m for m in ('torch', 'lightning', 'numpy') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_trainer_and_kernels_never_import_textual():
    code = ("import sys, rwkv_tui.trainer, rwkv_tui.trainer.training.loop, rwkv_tui.trainer.model\n"
            "import rwkv_tui.trainer.checkpoint, rwkv_tui.kernels\n"
            "app = ('rwkv_tui.app', 'rwkv_tui.cli', 'rwkv_tui.screens', 'rwkv_tui.widgets', 'rwkv_tui.commands')\n"
            "print('textual' in sys.modules or any(m in sys.modules for m in app))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


