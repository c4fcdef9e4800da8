"""Experiment trackers (trainer/training/trackers.py): which are on, the missing-package message,
the fan-out, and each tracker's files read back with its own reader (skipped without the package)."""

from __future__ import annotations

import glob
import sys
import types

import pytest

from conftest import write_tiny_workspace
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.training import trackers
from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
from rwkv_tui.trainer.training.loop import run
from rwkv_tui.trainer.training.trackers import (Trackers, open_trackers, require_tracker_packages,
                                                tracker_names)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("trackers"))


def make_config(workspace, steps: int = 3, **output) -> RunConfig:
    model, data = workspace
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model), str(data)
    config.data.ctx_len, config.data.micro_bsz = 32, 2
    config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.grad_cp = "cpu", "fp32", False
    for key, value in output.items():
        setattr(config.output, key, value)
    return config


def test_tracker_names_come_from_trackers_and_the_wandb_project():
    config = RunConfig()
    assert tracker_names(config) == []
    config.output.trackers = ["mlflow", "tensorboard"]
    assert tracker_names(config) == ["tensorboard", "mlflow"]
    config.output.wandb = "my-project"
    assert tracker_names(config) == ["tensorboard", "mlflow", "wandb"]
    config.output.trackers = ["wandb"]
    assert tracker_names(config) == ["wandb"]


def pretend_missing(monkeypatch, *modules: str) -> None:
    real = trackers._installed
    monkeypatch.setattr(trackers, "_installed", lambda module: module not in modules and real(module))


def test_a_missing_package_names_its_extra(monkeypatch):
    pretend_missing(monkeypatch, "mlflow", "swanlab")
    config = RunConfig()
    config.output.trackers = ["tensorboard", "swanlab", "mlflow"]
    with pytest.raises(ConfigError) as exc:
        require_tracker_packages(config)
    assert exc.value.field == "output.trackers"
    assert "swanlab, mlflow tracker" in exc.value.message
    assert "pip install 'rwkv-tui[swanlab]'" in exc.value.hint and "pip install 'rwkv-tui[mlflow]'" in exc.value.hint


def test_a_missing_wandb_for_output_wandb_names_that_field(monkeypatch):
    pretend_missing(monkeypatch, "wandb")
    config = RunConfig()
    config.output.wandb = "proj"
    with pytest.raises(ConfigError) as exc:
        require_tracker_packages(config)
    assert exc.value.field == "output.wandb" and "rwkv-tui[wandb]" in exc.value.hint


def test_a_missing_tracker_stops_the_run_before_it_writes_anything(workspace, tmp_path, monkeypatch):
    pretend_missing(monkeypatch, "mlflow")
    with pytest.raises(ConfigError, match="mlflow"):
        run(make_config(workspace, trackers=["mlflow"]), tmp_path / "run")
    assert not RunFolder.at(tmp_path / "run").exists()
    assert not (tmp_path / "run" / "events.jsonl").exists() and not (tmp_path / "run" / "config.toml").exists()


class FakeTracker:
    def __init__(self) -> None:
        self.calls: list = []

    def log(self, metrics, step):
        self.calls.append((step, dict(metrics)))

    def close(self, finished):
        self.calls.append(("closed", finished))


def test_trackers_fan_out_and_close_once():
    first, second = FakeTracker(), FakeTracker()
    fan = Trackers([first, second])
    fan.log({"loss": 1.5}, step=1)
    fan.log({"val/loss": 2.0}, step=1)
    fan.close(finished=False)
    fan.finish()  # wandb's name; already closed: nothing more
    fan._close_at_exit()
    expected = [(1, {"loss": 1.5}), (1, {"val/loss": 2.0}), ("closed", False)]
    assert first.calls == expected and second.calls == expected


