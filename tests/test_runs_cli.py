"""`rwkv-tui runs` (the run index plus ./runs), `runs --csv RUN` and `attach` with no argument."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from rwkv_tui.cli import main
from rwkv_tui.trainer.training.folder import write_pid_file
from rwkv_tui.trainer.training.run_index import record_run
from test_run_index import made_run


@pytest.fixture
def two_places(tmp_path, monkeypatch):
    """A finished run recorded in the index far away, and a stopped one under ./runs of the cwd."""
    far = made_run(tmp_path / "demo" / "runs" / "lora-1", updated=300.0,
                   events=[("val", {"step": 10, "loss": 1.25, "tokens": 40})])
    record_run(far.path)
    near = made_run(tmp_path / "work" / "runs" / "state-1", method="state", state="stopped", updated=200.0)
    monkeypatch.chdir(tmp_path / "work")
    return far, near


def test_runs_lists_the_index_and_the_local_folder_newest_first(two_places, capsys):
    far, near = two_places
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in listed] == [str(far.path), str(near.path)]
    assert [(r["status"], r["method"], r["val_loss"]) for r in listed] == [("finished", "lora", 1.25),
                                                                            ("stopped", "state", None)]
    assert main(["runs"]) == 0
    table = capsys.readouterr().out
    for word in ("status", "method", "val loss", "finished", "stopped", "1.2500", "RWKV-7"):
        assert word in table


def test_runs_drops_deleted_folders_quietly(two_places, capsys):
    import shutil

    far, near = two_places
    shutil.rmtree(far.path)
    assert main(["runs", "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["path"] for r in json.loads(captured.out)] == [str(near.path)] and captured.err == ""


def test_runs_csv_exports_the_events(two_places, capsys):
    far, _ = two_places
    assert main(["runs", "--csv", str(far.path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows] == ["start", "val"] and rows[1]["loss"] == "1.25"
    assert main(["runs", "--csv", str(far.path.parent)]) == 2  # not a run folder: a one-line error
    assert "no events.jsonl" in capsys.readouterr().err


def test_attach_without_argument_opens_the_newest_live_run_anywhere(two_places, tmp_path, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr("rwkv_tui.app.run_app", lambda attach=None, runs_root=None: opened.append(attach) or 0)
    assert main(["attach"]) == 0  # nothing live: the newest run, and it says so
    assert opened[-1] == two_places[0].path and "no live run" in capsys.readouterr().err
    live = made_run(tmp_path / "elsewhere" / "lora-2", state="running", updated=100.0)  # older, but live
    record_run(live.path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_pid_file(live.pid_file, child.pid, child.args)
        assert main(["attach"]) == 0
        assert opened[-1] == live.path
    finally:
        child.kill()
        child.wait()
