"""`rwkv-tui runs [DIR]`: every run this user started (the run index, from any directory) plus the
run folders under DIR, newest first, with their status; `--csv RUN` prints a run's events as CSV."""

from __future__ import annotations

import time

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "runs", help="list runs (started anywhere) and their status; --csv RUN exports a run's events",
        description=f"List every run started on this machine by this user (the run index in the XDG state "
                    f"folder) and the run folders under DIR (default: {DEFAULT_RUNS_ROOT}), newest first: "
                    "status (live, finished, stopped, crashed), method, model, step, loss and val loss.")
    parser.add_argument("root", nargs="?", default=DEFAULT_RUNS_ROOT,
                        help=f"a folder holding run folders, listed too (default: {DEFAULT_RUNS_ROOT})")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.add_argument("--csv", metavar="RUN", help="print the events of run folder RUN as CSV (one row per event)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if getattr(args, "csv", None):  # callers may build args without it
        return _print_csv(args.csv)
    import json

    from rwkv_tui.trainer.training.listing import list_known_runs

    runs = list_known_runs(args.root)
    _report_malformed_status(runs)
    if args.json:
        print(json.dumps([{**r.__dict__, "path": str(r.path), "status": r.status} for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs (none under {args.root}, and none recorded elsewhere)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "status", "method", "model", "step", "loss", "val loss", "updated")
    for r in runs:
        table.add_row(str(r.path), r.status, r.method or "-", r.model or "-", step_text(r), _loss(r.loss),
                      _loss(r.val_loss), updated_text(r))
    Console().print(table)
    return 0


def step_text(r) -> str:
    return f"{r.step or 0}/{r.total_steps}" if r.total_steps else str(r.step or "-")


def updated_text(r) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)) if r.updated else "-"


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _print_csv(run_dir: str) -> int:
    import sys

    from rwkv_tui.trainer.errors import RwkvTuiError
    from rwkv_tui.trainer.training.events_csv import write_events_csv
    from rwkv_tui.trainer.training.folder import RunFolder

    folder = RunFolder.at(run_dir)
    if not folder.events.is_file():
        raise RwkvTuiError("no events.jsonl in this folder: not a run folder", path=folder.path,
                           hint="list runs with `rwkv-tui runs`")
    _, skipped = write_events_csv(folder, sys.stdout)
    for message in skipped:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _report_malformed_status(runs) -> None:
    """A malformed status.json is skipped (its run shows what could be read), and said on stderr."""
    import sys

    from rwkv_tui.trainer.training.folder import RunFolder

    for summary in runs:
        for problem in RunFolder.at(summary.path).status_problems():
            print(f"warning: {problem}", file=sys.stderr)