def test_wandb_gets_the_rwkv_tui_project_when_output_wandb_is_empty(tmp_path, monkeypatch):
    inits = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: inits.append(kwargs) or types.SimpleNamespace(log=None, finish=lambda **kw: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(trackers, "missing_tracker_packages", lambda names: [])
    config = RunConfig()
    config.output.trackers = ["wandb"]
    opened = open_trackers(config, tmp_path)
    opened.close()
    assert inits[0]["project"] == "rwkv-tui" and inits[0]["dir"] == str(tmp_path)
    assert inits[0]["config"]["data"]["ctx_len"] == config.data.ctx_len


@pytest.mark.slow
def test_tensorboard_receives_every_step_and_the_validation_loss(workspace, tmp_path):
    """A real run: TensorBoard's own reader finds the step losses of events.jsonl, the val loss
    that validation logs through the same tracker, and the config."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(workspace, steps=4, trackers=["tensorboard"])
    config.data.val_fraction, config.data.val_every = 0.25, 2
    run(config, tmp_path / "run")
    events = read_all_events(RunFolder.at(tmp_path / "run"))
    reader = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    reader.Reload()
    scalars = lambda tag: [(e.step, e.value) for e in reader.Scalars(tag)]  # noqa: E731
    steps = [(e["step"], e["loss"]) for e in events if e["kind"] == "step"]
    assert [s for s, _ in scalars("loss")] == [1, 2, 3, 4]
    assert [v for _, v in scalars("loss")] == pytest.approx([loss for _, loss in steps], rel=1e-6)
    assert {"lr", "tokens_per_s"} <= set(reader.Tags()["scalars"])
    vals = [(e["step"], e["loss"]) for e in events if e["kind"] == "val"]
    assert [s for s, _ in scalars("val/loss")] == [s for s, _ in vals] == [0, 2, 4]
    assert [v for _, v in scalars("val/loss")] == pytest.approx([loss for _, loss in vals], rel=1e-6)
    [text] = reader.Tensors("config/text_summary")
    assert b"| data.ctx_len | 32 |" in text.tensor_proto.string_val[0]


@pytest.mark.slow
def test_mlflow_keeps_a_file_store_in_the_run_folder(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    config = RunConfig()
    config.output.trackers = ["mlflow"]
    config.output.sample_prompts = ["What is 1, then 2?"]
    opened = open_trackers(config, tmp_path)
    opened.log({"loss": 2.5, "lr": 1e-4}, step=1)
    opened.log({"loss": 2.0, "lr": 1e-4}, step=2)
    opened.close(finished=True)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    [found] = client.search_runs([client.get_experiment_by_name("rwkv-tui").experiment_id])
    assert found.info.run_name == tmp_path.name and found.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "loss")] == [(1, 2.5), (2, 2.0)]
    assert found.data.params["data.ctx_len"] == str(config.data.ctx_len)
    assert found.data.params["output.sample_prompts"] == '["What is 1, then 2?"]'


@pytest.mark.slow
def test_swanlab_runs_locally_in_the_run_folder(tmp_path):
    pytest.importorskip("swanlab")
    store = pytest.importorskip("swanlab.sdk.internal.core_python.store")
    record_pb2 = pytest.importorskip("swanlab.proto.swanlab.record.v1.record_pb2")

    config = RunConfig()
    config.output.trackers = ["swanlab"]
    opened = open_trackers(config, tmp_path)
    opened.log({"loss": 2.5}, step=1)
    opened.log({"loss": 2.0, "val/loss": 2.25}, step=2)
    opened.close()
    [path] = glob.glob(str(tmp_path / "swanlog" / "run-*" / "run-*.swanlab"))
    reader = store.DataStoreReader()
    reader.open(path)
    scalars, kinds = [], []
    for data in reader:
        record = record_pb2.Record()
        record.ParseFromString(data)
        kinds.append(record.WhichOneof("record_type"))
        if kinds[-1] == "scalar":
            scalars.append((record.scalar.key, record.scalar.step, record.scalar.value.number))
    reader.close()
    assert scalars == [("loss", 1, 2.5), ("loss", 2, 2.0), ("val/loss", 2, 2.25)]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    [config_file] = glob.glob(str(tmp_path / "swanlog" / "run-*" / "files" / "config.yaml"))
    assert "ctx_len" in open(config_file).read()
