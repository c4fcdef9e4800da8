"""The run index (runs found from any directory), run listing, `continue` configs, the events CSV,
and what the trainer writes for the dashboard: loading events and the final status's loss."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import write_tiny_workspace
from rwkv_tui.trainer.config import RunConfig, load_config, save_config
from rwkv_tui.trainer.errors import ConfigError, RwkvTuiError
from rwkv_tui.trainer.training.continuation import continue_config
from rwkv_tui.trainer.training.events_csv import write_events_csv
from rwkv_tui.trainer.training.folder import EventWriter, RunFolder, read_all_events
from rwkv_tui.trainer.training.listing import list_known_runs, newest_live_run, summarize_run
from rwkv_tui.trainer.training.run_index import forget_run, index_path, indexed_runs, record_run


def made_run(path, *, state="done", method="lora", model="RWKV-7 (L2 C64)", updated=None, events=()):
    """A run folder with a start event, `events` and a status."""
    folder = RunFolder.at(path).create()
    writer = EventWriter(folder)
    writer.emit("start", step=0, total_steps=10, model=model, method=method, device="cpu")
    for kind, fields in events:
        writer.emit(kind, **fields)
    writer.close()
    folder.write_status(state=state, step=10, total_steps=10, loss=1.5)
    if updated is not None:
        status = json.loads(folder.status.read_text())
        status["updated"] = updated
        folder.status.write_text(json.dumps(status))
    return folder


def test_index_records_runs_and_drops_vanished_folders_quietly(tmp_path):
    a, b = (tmp_path / "x" / "a").resolve(), (tmp_path / "y" / "b").resolve()
    a.mkdir(parents=True), b.mkdir(parents=True)
    assert record_run(a, started=1.0) and record_run(b, started=2.0) and record_run(a, started=3.0)
    assert indexed_runs() == [a, b]  # newest start first, each once (a resume records again)
    b.rmdir()
    assert indexed_runs() == [a]
    assert [json.loads(line)["path"] for line in index_path().read_text().splitlines()] == [str(a)]  # compacted
    forget_run(a)
    assert indexed_runs() == []


def test_index_appends_from_several_processes_lose_nothing(tmp_path):
    root = tmp_path / "runs"
    for i in range(100):
        (root / f"run{i}").mkdir(parents=True)
    code = ("import sys\nfrom rwkv_tui.trainer.training.run_index import record_run\n"
            "for i in range(int(sys.argv[1]), int(sys.argv[1]) + 25):\n"
            f"    record_run({str(root)!r} + f'/run{{i}}', started=float(i))\n")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(k * 25)]) for k in range(4)]
    assert [w.wait(60) for w in writers] == [0] * 4
    assert len(indexed_runs()) == 100


def test_index_survives_an_unwritable_state_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RWKV_TUI_STATE_DIR", str(blocker / "state"))
    assert record_run(tmp_path) is False and indexed_runs() == []


def test_known_runs_join_the_index_and_the_root_newest_first(tmp_path, monkeypatch):
    elsewhere = made_run(tmp_path / "far" / "lora-1", updated=300.0,
                         events=[("val", {"step": 10, "loss": 1.75, "tokens": 40}),
                                 ("best", {"step": 10, "loss": 1.75, "file": "best-lora.pth"})])
    record_run(elsewhere.path)
    local = made_run(tmp_path / "here" / "runs" / "state-1", method="state", state="stopped", updated=200.0)
    record_run(local.path)  # in both: listed once
    monkeypatch.chdir(tmp_path / "here")
    runs = list_known_runs("runs")
    assert [r.path for r in runs] == [elsewhere.path, local.path]
    first = runs[0]
    assert (first.status, first.method, first.model, first.val_loss, first.best_step) == \
        ("finished", "lora", "RWKV-7 (L2 C64)", 1.75, 10)
    assert runs[1].status == "stopped" and runs[1].val_loss is None
    assert newest_live_run(runs) is None




def test_status_names(tmp_path):
    for state, status in [("running", "crashed"), ("failed", "crashed"), ("done", "finished"), ("stopped", "stopped")]:
        folder = made_run(tmp_path / state, state=state)
        assert summarize_run(folder).status == status  # "running" with no trainer process: crashed


def test_events_csv_has_one_row_per_event(tmp_path):
    folder = made_run(tmp_path / "run", events=[("step", {"step": 1, "loss": 2.5, "lr": 0.1}),
                                               ("val", {"step": 1, "loss": 2.75, "tokens": 12}),
                                               ("checkpoint", {"step": 1, "files": ["a.pth", "b.pth"]})])
    with folder.events.open("a") as handle:
        handle.write("not json\n")
    out = io.StringIO()
    rows, skipped = write_events_csv(folder, out)
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows == 4 and len(skipped) == 1
    assert list(table[0])[:3] == ["t", "kind", "step"]
    assert [r["kind"] for r in table] == ["start", "step", "val", "checkpoint"]
    assert table[1]["loss"] == "2.5" and table[2]["tokens"] == "12" and table[0]["loss"] == ""
    assert json.loads(table[3]["files"]) == ["a.pth", "b.pth"]


def _ended_run(tmp_path, method: str, files: list[str]) -> RunFolder:
    model, data = write_tiny_workspace(tmp_path)
    config = RunConfig.for_method(method)
    config.model.path, config.data.path = str(model), str(data)
    config.epochs.epoch_count = 3
    folder = made_run(tmp_path / "runs" / f"{method}-20260101-000000", method=method,
                      events=[("checkpoint", {"step": 5, "files": [str(tmp_path / "runs" / f) for f in files]})])
    save_config(config, folder.config, only_changes=False)
    for f in files:
        (tmp_path / "runs" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / f).write_bytes(b"x")
    return folder


@pytest.mark.parametrize("method, field", [("lora", "method.init_from"), ("state", "method.init_from"),
                                           ("full", "model.path")])
def test_continue_starts_a_new_run_from_the_last_output(tmp_path, method, field):
    suffix = {"lora": "-lora.pth", "state": "-state.pth", "full": "-model.pth"}[method]
    folder = _ended_run(tmp_path, method, [f"x/epoch1{suffix}", f"x/epoch2{suffix}", "x/final-merged.pth"])
    plan = continue_config(folder.path, 2, when=0)
    old = load_config(folder.config)
    assert plan.field == field and plan.weights.name == f"epoch2{suffix}"
    assert plan.config.epochs.epoch_count == 2 and old.epochs.epoch_count == 3  # the old run's config is untouched
    if field == "model.path":
        assert plan.config.model.path == str(plan.weights) and plan.config.method.init_from == ""
    else:
        assert plan.config.method.init_from == str(plan.weights) and plan.config.model.path == old.model.path
    assert plan.run_dir.parent == folder.path.parent and plan.run_dir.name.startswith(f"{method}-")
    assert "fresh schedule of 2 epochs" in plan.describe() and field in plan.describe()


def test_continue_refuses_without_outputs_or_with_no_epochs(tmp_path):
    folder = _ended_run(tmp_path, "lora", [])
    with pytest.raises(RwkvTuiError, match="saved no lora.pth file"):
        continue_config(folder.path, 1)
    with pytest.raises(ConfigError, match="at least 1"):
        continue_config(folder.path, 0)


@pytest.mark.slow
def test_a_run_is_indexed_reports_loading_and_ends_with_its_final_loss(tmp_path):
    """A real tiny run: recorded in the index, `loading` events before the first step, the last
    step's loss in the final status.json, and a continued run that trains from its adapter."""
    from rwkv_tui.trainer.training.loop import run

    model, data = write_tiny_workspace(tmp_path)
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model), str(data)
    config.data.ctx_len, config.data.micro_bsz = 32, 2
    config.epochs.epoch_steps, config.epochs.epoch_count = 3, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    run(config, tmp_path / "runs" / "first")
    folder = RunFolder.at(tmp_path / "runs" / "first")
    assert indexed_runs() == [folder.path]
    events = read_all_events(folder)
    kinds = [e["kind"] for e in events]
    assert kinds.index("loading") < kinds.index("step")
    loading = [e for e in events if e["kind"] == "loading"]
    assert {e["stage"] for e in loading} == {"model", "data"}
    assert any(e["message"].startswith("tokenizing data (") and e["done"] == e["total"] for e in loading)
    last = [e for e in events if e["kind"] == "step"][-1]
    status = folder.read_status()
    assert status["state"] == "done" and status["loss"] == last["loss"]
    assert status["smoothed_loss"] == pytest.approx(last["smoothed_loss"])

    plan = continue_config(folder.path, 1)
    result = run(plan.config, plan.run_dir)
    assert result.reason == "finished"
    infos = [e["message"] for e in read_all_events(RunFolder.at(plan.run_dir)) if e["kind"] == "info"]
    assert any(f"started from {plan.weights}" in m for m in infos)
