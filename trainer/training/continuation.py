"""Continue a run for N more epochs: a NEW run that starts from the old run's last weights with a
fresh schedule (warm-up and decay again), unlike `train --resume`, which finishes the old schedule
exactly where it stopped.

Where the weights go depends on what the method saves: a whole model (full, LISA) becomes the new
run's `model.path`; an adapter or a state file becomes its `method.init_from`, on the same base
model. The new run goes next to the old one, under the same root.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.errors import ConfigError, RwkvTuiError
from rwkv_tui.trainer.peft.catalog import MERGED_FILE, OutputKind, method_info
from rwkv_tui.trainer.training.folder import RunFolder, new_run_dir, read_all_events


@dataclass(frozen=True)
class Continuation:
    config: object       # the new run's RunConfig
    run_dir: Path        # where the new run goes (not created here)
    weights: Path        # the old run's last output file it starts from
    field: str           # "model.path" or "method.init_from": where `weights` went

    def describe(self) -> str:
        epochs = self.config.epochs.epoch_count
        return (f"a new run from {self.weights.name} (as {self.field}) with a fresh schedule of "
                f"{epochs} epoch{'s' if epochs != 1 else ''}, in {self.run_dir}")


def continue_config(run_dir: str | Path, epochs: int, when: float | None = None) -> Continuation:
    """The config of a new run that trains `epochs` more epochs from the run at `run_dir`'s last
    weights. Raises when the run has no config or no output file yet."""
    from rwkv_tui.trainer.config import load_config

    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"continue needs a whole number of epochs of at least 1, not {epochs!r}",
                          field="epochs.epoch_count", hint="e.g. 1 or 2 more epochs")
    folder = RunFolder.at(run_dir)
    if not folder.config.is_file():
        raise RwkvTuiError("no config.toml in this run folder: nothing to continue", path=folder.path,
                           hint="continue takes a run folder made by `rwkv-tui train` or the wizard")
    old = load_config(folder.config)
    info = method_info(old.method.name)
    weights = last_output(folder, info.output_suffix)
    config = copy.deepcopy(old)
    config.epochs.epoch_count = epochs
    if info.output_kind is OutputKind.MODEL:
        config.model.path, config.method.init_from, field = str(weights), "", "model.path"
    else:
        config.method.init_from, field = str(weights), "method.init_from"
    return Continuation(config, new_run_dir(folder.path.parent, old.method.name, when), weights, field)


def last_output(folder: RunFolder, suffix: str) -> Path:
    """The newest method output file (`*<suffix>`, never the merged model) the run saved and that
    still exists: from its checkpoint events, else the newest such file in checkpoints/."""
    saved = [Path(f) for e in read_all_events(folder) if e.get("kind") == "checkpoint"
             for f in e.get("files", []) if isinstance(f, str)]
    if not saved and folder.checkpoints.is_dir():
        saved = sorted(folder.checkpoints.glob(f"*{suffix}"), key=lambda p: p.stat().st_mtime)
    usable = [p for p in saved if p.name.endswith(suffix) and p.name != MERGED_FILE and p.is_file()]
    if not usable:
        raise RwkvTuiError(f"this run saved no {suffix.removeprefix('-')} file yet: nothing to continue from",
                           path=folder.checkpoints,
                           hint=f"resume it instead with `rwkv-tui train --resume {folder.path}`")
    return usable[-1]
