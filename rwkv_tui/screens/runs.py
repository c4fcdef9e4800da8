"""The runs list: every run started anywhere (the run index) and those under a root, newest first,
with status, method, model, step, loss and val loss. Enter opens a run's dashboard; the other keys
act on the highlighted run and show in the footer only when they apply to its state."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from rwkv_tui.run_view import RunView
from rwkv_tui.screens import run_actions
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT, RunFolder
from rwkv_tui.trainer.training.listing import RunSummary, list_known_runs


class RunsScreen(Screen):
    BINDINGS = [
        *run_actions.RUN_ACTION_BINDINGS,
        Binding("f5", "reload", "Reload"),
        Binding("escape,q", "app.pop_screen", "Back"),
    ]
    _RUN_ACTIONS = ("resume", "continue", "continue_after_stop", "chat", "export", "delete")

    def __init__(self, root: str | Path = DEFAULT_RUNS_ROOT) -> None:
        super().__init__()
        self.root = Path(root)
        self.runs: dict[str, RunSummary] = {}
        self._views: dict[str, RunView] = {}

    def compose(self) -> ComposeResult:
        yield Static(f"Runs started anywhere, and under {self.root}", classes="screen-title")
        yield DataTable(id="runs-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "status", "method", "model", "step", "loss", "val loss", "updated")
        self.action_reload()

    def action_reload(self) -> None:
        from rwkv_tui.commands.runs import step_text, updated_text

        table = self.query_one(DataTable)
        table.clear()
        runs = list_known_runs(self.root)
        self.runs = {str(r.path): r for r in runs}
        self._views.clear()
        for r in runs:
            table.add_row(r.path.name, r.status, r.method or "–", r.model or "–", step_text(r), _loss(r.loss),
                          _loss(r.val_loss), updated_text(r), key=str(r.path))
        if not runs:
            self.notify(f"no runs yet (none under {self.root}, none recorded elsewhere)", severity="information")
        problems = [p for r in runs for p in RunFolder.at(r.path).status_problems()]
        if problems:  # the rows show what could be read; say what was skipped
            self.notify("\n".join(problems[:3]), title="malformed status.json skipped", severity="warning")
        self.refresh_bindings()

    def _selected(self) -> tuple[RunFolder, RunView] | None:
        """The highlighted run's folder and its events' view (state from the summary: it knows crashes)."""
        table = self.query_one(DataTable)
        if not self.runs or table.cursor_row < 0 or table.cursor_row >= table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        summary = self.runs.get(key)
        if summary is None:
            return None
        folder = RunFolder.at(summary.path)
        if key not in self._views:
            view = run_actions.replay(folder)
            view.state = summary.state
            self._views[key] = view
        return folder, self._views[key]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in self._RUN_ACTIONS:
            return True
        selected = self._selected() if self.is_mounted else None
        if selected is None:
            return False
        view = selected[1]
        return action in run_actions.applicable(view.state, bool(run_actions.saved_outputs(view)))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        self._open_dashboard(event.row_key.value)

    def _open_dashboard(self, run_dir) -> None:
        from rwkv_tui.screens.dashboard import DashboardScreen

        self.app.push_screen(DashboardScreen(run_dir))

    def action_resume(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        try:
            run_actions.resume_run(selected[0])
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self._open_dashboard(selected[0].path)

    def action_continue(self) -> None:
        selected = self._selected()
        if selected is None:
            return

        def opened(run_dir: Path | None) -> None:
            if run_dir is not None:
                self.action_reload()
                self._open_dashboard(run_dir)

        self.app.push_screen(run_actions.ContinueDialog(selected[0], run_actions.epoch_count(selected[0])), opened)

    def action_continue_after_stop(self) -> None:
        self.action_continue()

    def action_chat(self) -> None:
        selected = self._selected()
        screen = run_actions.chat_screen(*selected) if selected is not None else None
        if screen is None:
            self.notify("this run saved no checkpoint yet", severity="warning")
            return
        self.app.push_screen(screen)

    def action_export(self) -> None:
        from rwkv_tui.screens.dashboard import DashboardScreen
        from rwkv_tui.screens.export import ExportScreen, read_run_outputs

        selected = self._selected()
        if selected is None:
            return
        try:
            outputs = read_run_outputs(*selected)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.app.push_screen(ExportScreen(outputs, cli=DashboardScreen.export_cli))

    def action_delete(self) -> None:
        selected = self._selected()
        if selected is None:
            return
        folder = selected[0]

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                run_actions.delete_run(folder)
            except (OSError, RwkvTuiError) as exc:
                self.notify(str(exc), severity="error", timeout=10)
                return
            self.notify(f"deleted {folder.path}")
            self.action_reload()

        self.app.push_screen(run_actions.ConfirmDelete(folder), confirmed)


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"
