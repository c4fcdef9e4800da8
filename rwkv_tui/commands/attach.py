"""`rwkv-tui attach [RUN_DIR]`: open the dashboard of a run (live, finished or crashed)."""

from __future__ import annotations

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attach", help="open the live dashboard of a run (the newest live run, started anywhere, by default)",
        description="Follow a run folder's events: works on a live run (after closing the terminal or losing "
                    "SSH), a finished one and one that crashed. Detaching never stops the trainer. Without "
                    "RUN_DIR it opens the newest live run of the run index (runs started from any directory) "
                    "or under --root; with none live, the newest run.")
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the newest live run)")
    parser.add_argument("--root", default=DEFAULT_RUNS_ROOT,
                        help=f"a folder of runs searched besides the run index (default: {DEFAULT_RUNS_ROOT})")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import sys

    from rwkv_tui.trainer.errors import RwkvTuiError
    from rwkv_tui.trainer.training.folder import RunFolder
    from rwkv_tui.trainer.training.listing import list_known_runs, newest_live_run

    if args.run_dir:
        folder = RunFolder.at(args.run_dir)
        if not folder.exists():
            raise RwkvTuiError("not a run folder (no config.toml or events.jsonl)", path=folder.path,
                               hint="list runs with `rwkv-tui runs`")
        run_dir = folder.path
    else:
        runs = list_known_runs(args.root)
        if not runs:
            raise RwkvTuiError(f"no runs: none under {args.root} and none recorded elsewhere",
                               hint="start one with `rwkv-tui` or `rwkv-tui train`")
        live = newest_live_run(runs)
        if live is None:
            print(f"no live run; opening the newest: {runs[0].path}", file=sys.stderr)
        run_dir = (live or runs[0]).path
    from rwkv_tui.app import run_app

    return run_app(attach=run_dir, runs_root=args.root)
