"""Step 1: choose the base model; its architecture is read from the file, never typed."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DirectoryTree, Input, OptionList, Static

from rwkv_tui.recent import recent_models, remember_model
from rwkv_tui.screens.wizard.base import WizardStep


class CheckpointTree(DirectoryTree):
    """Folders and .pth files only."""

    def filter_paths(self, paths):
        return [p for p in paths if (p.is_dir() and not p.name.startswith(".")) or p.suffix == ".pth"]


class ModelScreen(WizardStep):
    step = "model"

    def body(self) -> ComposeResult:
        yield Static("Path of an official RWKV .pth checkpoint (RWKV-7 x070, RWKV-6 x060 or RWKV-5 x052). "
                     "Version, layers, width, heads and vocabulary are read from the weights.", classes="help")
        yield Input(value=self.state.config.model.path, placeholder="/path/to/RWKV-x070-World-….pth", id="model-path")
        yield Static(id="model-info")
        recent = recent_models()
        if recent:
            yield Static("Recent models", classes="help")
            yield OptionList(*recent, id="recent-models")
        yield Static("Or browse (folders and .pth files):", classes="help")
        yield CheckpointTree(Path.cwd(), id="model-tree")

    def on_mount(self) -> None:
        if self.state.config.model.path:
            self.inspect(self.state.config.model.path)

    @on(Input.Submitted, "#model-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.inspect(event.value.strip())

    @on(OptionList.OptionSelected, "#recent-models")
    def _recent(self, event: OptionList.OptionSelected) -> None:
        self._pick(str(event.option.prompt))

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self._pick(str(event.path))

    def _pick(self, path: str) -> None:
        self.query_one("#model-path", Input).value = path
        self.inspect(path)

    @work(thread=True, exclusive=True)
    def inspect(self, path: str) -> None:
        from rwkv_tui.trainer.checkpoint import inspect_checkpoint
        from rwkv_tui.trainer.errors import RwkvTuiError

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
        remember_model(path)
        self.query_one("#model-info", Static).update(spec_table(spec))

    def can_leave(self) -> bool:
        path = self.query_one("#model-path", Input).value.strip()
        if self.state.spec is None or path != self.state.config.model.path:
            self.inspect(path)
            self.notify("press Enter in the path field and wait for the model's details", severity="warning")
            return False
        return True
