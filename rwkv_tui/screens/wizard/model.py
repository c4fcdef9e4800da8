"""Step 1: choose the base model; its architecture is read from the file, never typed."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.widgets import Input, Static

from rwkv_tui.screens.wizard.base import WizardStep


class ModelScreen(WizardStep):
    step = "model"

    def body(self) -> ComposeResult:
        yield Static("Path of an official RWKV .pth checkpoint (RWKV-7 x070). Version, layers, width, heads "
                     "and vocabulary are read from the weights.", classes="help")
        yield Input(value=self.state.config.model.path, placeholder="/path/to/RWKV-x070-World-….pth", id="model-path")
        yield Static(id="model-info")

    def on_mount(self) -> None:
        if self.state.config.model.path:
            self.inspect(self.state.config.model.path)

    @on(Input.Submitted, "#model-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.inspect(event.value.strip())

    @work(thread=True, exclusive=True)
    def inspect(self, path: str) -> None:
        from trainer.checkpoint import inspect_checkpoint
        from trainer.errors import RwkvTuiError

        self.app.call_from_thread(self.query_one("#model-info", Static).update, "reading the checkpoint…")
        try:
            spec = inspect_checkpoint(path)
        except RwkvTuiError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self._show_spec, path, spec)

    def _show_error(self, message: str) -> None:
        self.state.spec = None
        self.query_one("#model-info", Static).update(f"[red]{message}[/red]")

    def _show_spec(self, path: str, spec) -> None:
        from rwkv_tui.render import spec_table

        self.state.spec = spec
        self.state.config.model.path = path
        self.query_one("#model-info", Static).update(spec_table(spec))

    def can_leave(self) -> bool:
        path = self.query_one("#model-path", Input).value.strip()
        if self.state.spec is None or path != self.state.config.model.path:
            self.inspect(path)
            self.notify("press Enter in the path field and wait for the model's details", severity="warning")
            return False
        return True
