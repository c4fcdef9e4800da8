"""`rwkv-tui attach [RUN_DIR]`: open the dashboard of a run (live, finished or crashed)."""

from __future__ import annotations

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attach", help=f"open the live dashboard of a run (the newest under {DEFAULT_RUNS_ROOT}/ by default)",
        description="Follow a run folder's events: works on a live run (after closing the terminal or losing "
                    "SSH), a finished one and one that crashed. Detaching never stops the trainer.")
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the newest run under --root)")
    parser.add_argument("--root", default=DEFAULT_RUNS_ROOT,
                        help=f"where to look for runs (default: {DEFAULT_RUNS_ROOT})")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.errors import RwkvTuiError
    from rwkv_tui.trainer.training.folder import RunFolder
    from rwkv_tui.trainer.training.listing import list_runs

    if args.run_dir:
        folder = RunFolder.at(args.run_dir)
        if not folder.exists():
            raise RwkvTuiError("not a run folder (no config.toml or events.jsonl)", path=folder.path,
                               hint="list runs with `rwkv-tui runs`")
        run_dir = folder.path
    else:
        runs = list_runs(args.root)
        if not runs:
            raise RwkvTuiError(f"no runs under {args.root}", hint="start one with `rwkv-tui` or `rwkv-tui train`")
        run_dir = runs[0].path
    from rwkv_tui.app import run_app

    return run_app(attach=run_dir, runs_root=args.root)
