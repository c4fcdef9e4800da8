"""Start and stop a trainer process that outlives the terminal.

The trainer runs as `python -m rwkv_tui train CONFIG --run-dir DIR --quiet` in a new
session (its own process group, no controlling terminal), with stdin from /dev/null and
its output appended to `RUN_DIR/trainer.out`. Closing the terminal or losing the SSH
connection therefore sends it no SIGHUP; the dashboard finds it again through the run
folder's lock (`trainer.lock`), and until the trainer has taken it, through the `trainer.pid`
written here with the process's start time and command line.

A folder made here holds no run yet (no config.toml or events.jsonl), so the trainer's
`--run-dir` accepts it without `--force`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rwkv_tui.trainer.training.folder import RunFolder, folder_in_use, signal_trainer, write_pid_file


GPU_ENV_FILE = "launch.env"  # the GPUs a run was started on: its resume uses the same ones


def launch_environment(visible_devices: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: this one, limited to the picked GPUs ("1,3"; None: unchanged).
    CUDA numbers GPUs fastest first unless told PCI bus order, which is NVML's (the wizard's
    numbers): without it, "GPU 1" could be another card than the one the fit was checked on."""
    env = dict(os.environ if base is None else base)
    if visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def saved_visible_devices(run_dir: str | Path) -> str | None:
    """CUDA_VISIBLE_DEVICES recorded when the run was started, if it was limited to some GPUs."""
    try:
        lines = (Path(run_dir) / GPU_ENV_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return next((line.split("=", 1)[1] for line in lines if line.startswith("CUDA_VISIBLE_DEVICES=")), None)


def trainer_command(config_path: Path, run_dir: Path, resume: bool = False) -> list[str]:
    if resume:
        return [sys.executable, "-m", "rwkv_tui", "train", "--resume", str(run_dir), "--quiet"]
    return [sys.executable, "-m", "rwkv_tui", "train", str(config_path), "--run-dir", str(run_dir), "--quiet"]


def launch_training(config, run_dir: str | Path, *, resume: bool = False, visible_devices: str | None = None) -> int:
    """Start a detached trainer for `config` (a RunConfig or a .toml path); returns its pid.
    `visible_devices` ("0,2") limits it to those GPUs; a resume reuses the run's own."""
    folder = RunFolder.at(run_dir)
    owner = folder.trainer_pid()
    if owner is not None:  # the trainer would refuse too, but only in trainer.out
        raise folder_in_use(folder, owner)
    folder.create()
    if resume:
        config_path = folder.config
    elif isinstance(config, (str, Path)):
        config_path = Path(config)
    else:
        from rwkv_tui.trainer.config import save_config

        config_path = folder.path / "launch.toml"
        save_config(config, config_path, only_changes=False)
    command = trainer_command(config_path, folder.path, resume)
    if visible_devices is None and resume:
        visible_devices = saved_visible_devices(folder.path)
    elif visible_devices is not None:
        from rwkv_tui.trainer.atomic import atomic_write_text

        atomic_write_text(folder.path / GPU_ENV_FILE, f"CUDA_VISIBLE_DEVICES={visible_devices}\n")
    with open(os.devnull, "rb") as stdin, open(folder.path / "trainer.out", "ab") as out:
        process = subprocess.Popen(command, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, env=launch_environment(visible_devices))
    # The trainer writes its own pid file once it holds the lock; writing it here too (with the
    # process's start time and command line, so a reused pid is never trusted) lets a dashboard
    # opened at once see a live process instead of a "crashed" run.
    write_pid_file(folder.pid_file, process.pid, cmdline=command)
    folder.write_status(state="starting", pid=process.pid)
    return process.pid


def stop_training(run_dir: str | Path) -> bool:
    """Ask the trainer to stop gracefully (it saves a checkpoint). False, and no signal, unless the
    process is the folder's trainer (holds its lock, or matches the recorded start time and command)."""
    return signal_trainer(RunFolder.at(run_dir), signal.SIGINT)
