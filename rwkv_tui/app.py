"""The Textual application. Opening it imports no torch: the trainer runs in its own process."""

from __future__ import annotations

from pathlib import Path

from textual.app import App

from rwkv_tui.screens.home import HomeScreen
from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT


class RwkvTuiApp(App):
    TITLE = "rwkv-tui"
    CSS_PATH = "app.tcss"

    def __init__(self, *, attach: str | Path | None = None, runs_root: str | Path = DEFAULT_RUNS_ROOT) -> None:
        super().__init__()
        self.attach_to = attach
        self.runs_root = str(runs_root)

    def on_mount(self) -> None:
        self.push_screen(HomeScreen(self.runs_root))
        if self.attach_to is not None:
            from rwkv_tui.screens.dashboard import DashboardScreen

            self.push_screen(DashboardScreen(self.attach_to))


def run_app(attach: str | Path | None = None, runs_root: str | Path = DEFAULT_RUNS_ROOT) -> int:
    RwkvTuiApp(attach=attach, runs_root=runs_root).run()
    return 0
