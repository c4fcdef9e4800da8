"""Step 1: choose the base model; its architecture is read from the file, never typed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DirectoryTree, Input, OptionList, Static

from rwkv_tui.recent import recent_models, remember_model
from rwkv_tui.screens.wizard.base import WizardStep

if TYPE_CHECKING:
    from rwkv_tui.trainer.spec import ModelSpec


@dataclass
class ModelInspected(Message, bubble=False):
    """The checkpoint at `path` was read."""

    path: str
    spec: ModelSpec


@dataclass
class ModelFailed(Message, bubble=False):
    """The checkpoint could not be read; `message` says why."""

    message: str


class CheckpointTree(DirectoryTree):
    """Folders and .pth files only."""

    def filter_paths(self, paths):
        return [p for p in paths if (p.is_dir() and not p.name.startswith(".")) or p.suffix == ".pth"]


class ModelScreen(WizardStep):
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

    def inspect(self, path: str) -> None:
        self.query_one("#model-info", Static).update("reading the checkpoint…")
        self._read_checkpoint(path)

    @work(thread=True, exclusive=True)
    def _read_checkpoint(self, path: str) -> None:
        from rwkv_tui.trainer.checkpoint import inspect_checkpoint
        from rwkv_tui.trainer.errors import RwkvTuiError

        try:
            spec = inspect_checkpoint(path)
        except RwkvTuiError as exc:
            self.post_from_worker(ModelFailed(str(exc)))
            return
        self.post_from_worker(ModelInspected(path, spec))

    def on_model_failed(self, message: ModelFailed) -> None:
        self.state.spec = None
        self.query_one("#model-info", Static).update(f"[red]{message.message}[/red]")

    def on_model_inspected(self, message: ModelInspected) -> None:
        from rwkv_tui.render import spec_table

        self.state.spec = message.spec
        self.state.config.model.path = message.path
        remember_model(message.path)
        self.query_one("#model-info", Static).update(spec_table(message.spec))

    def can_leave(self) -> bool:
        path = self.query_one("#model-path", Input).value.strip()
        if self.state.spec is None or path != self.state.config.model.path:
            self.inspect(path)
            self.notify("press Enter in the path field and wait for the model's details", severity="warning")
            return False
        return True
