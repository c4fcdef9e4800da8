"""`rwkv-tui runs [DIR]`: the run folders under DIR with their state."""

from __future__ import annotations

import time

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "runs", help="list run folders and their status",
        description=f"List the run folders under DIR (default: {DEFAULT_RUNS_ROOT}) with their state.")
    parser.add_argument("root", nargs="?", default=DEFAULT_RUNS_ROOT,
                        help=f"folder holding run folders (default: {DEFAULT_RUNS_ROOT})")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import json

    from rwkv_tui.trainer.training.listing import list_runs

    runs = list_runs(args.root)
    _report_malformed_status(runs)
    if args.json:
        print(json.dumps([{**r.__dict__, "path": str(r.path)} for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs under {args.root}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "state", "step", "loss", "updated")
    for r in runs:
        step = f"{r.step or 0}/{r.total_steps}" if r.total_steps else str(r.step or "-")
        loss = f"{r.loss:.4f}" if isinstance(r.loss, (int, float)) else "-"
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)) if r.updated else "-"
        table.add_row(str(r.path), r.state, step, loss, updated)
    Console().print(table)
    return 0


def _report_malformed_status(runs) -> None:
    """A malformed status.json is skipped (its run shows what could be read), and said on stderr."""
    import sys

    from rwkv_tui.trainer.training.folder import RunFolder

    for summary in runs:
        for problem in RunFolder.at(summary.path).status_problems():
            print(f"warning: {problem}", file=sys.stderr)
