"""The dashboard's issue-16/17 parts (val curve with a step axis and legend, best step, samples,
loading messages, elapsed time, memory history, the done panel) and what can be done with a run
from the dashboard and the Runs screen (resume, continue, chat, export, delete), keys by state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import wait_for
from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.run_view import RunView, downsample
from rwkv_tui.screens import run_actions
from rwkv_tui.screens.dashboard import DashboardScreen
from rwkv_tui.screens.runs import RunsScreen
from rwkv_tui.trainer.config import RunConfig, save_config
from rwkv_tui.trainer.training.folder import RunFolder
from rwkv_tui.trainer.training.run_index import indexed_runs, record_run
from rwkv_tui.widgets.loss_chart import legend, render_chart
from test_dashboard import T0, finished_run, live_run, write_events


def learning_run(path, steps=30, state="done") -> RunFolder:
    """`finished_run` with a val curve, a best checkpoint and samples at step 0 and 20, a config.toml
    and an adapter file that exists (so Continue has something to start from)."""
    folder = finished_run(path, steps=steps)
    adapter = folder.checkpoints / "epoch3-lora.pth"
    adapter.write_bytes(b"adapter")
    extra = [{"t": T0 + s, "kind": "val", "step": s, "loss": 4.0 / (1 + 0.1 * s), "tokens": 64} for s in (0, 10, 20, 30)]
    extra += [{"t": T0 + 20, "kind": "best", "step": 20, "loss": 1.333, "file": str(folder.checkpoints / "best-lora.pth")},
              {"t": T0, "kind": "sample", "step": 0, "prompt": "User: What is 2 plus 3?", "text": "zq zq zq"},
              {"t": T0 + 20, "kind": "sample", "step": 20, "prompt": "User: What is 2 plus 3?", "text": "5."},
              {"t": T0 + steps, "kind": "checkpoint", "step": steps, "files": [str(adapter)]}]
    write_events(folder, extra)
    config = RunConfig.for_method("lora")
    config.model.path = "/models/base.pth"
    config.epochs.epoch_count = 3
    save_config(config, folder.config, only_changes=False)
    if state != "done":
        write_events(folder, [{"t": T0 + steps + 1, "kind": "done", "reason": "stopped by SIGINT", "step": steps}])
        folder.write_status(state="stopped", step=steps)
    return folder


def keys(screen) -> dict[str, str]:
    """Footer key -> the action it runs now."""
    return {key: active.binding.action for key, active in screen.active_bindings.items()}


# --- the view, the chart -----------------------------------------------------------------------------


def test_view_folds_val_best_samples_loading_and_elapsed():
    view = RunView()
    view.apply({"t": 100.0, "kind": "start", "step": 0, "total_steps": 10})
    view.apply({"t": 101.0, "kind": "loading", "stage": "data", "message": "tokenizing data (0/1 files)",
                "done": 0, "total": 1})
    assert view.loading == "tokenizing data (0/1 files)"
    view.apply({"t": 102.0, "kind": "sample", "step": 0, "prompt": "p", "text": "noise"})
    for s in (1, 2, 3):
        view.apply({"t": 102.0 + s, "kind": "step", "step": s, "loss": 3.0 - s / 2})
    view.apply({"t": 105.0, "kind": "val", "step": 3, "loss": 2.25, "tokens": 9})
    view.apply({"t": 105.0, "kind": "best", "step": 3, "loss": 2.25, "file": "/r/best-lora.pth"})
    view.apply({"t": 105.0, "kind": "sample", "step": 3, "prompt": "p", "text": "answer"})
    view.apply({"t": 106.0, "kind": "done", "reason": "stopped by SIGINT", "step": 3})
    assert view.loading is None and view.steps == [1, 2, 3] and view.val == [(3, 2.25)]
    assert view.best == (3, 2.25, "/r/best-lora.pth")
    assert view.samples["p"] == {"first": (0, "noise"), "latest": (3, "answer")}
    assert view.elapsed_s == 6.0
    # A day later the run is resumed from its step-2 checkpoint: the gap does not count, and the
    # replayed step 3 replaces the old one instead of drawing the curve backwards.
    view.apply({"t": 90_000.0, "kind": "start", "step": 2, "total_steps": 10, "resumed": True})
    view.apply({"t": 90_004.0, "kind": "step", "step": 3, "loss": 1.0})
    assert view.steps == [1, 2, 3] and view.loss[-1] == 1.0 and view.elapsed_s == 10.0
    view.apply({"kind": "val", "step": "x", "loss": 1.0})  # malformed: skipped and said, never raised
    assert view.val == [(3, 2.25)] and view.problems == 1


def test_memory_history_keeps_the_whole_run():
    history = [float(i) for i in range(100)]
    squeezed = downsample(history, 10)
    assert len(squeezed) == 10 and squeezed[0] == 9.0 and squeezed[-1] == 99.0
    assert downsample([1.0, 2.0], 10) == [1.0, 2.0]


def test_chart_has_a_step_axis_and_the_val_curve():
    train = [(float(s), 5.0 / s) for s in range(10, 41)]
    val = [(10.0, 0.4), (40.0, 0.1)]
    text = render_chart([train, val], ["grey50", "bold magenta"], width=48, height=8)
    lines = text.plain.splitlines()
    assert len(lines) == 8 and lines[-1].lstrip().startswith("step")
    axis = lines[-1]
    assert "10" in axis and axis.rstrip().endswith("40") and "25" in axis
    assert any(span.style == "bold magenta" for span in text.spans)
    assert "val" in legend(with_val=True) and "val" not in legend(with_val=False)


# --- the dashboard -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_done_dashboard_shows_val_best_samples_and_what_next(tmp_path):
    folder = learning_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view.state == "done" and screen.view.best is not None)
        await pilot.pause()
        stats = str(screen.query_one("#stats").render())
        assert "best" in stats and "at step 20" in stats and "elapsed" in stats and "0m30s" in stats
        assert str(screen.query_one("#next-steps").render()) == "c chat · e export · r continue · q quit"
        samples = str(screen.query_one("#samples").render())
        assert "step 0: zq zq zq" in samples and "step 20: 5." in samples
        assert "val" in str(screen.query_one("#loss-chart").border_title)
        assert len(screen.query_one("#memory-history").data) > 1
        footer = keys(screen)
        assert footer["r"] == "continue" and {"c", "e", "x"} <= footer.keys() and "s" not in footer


@pytest.mark.asyncio
async def test_live_dashboard_shows_loading_then_only_stop(tmp_path):
    with live_run(tmp_path / "live", total_steps=4, model="m", method="lora") as (folder, writer, _):
        writer.emit("loading", stage="model", message="loading model…", done=0, total=1)
        app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen.view.loading == "loading model…")
            await pilot.pause()
            assert "loading model…" in str(screen.query_one("#loss-chart").render())
            writer.emit("loading", stage="data", message="tokenizing data (0/1 files)", done=0, total=1)
            await wait_for(pilot, lambda: "tokenizing" in str(screen.query_one("#loss-chart").render()))
            assert set(keys(screen)) & {"r", "n", "e", "x", "c"} == set() and "s" in keys(screen)
            assert not screen.query_one("#next-steps").display


@pytest.mark.asyncio
async def test_stopped_run_resumes_from_the_dashboard(tmp_path, monkeypatch):
    folder = learning_run(tmp_path / "run", state="stopped")
    launched = []
    monkeypatch.setattr("rwkv_tui.launch.launch_training",
                        lambda config, run_dir, resume=False: launched.append((config, Path(run_dir), resume)) or 1)
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view.state == "stopped")
        await pilot.pause()
        assert keys(screen)["r"] == "resume" and keys(screen)["n"] == "continue_after_stop"
        assert "r resume · n continue" in str(screen.query_one("#next-steps").render())
        await pilot.press("r")
        await wait_for(pilot, lambda: launched)
        assert launched == [(None, folder.path, True)] and screen.view.state == "starting"


@pytest.mark.asyncio
async def test_continue_launches_a_new_run_from_the_last_adapter(tmp_path, monkeypatch):
    folder = learning_run(tmp_path / "run")
    launched = []
    monkeypatch.setattr("rwkv_tui.launch.launch_training",
                        lambda config, run_dir, resume=False: launched.append((config, Path(run_dir))) or 1)
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view.state == "done")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, run_actions.ContinueDialog))
        dialog = app.screen
        assert dialog.query_one("#continue-epochs").value == "3"
        what = str(dialog.query_one("#continue-what").render())
        assert "epoch3-lora.pth" in what and "method.init_from" in what and "fresh schedule" in what
        dialog.query_one("#continue-epochs").value = "2"
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: launched)
        config, run_dir = launched[0]
        assert config.method.init_from.endswith("epoch3-lora.pth") and config.epochs.epoch_count == 2
        assert run_dir.parent == folder.path.parent
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.folder.path == run_dir)


@pytest.mark.asyncio
async def test_delete_asks_first_then_removes_the_folder_and_its_index_line(tmp_path):
    folder = learning_run(tmp_path / "run")
    record_run(folder.path)
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view.state == "done")
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, run_actions.ConfirmDelete))
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is screen)
        assert folder.path.exists()
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, run_actions.ConfirmDelete))
        await pilot.press("y")
        await wait_for(pilot, lambda: not folder.path.exists() and app.screen is not screen)
    assert indexed_runs() == []


# --- the Runs screen ---------------------------------------------------------------------------------


@pytest.mark.slow  # about 5 s on a loaded 2-core machine
@pytest.mark.asyncio
async def test_runs_screen_lists_runs_from_anywhere_with_keys_for_each_state(tmp_path, monkeypatch):
    done = learning_run(tmp_path / "far" / "lora-done")
    stopped = learning_run(tmp_path / "far" / "lora-stopped", state="stopped")
    for folder, updated in ((done, 200.0), (stopped, 100.0)):
        record_run(folder.path)
        status = json.loads(folder.status.read_text())
        status["updated"] = updated
        folder.status.write_text(json.dumps(status))
    monkeypatch.chdir(tmp_path)
    launched = []
    monkeypatch.setattr("rwkv_tui.launch.launch_training",
                        lambda config, run_dir, resume=False: launched.append((Path(run_dir), resume)) or 1)
    app = RwkvTuiApp(runs_root=tmp_path / "nothing-here")
    async with app.run_test(size=(120, 40)) as pilot:
        runs = RunsScreen(tmp_path / "nothing-here")
        app.push_screen(runs)
        await wait_for(pilot, lambda: runs.is_mounted)
        table = runs.query_one("#runs-table")
        await wait_for(pilot, lambda: table.row_count == 2)
        assert [table.get_row_at(i)[1] for i in range(2)] == ["finished", "stopped"]
        assert table.get_row_at(1)[2] == "lora"
        await pilot.pause()
        assert keys(runs)["r"] == "continue" and "n" not in keys(runs)
        table.move_cursor(row=1)
        await pilot.pause()
        assert keys(runs)["r"] == "resume" and keys(runs)["n"] == "continue_after_stop"
        await pilot.press("r")
        await wait_for(pilot, lambda: launched and isinstance(app.screen, DashboardScreen))
        assert launched == [(stopped.path, True)] and app.screen.folder.path == stopped.path
        app.pop_screen()
        await wait_for(pilot, lambda: app.screen is runs)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, run_actions.ConfirmDelete))
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 1 and not stopped.path.exists())
