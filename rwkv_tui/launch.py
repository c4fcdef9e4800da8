"""Start and stop a trainer process that outlives the terminal.

The trainer runs as `python -m rwkv_tui train CONFIG --run-dir DIR --quiet` in a new
session (its own process group, no controlling terminal), with stdin from /dev/null and
its output appended to `RUN_DIR/trainer.out`. Closing the terminal or losing the SSH
connection therefore sends it no SIGHUP; the dashboard finds it again through the run
folder's `trainer.pid`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import RunFolder


def trainer_command(config_path: Path, run_dir: Path, resume: bool = False) -> list[str]:
    if resume:
        return [sys.executable, "-m", "rwkv_tui", "train", "--resume", str(run_dir), "--quiet"]
    return [sys.executable, "-m", "rwkv_tui", "train", str(config_path), "--run-dir", str(run_dir), "--quiet"]


def launch_training(config, run_dir: str | Path, *, resume: bool = False) -> int:
    """Start a detached trainer for `config` (a RunConfig or a .toml path); returns its pid."""
    folder = RunFolder.at(run_dir)
    if not resume and folder.trainer_pid() is not None:
        raise RwkvTuiError("a trainer is already running in this run folder", path=folder.path,
                           hint="attach to it with `rwkv-tui attach`, or choose another run folder")
    folder.create()
    if resume:
        config_path = folder.config
    elif isinstance(config, (str, Path)):
        config_path = Path(config)
    else:
        from rwkv_tui.trainer.config import save_config

        config_path = folder.path / "launch.toml"
        save_config(config, config_path, only_changes=False)
    with open(os.devnull, "rb") as stdin, open(folder.path / "trainer.out", "ab") as out:
        process = subprocess.Popen(
            trainer_command(config_path, folder.path, resume),
            stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    # The trainer writes its own pid file once it starts; writing it here too lets a
    # dashboard opened at once see a live process instead of a "crashed" run.
    folder.pid_file.write_text(str(process.pid))
    folder.write_status(state="starting", pid=process.pid)
    return process.pid


def stop_training(run_dir: str | Path) -> bool:
    """Ask the trainer to stop gracefully (it saves a checkpoint). False if none is running."""
    pid = RunFolder.at(run_dir).trainer_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    return True
