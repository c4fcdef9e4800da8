"""The run folder is the trainer/UI interface: events stream line by line and survive partial writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rwkv_tui.trainer.training.folder import (
    DEFAULT_RUNS_ROOT,
    EventReader,
    EventWriter,
    RunFolder,
    RunLock,
    config_run_dir,
    new_run_dir,
    read_all_events,
    write_pid_file,
)
from rwkv_tui.trainer.training.schedule import learning_rate


def test_events_are_appended_and_tailed(tmp_path):
    folder = RunFolder.at(tmp_path / "run").create()
    writer = EventWriter(folder)
    reader = EventReader(folder)
    assert reader.read_new() == []
    writer.emit("start", total_steps=10)
    writer.emit("step", step=1, loss=2.5)
    first = reader.read_new()
    assert [e["kind"] for e in first] == ["start", "step"] and first[1]["loss"] == 2.5
    writer.emit("done", reason="finished")
    assert [e["kind"] for e in reader.read_new()] == ["done"]
    writer.close()
    assert len(read_all_events(folder)) == 3
    assert "[done] reason=finished" in folder.log.read_text()


def test_reader_waits_for_a_partial_line_and_survives_garbage(tmp_path):
    folder = RunFolder.at(tmp_path).create()
    with folder.events.open("w") as handle:
        handle.write(json.dumps({"kind": "step", "step": 1}) + "\nnot json\n{\"kind\": \"st")
    reader = EventReader(folder)
    events = reader.read_new()
    assert events[0]["step"] == 1 and events[1]["kind"] == "warning"
    with folder.events.open("a") as handle:
        handle.write('ep", "step": 2}\n')
    assert reader.read_new() == [{"kind": "step", "step": 2}]


def test_unknown_event_kind_is_a_bug(tmp_path):
    writer = EventWriter(RunFolder.at(tmp_path).create())
    with pytest.raises(ValueError):
        writer.emit("progress")


def test_status_is_merged_and_pid_liveness(tmp_path):
    import os

    folder = RunFolder.at(tmp_path).create()
    folder.write_status(state="running", step=3)
    folder.write_status(step=4)
    assert folder.read_status()["state"] == "running" and folder.read_status()["step"] == 4
    folder.pid_file.write_text(str(os.getpid()))
    assert folder.trainer_pid() is None  # a bare pid may belong to anyone by now: not trusted
    write_pid_file(folder.pid_file, os.getpid())  # with this process's start time and command line
    assert folder.trainer_pid() == os.getpid()
    write_pid_file(folder.pid_file, os.getpid(), cmdline=["python", "someone-else"])
    assert folder.trainer_pid() is None  # same pid, another command: a reused pid
    folder.pid_file.write_text("999999999")
    assert folder.trainer_pid() is None
    lock = RunLock.acquire(folder)  # the lock's holder is trusted whatever trainer.pid says
    assert folder.trainer_pid() == os.getpid()
    lock.release()
    assert folder.trainer_pid() is None


def test_run_folders_are_named_prefix_and_local_start_time(tmp_path):
    import time

    when = time.mktime((2024, 3, 5, 14, 7, 9, 0, 0, -1))
    assert new_run_dir(tmp_path, "demo", when) == tmp_path / "demo-20240305-140709"
    assert new_run_dir("~/x", "lora", when) == Path.home() / "x" / "lora-20240305-140709"
    from rwkv_tui.trainer.config import RunConfig

    state = RunConfig.for_method("state", output__proj_dir=str(tmp_path))
    assert config_run_dir(state, when) == tmp_path / "state-20240305-140709"
    assert config_run_dir(RunConfig(), when) == Path(DEFAULT_RUNS_ROOT) / "lora-20240305-140709"


def test_one_default_runs_root_everywhere():
    import inspect

    from rwkv_tui.app import RwkvTuiApp, run_app
    from rwkv_tui.cli import build_parser
    from rwkv_tui.screens.home import HomeScreen
    from rwkv_tui.screens.runs import RunsScreen
    from rwkv_tui.trainer.config import RunConfig

    assert RunConfig().output.proj_dir == DEFAULT_RUNS_ROOT != ""
    parser = build_parser()
    assert parser.parse_args(["runs"]).root == parser.parse_args(["attach"]).root == DEFAULT_RUNS_ROOT
    for function, name in [(RwkvTuiApp.__init__, "runs_root"), (run_app, "runs_root"),
                           (HomeScreen.__init__, "runs_root"), (RunsScreen.__init__, "root")]:
        assert inspect.signature(function).parameters[name].default == DEFAULT_RUNS_ROOT, function


def test_the_demo_keeps_its_runs_under_its_folder(tmp_path):
    from rwkv_tui.trainer.config import load_config
    from rwkv_tui.trainer.demo import create_demo

    workspace = create_demo(tmp_path / "demo")
    assert workspace.runs == tmp_path / "demo" / DEFAULT_RUNS_ROOT
    assert load_config(workspace.config).output.proj_dir == str(workspace.runs)


def test_schedules():
    kw = dict(total_steps=100, lr_init=1.0, lr_final=0.01, warmup_steps=10)
    assert learning_rate(0, **kw) == pytest.approx(0.01)
    assert learning_rate(5, **kw) == pytest.approx(0.01 + 0.99 * 0.5)
    assert learning_rate(10, **kw) == pytest.approx(1.0)
    assert learning_rate(100, **kw) == pytest.approx(0.01)
    mid = learning_rate(55, **kw)
    assert 0.4 < mid < 0.6
    # wsd holds the peak until the last 10% of the run, then decays to lr_final.
    assert learning_rate(80, schedule="wsd", **kw) == pytest.approx(1.0)
    assert learning_rate(100, schedule="wsd", **kw) == pytest.approx(0.01)
    assert learning_rate(95, schedule="wsd", **kw) < 0.9
    # constant when lr_init == lr_final, as the seeds recommend for LoRA
    assert learning_rate(37, total_steps=100, lr_init=2e-5, lr_final=2e-5) == pytest.approx(2e-5)
    with pytest.raises(ValueError):
        learning_rate(1, 10, 1.0, 1.0, schedule="linear")


def test_every_throttles(monkeypatch):
    import rwkv_tui.trainer.training.metrics as metrics

    clock = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    every = metrics.Every(seconds=1.0)
    assert every.ready() and not every.ready()
    clock[0] += 1.0
    assert every.ready()
