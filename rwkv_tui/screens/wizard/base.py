"""Shared frame of the wizard screens: title with the step, help line, Back / Next."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Static
from textual.worker import get_current_worker

from rwkv_tui.screens.wizard.state import WizardState
from rwkv_tui.screens.wizard.steps import STEPS, step_index


class WizardStep(Screen):
    # q goes back too, but only where no text field has the focus (an Input takes the letter first).
    BINDINGS = [Binding("escape", "back", "Back"), Binding("q", "back", "Back", show=False),
                Binding("ctrl+n", "next", "Next")]
    # Each step names its main input: focused on entry, so typing starts at once (never the scroll area).
    # Without scrolling: centring it would scroll the help line (and the tab bar) out of a short terminal.
    AUTO_FOCUS = ""
    MAIN_INPUT = "#next"

    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        index = step_index(type(self))
        trail = "  ›  ".join(f"[b]{s.title}[/b]" if i == index else s.title for i, s in enumerate(STEPS))
        yield Static(f"New fine-tune  {index + 1}/{len(STEPS)}   {trail}", classes="screen-title")
        with VerticalScroll(classes="wizard-body"):
            yield from self.body()
        with Horizontal(classes="wizard-nav"):
            yield Button("Back", id="back")
            yield Button(self.next_label(), id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        """Runs besides each step's own on_mount (Textual calls the handler of every class)."""
        for widget in self.query(self.MAIN_INPUT):
            if widget.focusable:
                self.set_focus(widget, scroll_visible=False)
                break

    def next_label(self) -> str:
        return "Next"

    def can_leave(self) -> bool:
        """Checked before Next; show the reason and return False to stay."""
        return True

    def post_from_worker(self, message: Message) -> None:
        """From a thread worker: hand a result to the UI thread, unless a newer run of the same
        exclusive worker replaced this one (its result would overwrite the newer one's)."""
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "next":
            self.action_next()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        if not self.can_leave():
            return
        index = step_index(type(self))
        if index + 1 < len(STEPS):
            self.app.push_screen(STEPS[index + 1].screen_class()(self.state))
