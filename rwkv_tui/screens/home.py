"""The first screen: what would you like to do?"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

_WELCOME = (
    "[b]rwkv-tui[/b] — fine-tune RWKV models from the terminal.\n"
    "Training runs in its own process: you can detach, close SSH, and attach again later."
)


class HomeScreen(Screen):
    def __init__(self, runs_root: str = "runs") -> None:
        super().__init__()
        self.runs_root = runs_root

    def compose(self) -> ComposeResult:
        yield Static(_WELCOME, classes="screen-title")
        yield OptionList(
            Option("Runs — watch, attach to or resume a fine-tune", id="runs"),
            Option("Quit", id="quit"),
            id="home-menu",
        )
        yield Footer()

    @on(OptionList.OptionSelected)
    def _choose(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == "runs":
            from rwkv_tui.screens.runs import RunsScreen

            self.app.push_screen(RunsScreen(self.runs_root))
        elif event.option.id == "quit":
            self.app.exit()
