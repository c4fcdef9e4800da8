"""`rwkv-tui train PRESET.toml`: a run without the UI, with a progress bar and the same run folder."""

from __future__ import annotations

from pathlib import Path

EXIT_TRAINING_FAILED = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train headless from a preset/config TOML (same run folder as the wizard)",
        description="Run a fine-tune without the UI. Progress goes to the terminal and to the run folder "
                    "(events.jsonl, train.log, status.json, checkpoints/), which `rwkv-tui attach` can follow.",
    )
    parser.add_argument("config", nargs="?", help="a preset name or config .toml (optional with --set or --resume)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set optim.lr_init=1e-4 (repeatable)")
    parser.add_argument("--run-dir", help="the run folder (default: <output.proj_dir>/<method>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a stopped run from its last checkpoint (--set may change only "
                             "epochs.epoch_count and epochs.epoch_save)")
    parser.add_argument("--force", action="store_true",
                        help="replace the run already in --run-dir (its events, config and checkpoints are deleted)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.errors import ConfigError
    from rwkv_tui.trainer.training.folder import config_run_dir
    from rwkv_tui.trainer.training.loop import TrainingError, run as run_training
    from rwkv_tui.trainer.training.setup import launch_rank_is_zero

    if args.resume:
        if args.force:
            raise ConfigError("--force replaces a run, --resume continues it: give one of them",
                              hint=f"continue with `rwkv-tui train --resume {args.resume}`")
        config, run_dir = None, Path(args.resume)
    else:
        if not args.config and not args.overrides:
            raise ConfigError("give a config/preset .toml (or --set settings), or --resume RUN_DIR",
                              hint="presets: `rwkv-tui presets list`; or build one in the wizard (`rwkv-tui`)")
        config = _load(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else config_run_dir(config)

    # Fabric's launcher starts the other GPUs' processes with this same command: they train,
    # but only rank 0 draws progress and prints the result.
    talks = launch_rank_is_zero()
    with _Progress(enabled=talks and not args.quiet) as progress:
        try:
            result = run_training(config, run_dir, resume=bool(args.resume), force=args.force,
                                  changes=args.overrides if args.resume else (), on_step=progress.update)
        except TrainingError as exc:
            progress.stop()
            if talks:
                _tell(f"error: {exc}", f"run folder: {run_dir}")
            return EXIT_TRAINING_FAILED
    if talks:
        _tell(f"{result.reason} at step {result.step}; run folder: {result.run_dir}",
              *(f"  wrote {path}" for path in result.outputs))
    return 0


def _tell(*lines: str) -> None:
    """Print the outcome, unless the terminal is gone (SIGHUP after SSH dropped: writing
    raises EIO); the run folder already holds the same facts."""
    try:
        print("\n".join(lines), flush=True)
    except OSError:
        pass


def _load(path: str | None, overrides: list[str]):
    from rwkv_tui.trainer.config import RunConfig, apply_overrides, load_config
    from rwkv_tui.trainer.presets import find_preset

    config = load_config(find_preset(path)) if path else RunConfig()
    return apply_overrides(config, overrides) if overrides else config


class _Progress:
    """A rich progress bar fed by the loop's per-step events."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None
        self._task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"), TimeRemainingColumn(),
            )
            self._progress.start()
        return self

    def update(self, step: int, event: dict) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task("train", total=event["total_steps"], loss="-", speed="")
        speed = event.get("tokens_per_s")
        self._progress.update(self._task, completed=step, loss=f"{event['smoothed_loss']:.4f}",
                              speed=f"{speed:,.0f} tok/s" if speed else "")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __exit__(self, *exc) -> None:
        self.stop()
