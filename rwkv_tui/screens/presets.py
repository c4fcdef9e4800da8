"""Presets in the app: built-in and user presets; load one into the wizard, duplicate, delete."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static


class PresetsScreen(Screen):
    BINDINGS = [Binding("enter", "load", "Use in the wizard"), Binding("c", "duplicate", "Duplicate"),
                Binding("delete", "delete", "Delete (user presets)"), Binding("escape", "app.pop_screen", "Back"),
                Binding("q", "app.pop_screen", "Back", show=False)]

    def compose(self) -> ComposeResult:
        yield Static("Presets: built-in recipes from the tutorials and your own (saved from the Review step).",
                     classes="screen-title")
        yield DataTable(id="presets-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("name", "method", "source", "description")
        self.reload()

    def reload(self) -> None:
        from rwkv_tui.trainer.presets import list_presets

        table = self.query_one(DataTable)
        table.clear()
        self.presets = list_presets()
        for p in self.presets:
            table.add_row(p.name, p.method, p.source, p.description, key=p.name)

    def selected(self):
        table = self.query_one(DataTable)
        return self.presets[table.cursor_row] if self.presets else None

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_load()

    def action_load(self) -> None:
        from rwkv_tui.screens.wizard import WizardState, screen_for
        from rwkv_tui.trainer.presets import load_preset

        preset = self.selected()
        if preset is not None:
            self.app.push_screen(screen_for("model", WizardState(config=load_preset(preset.path))))

    def action_duplicate(self) -> None:
        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.presets import duplicate_preset, list_presets

        preset = self.selected()
        if preset is None:
            return
        names = {p.name for p in list_presets()}
        new = next(f"{preset.name}-copy{i or ''}" for i in range(100) if f"{preset.name}-copy{i or ''}" not in names)
        try:
            duplicate_preset(preset.name, new)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"duplicated as {new}")
        self.reload()

    def action_delete(self) -> None:
        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.presets import delete_user_preset

        preset = self.selected()
        if preset is None:
            return
        try:
            delete_user_preset(preset.name)
        except RwkvTuiError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"deleted {preset.name}")
        self.reload()
