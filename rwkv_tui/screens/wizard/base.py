"""Shared frame of the wizard screens: title with the step, help line, Back / Next."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from rwkv_tui.screens.wizard.state import WizardState

TITLES = {"model": "Model", "hardware": "Hardware", "method": "Method", "data": "Data",
          "params": "Parameters", "review": "Review"}


class WizardStep(Screen):
    step = "model"
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+n", "next", "Next")]

    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        from rwkv_tui.screens.wizard import STEPS

        index = STEPS.index(self.step)
        trail = "  ›  ".join(f"[b]{TITLES[s]}[/b]" if s == self.step else TITLES[s] for s in STEPS)
        yield Static(f"New fine-tune  {index + 1}/{len(STEPS)}   {trail}", classes="screen-title")
        with VerticalScroll(classes="wizard-body"):
            yield from self.body()
        with Horizontal(classes="wizard-nav"):
            yield Button("Back", id="back")
            yield Button(self.next_label(), id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def next_label(self) -> str:
        return "Next"

    def can_leave(self) -> bool:
        """Checked before Next; show the reason and return False to stay."""
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "next":
            self.action_next()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        from rwkv_tui.screens.wizard import STEPS, screen_for

        if not self.can_leave():
            return
        index = STEPS.index(self.step)
        if index + 1 < len(STEPS):
            self.app.push_screen(screen_for(STEPS[index + 1], self.state))
