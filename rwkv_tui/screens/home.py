"""The first screen: what would you like to do?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT

if TYPE_CHECKING:
    from rwkv_tui.screens.wizard import WizardState

_WELCOME = (
    "[b]rwkv-tui[/b] — fine-tune RWKV models from the terminal.\n"
    "Training runs in its own process: you can detach, close SSH, and attach again later."
)


@dataclass
class DemoReady(Message, bubble=False):
    """The demo workspace exists; `state` opens the wizard on it."""

    state: WizardState


class HomeScreen(Screen):
    # The menu's entries by a key each, shown in the footer; q (or Esc: nothing is behind Home) quits.
    BINDINGS = [Binding("n", "open('new')", "New fine-tune"), Binding("d", "open('demo')", "Demo"),
                Binding("r", "open('runs')", "Runs"), Binding("p", "open('presets')", "Presets"),
                Binding("q", "app.quit", "Quit"), Binding("escape", "app.quit", "Quit", show=False)]

    def __init__(self, runs_root: str = DEFAULT_RUNS_ROOT, demo_dir: str = "rwkv-tui-demo") -> None:
        super().__init__()
        self.runs_root = runs_root
        self.demo_dir = demo_dir

    def compose(self) -> ComposeResult:
        yield Static(_WELCOME, classes="screen-title")
        yield OptionList(
            Option("New fine-tune — model, hardware, method, data, parameters, start", id="new"),
            Option("Try the demo — a tiny model and built-in data, on this CPU, in about a minute", id="demo"),
            Option("Runs — watch, attach to or resume a fine-tune", id="runs"),
            Option("Presets — built-in recipes and yours", id="presets"),
            Option("Quit", id="quit"),
            id="home-menu",
        )
        yield Footer()

    @on(OptionList.OptionSelected)
    def _choose(self, event: OptionList.OptionSelected) -> None:
        self.action_open(event.option.id)

    def action_open(self, choice: str) -> None:
        if choice == "new":
            from rwkv_tui.screens.wizard import WizardState, screen_for

            self.app.push_screen(screen_for("model", WizardState()))
        elif choice == "demo":
            self.start_demo()
        elif choice == "presets":
            from rwkv_tui.screens.presets import PresetsScreen

            self.app.push_screen(PresetsScreen())
        elif choice == "runs":
            from rwkv_tui.screens.runs import RunsScreen

            self.app.push_screen(RunsScreen(self.runs_root))
        elif choice == "quit":
            self.app.exit()

    def start_demo(self) -> None:
        """Create the demo workspace (in a worker: it builds a model) and open the wizard on it."""
        self.notify("creating the demo model and data…")
        self._make_demo(self.demo_dir)

    @work(thread=True, exclusive=True)
    def _make_demo(self, demo_dir: str) -> None:
        from rwkv_tui.screens.wizard import WizardState
        from rwkv_tui.trainer.config import load_config
        from rwkv_tui.trainer.demo import create_demo

        workspace = create_demo(demo_dir)
        self.post_message(DemoReady(WizardState(config=load_config(workspace.config),
                                                keep_data_settings="the demo's steps and ctx_len are sized to "
                                                                   "teach its facts")))

    def on_demo_ready(self, message: DemoReady) -> None:
        from rwkv_tui.screens.wizard import screen_for

        self.app.push_screen(screen_for("model", message.state))
