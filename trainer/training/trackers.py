"""Experiment trackers: the run's losses, also sent to TensorBoard, SwanLab, MLflow or wandb.

`output.trackers` names any subset of TRACKERS; wandb is also on when `output.wandb` (its
project) is set, as RWKV-PEFT's --wandb. Each tracker is an optional extra
(`pip install 'rwkv-tui[tensorboard]'`, or `[trackers]` for all), and a missing package is
named with its install line before the run writes anything (`require_tracker_packages`).

Every tracker keeps its files in the run folder, so nothing needs a server or an account:

    tensorboard/   TensorBoard event files        tensorboard --logdir RUN/tensorboard
    swanlog/       SwanLab, local mode            swanlab watch RUN/swanlog (needs swanboard), or
                                                  offline without it: swanlab sync uploads it later
    mlruns/        MLflow file store               mlflow ui --backend-store-uri RUN/mlruns
    wandb/         wandb's files (online, or offline with WANDB_MODE=offline)

Global rank 0 alone opens them (`open_trackers`); the loop sends every step event's numbers and
the validation loss through one `Trackers` fan-out: `log(metrics, step=)` and `close()`.
This module imports no tracker package (nor torch) until a tracker is opened.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from rwkv_tui.trainer.errors import ConfigError

# The project (experiment) the run is filed under where a tracker needs one.
PROJECT = "rwkv-tui"
# Tracker name -> the module that must be importable, and the extra that installs it.
TRACKER_MODULES = {"tensorboard": "tensorboard", "swanlab": "swanlab", "mlflow": "mlflow", "wandb": "wandb"}
# Each tracker's folder inside the run folder (a forced new run clears them with the rest).
TRACKER_FOLDERS = {"tensorboard": "tensorboard", "swanlab": "swanlog", "mlflow": "mlruns", "wandb": "wandb"}


class Tracker(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self, finished: bool) -> None: ...


def tracker_names(config) -> list[str]:
    """The trackers a config turns on, in TRACKERS order: output.trackers, and wandb when
    output.wandb names a project."""
    wanted = set(config.output.trackers) | ({"wandb"} if config.output.wandb else set())
    return [name for name in TRACKER_MODULES if name in wanted]


def install_hint(name: str) -> str:
    return f"pip install 'rwkv-tui[{name}]'"


def missing_tracker_packages(names: list[str]) -> list[str]:
    """The trackers among `names` whose package is not installed (looked up, not imported)."""
    return [name for name in names if not _installed(TRACKER_MODULES[name])]


def _installed(module: str) -> bool:
    # Already imported (or put in place, as tests do): find_spec cannot say more, and raises for
    # a module without a spec.
    return module in sys.modules or importlib.util.find_spec(module) is not None


def require_tracker_packages(config) -> None:
    """A ConfigError naming each chosen tracker that is not installed, and how to install it:
    raised before the run writes anything, rather than a traceback once training has begun."""
    missing = missing_tracker_packages(tracker_names(config))
    if not missing:
        return
    packages = ", ".join(TRACKER_MODULES[name] for name in missing)
    field = "output.wandb" if missing == ["wandb"] and "wandb" not in config.output.trackers else "output.trackers"
    raise ConfigError(f"the {', '.join(missing)} tracker needs {packages}, which is not installed", field=field,
                      hint=" and ".join(install_hint(name) for name in missing) + f", or remove it from {field}")


class Trackers:
    """Fans `log` and `close` out to every open tracker. Closed once, by the loop's clean-up or,
    should the run fail first, at the process's exit (so event files are flushed and MLflow's
    run is marked failed)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = list(trackers)
        self._closed = False
        atexit.register(self._close_at_exit)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def close(self, finished: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        for tracker in self.trackers:
            tracker.close(finished)

    finish = close  # wandb's name for it

    def _close_at_exit(self) -> None:
        self.close(finished=False)


def open_trackers(config, run_dir: Path) -> Trackers | None:
    """The config's trackers writing into `run_dir` (global rank 0 only), or None when it has none."""
    names = tracker_names(config)
    if not names:
        return None
    require_tracker_packages(config)
    from rwkv_tui.trainer.config import config_to_dict

    params = config_to_dict(config)
    openers = {"tensorboard": TensorBoardTracker, "swanlab": SwanLabTracker, "mlflow": MlflowTracker,
               "wandb": WandbTracker}
    opened: list[Tracker] = []
    try:
        for name in names:
            opened.append(openers[name](config, Path(run_dir), params))
    except BaseException:
        for tracker in opened:
            tracker.close(False)
        raise
    return Trackers(opened)


def flat_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{"data.ctx_len": "1024", …}: the nested config as the flat string params trackers show."""
    return {f"{section}.{key}": value if isinstance(value, str) else json.dumps(value)
            for section, values in params.items() for key, value in values.items()}


class TensorBoardTracker:
    """Scalars per step in RUN/tensorboard, and the config as a text entry."""

    def __init__(self, config, run_dir: Path, params: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TRACKER_FOLDERS["tensorboard"]))
        table = "\n".join(f"| {key} | {value} |" for key, value in flat_params(params).items())
        self.writer.add_text("config", "| setting | value |\n|---|---|\n" + table, global_step=0)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self, finished: bool) -> None:
        self.writer.close()


def swanlab_mode() -> str:
    """SwanLab's "local" mode (a dashboard with `swanlab watch`) needs its swanboard package;
    without it "offline" keeps the same records in the run folder for `swanlab sync`."""
    return "local" if importlib.util.find_spec("swanboard") is not None else "offline"


class SwanLabTracker:
    """A SwanLab run kept in RUN/swanlog; the terminal is left alone (the trainer has train.log)."""

    def __init__(self, config, run_dir: Path, params: dict) -> None:
        import swanlab

        settings = swanlab.Settings(terminal={"proxy_type": "none"}, interactive=False)
        self.run = swanlab.init(project=PROJECT, name=run_dir.name, config=params, mode=swanlab_mode(),
                                log_dir=str(run_dir / TRACKER_FOLDERS["swanlab"]), settings=settings)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self, finished: bool) -> None:
        self.run.finish(state="success" if finished else "crashed")


class MlflowTracker:
    """An MLflow run in a file store in RUN/mlruns (experiment "rwkv-tui", run named as the folder),
    the config as params. MLflow 3 keeps file stores behind MLFLOW_ALLOW_FILE_STORE; a run folder
    is the point here (no server), so the trainer's process allows it unless told otherwise."""

    def __init__(self, config, run_dir: Path, params: dict) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=(run_dir / TRACKER_FOLDERS["mlflow"]).resolve().as_uri())
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        # MLflow caps a param's value at 6000 characters (sample prompts may be long).
        self.client.log_batch(self.run_id, params=[Param(key, value[:6000])
                                                   for key, value in flat_params(params).items()])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step)
                                                    for key, value in metrics.items()])

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "FAILED")


class WandbTracker:
    """A Weights & Biases run: project output.wandb (or "rwkv-tui"), files in RUN/wandb."""

    def __init__(self, config, run_dir: Path, params: dict) -> None:
        import wandb

        self.run = wandb.init(project=config.output.wandb or PROJECT, name=run_dir.name, dir=str(run_dir),
                              config=params)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self, finished: bool) -> None:
        if finished:
            self.run.finish()
        else:
            self.run.finish(exit_code=1)
