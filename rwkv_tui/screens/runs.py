"""The runs list: every run folder under a root, newest first; Enter opens its dashboard."""

from __future__ import annotations

import time
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT, RunFolder
from rwkv_tui.trainer.training.listing import list_runs


class RunsScreen(Screen):
    BINDINGS = [Binding("r", "reload", "Reload"), Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, root: str | Path = DEFAULT_RUNS_ROOT) -> None:
        super().__init__()
        self.root = Path(root)

    def compose(self) -> ComposeResult:
        yield Static(f"Runs under {self.root}", classes="screen-title")
        yield DataTable(id="runs-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "state", "step", "loss", "updated")
        self.action_reload()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        runs = list_runs(self.root)
        for r in runs:
            step = f"{r.step or 0}/{r.total_steps}" if r.total_steps else str(r.step or "–")
            loss = f"{r.loss:.4f}" if isinstance(r.loss, (int, float)) else "–"
            updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)) if r.updated else "–"
            table.add_row(r.path.name, r.state, step, loss, updated, key=str(r.path))
        if not runs:
            self.notify(f"no runs under {self.root} yet", severity="information")
        problems = [p for r in runs for p in RunFolder.at(r.path).status_problems()]
        if problems:  # the rows show what could be read; say what was skipped
            self.notify("\n".join(problems[:3]), title="malformed status.json skipped", severity="warning")

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        from rwkv_tui.screens.dashboard import DashboardScreen

        self.app.push_screen(DashboardScreen(event.row_key.value))
