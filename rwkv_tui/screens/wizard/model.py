"""Step 1: choose the base model; its architecture is read from the file, never typed.

Two tabs: "Local file" (a path, the recent models, a folder tree) and "Download" (the catalogue
of official RWKV-7 checkpoints, fetched with `rwkv_tui.trainer.hub.download`). A download ends
exactly like picking the local file: the path is filled in and the model is inspected."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.containers import Horizontal
from textual.widgets import (Button, DataTable, DirectoryTree, Input, Label, OptionList, ProgressBar, Select,
                             Static, TabbedContent, TabPane)
from textual.worker import get_current_worker

from rwkv_tui.recent import recent_models, remember_model
from rwkv_tui.screens.wizard.base import WizardStep

if TYPE_CHECKING:
    from rwkv_tui.trainer.hub.download import HubFile
    from rwkv_tui.trainer.spec import ModelSpec

DEFAULT_DOWNLOAD_DIR = "models"  # relative to the folder rwkv-tui was started in; empty: the hub's cache
SOURCES = [("Hugging Face", "hf"), ("ModelScope", "modelscope")]
PROGRESS_INTERVAL_S = 0.1  # at most this often a progress message, however small the chunks


@dataclass
class ModelInspected(Message, bubble=False):
    """The checkpoint at `path` was read."""

    path: str
    spec: ModelSpec


@dataclass
class ModelFailed(Message, bubble=False):
    """The checkpoint could not be read; `message` says why."""

    message: str


@dataclass
class CatalogFits(Message, bubble=False):
    """Which methods fit the GPU, per catalogue name; `line` says what was measured against."""

    fits: dict[str, str]
    line: str


@dataclass
class DownloadProgress(Message, bubble=False):
    done: int
    total: int | None


@dataclass
class DownloadDone(Message, bubble=False):
    """The download was verified and read: the model at `path` is ready to be picked."""

    path: str
    spec: ModelSpec


@dataclass
class DownloadFailed(Message, bubble=False):
    message: str
    hint: str


class _DownloadCancelled(Exception):
    """Raised from the progress callback once the worker is cancelled (the screen went away)."""


class CheckpointTree(DirectoryTree):
    """Folders and .pth files only."""

    def filter_paths(self, paths):
        return [p for p in paths if (p.is_dir() and not p.name.startswith(".")) or p.suffix == ".pth"]


class ModelScreen(WizardStep):
    MAIN_INPUT = "#model-path"  # not the tab bar: typing a path is the common case
    _catalog: dict | None = None  # name -> CatalogEntry, once the Download tab was opened

    def body(self) -> ComposeResult:
        with TabbedContent(id="model-tabs"):
            with TabPane("Local file", id="tab-local"):
                yield from self.local_tab()
            with TabPane("Download", id="tab-download"):
                yield from self.download_tab()

    def local_tab(self) -> ComposeResult:
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

    def download_tab(self) -> ComposeResult:
        yield Static("Official RWKV-7 checkpoints. Pick a row and press Download: the file is checked "
                     "(free space first, SHA256 where published), read, then used as the model. "
                     "Downloads resume; HF_ENDPOINT picks a Hugging Face mirror.", classes="help")
        yield DataTable(id="catalog-table", cursor_type="row", zebra_stripes=True)
        yield Static("fits: estimating…", id="catalog-fits", classes="help")
        with Horizontal(classes="inline-fields"):
            yield Label("Source")
            yield Select(SOURCES, value="hf", allow_blank=False, id="download-source")
            yield Label("Folder")
            yield Input(value=DEFAULT_DOWNLOAD_DIR, placeholder="empty: the hub's cache (HF_HOME)", id="download-dir")
        yield Static("Folder: relative to where rwkv-tui was started; leave it empty for the hub's own cache "
                     "(HF_HOME).", classes="help")
        with Horizontal(id="download-row"):
            yield Button("Download", id="download-start", variant="primary")
            bar = ProgressBar(id="download-progress", show_eta=True)
            bar.display = False  # until a download starts
            yield bar
        yield Static(id="download-status")

    def on_mount(self) -> None:
        if self.state.config.model.path:
            self.inspect(self.state.config.model.path)

    @on(Input.Submitted, "#model-path")
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter: read the model and, once it is read, go on to the next step."""
        path = event.value.strip()
        if self.state.spec is not None and path == self.state.config.model.path:
            self.action_next()
            return
        self.inspect(path, then_next=True)

    @on(OptionList.OptionSelected, "#recent-models")
    def _recent(self, event: OptionList.OptionSelected) -> None:
        self._pick(str(event.option.prompt))

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self._pick(str(event.path))

    def _pick(self, path: str) -> None:
        self.query_one("#model-path", Input).value = path
        self.inspect(path)

    _next_when_read = False  # Enter (or Next) asked to go on once the checkpoint is read

    def inspect(self, path: str, then_next: bool = False) -> None:
        self._next_when_read = then_next
        if not path:  # Path("") is the current folder: "not set" says what is wrong
            self.on_model_failed(ModelFailed("model path not set: type the path of a .pth checkpoint"))
            return
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
        self._next_when_read = False
        self.query_one("#model-info", Static).update(f"[red]{message.message}[/red]")

    def on_model_inspected(self, message: ModelInspected) -> None:
        from rwkv_tui.render import spec_table

        self.state.spec = message.spec
        self.state.config.model.path = message.path
        remember_model(message.path)
        self.query_one("#model-info", Static).update(spec_table(message.spec))
        if self._next_when_read and self.query_one("#model-path", Input).value.strip() == message.path:
            self._next_when_read = False
            self.action_next()

    # ------------------------------------------------------------------ the Download tab

    @on(TabbedContent.TabActivated, "#model-tabs")
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-download" and self._catalog is None:
            self.show_catalog()

    def show_catalog(self) -> None:
        """Fill the table (the catalogue is a small shipped file); the fits column follows from a worker."""
        from rwkv_tui.trainer.hub.catalog import load_catalog

        self._catalog = {entry.name: entry for entry in load_catalog()}
        table = self.query_one("#catalog-table", DataTable)
        table.clear(columns=True)
        table.add_column("name", key="name")
        for label in ("params", "L×C", "size", "ctx"):
            table.add_column(label, key=label)
        table.add_column("fits this GPU", key="fits")
        for entry in self._catalog.values():
            table.add_row(entry.name, entry.parameters, entry.shape, entry.size_text, str(entry.ctx_len or "unknown"),
                          "…", key=entry.name)
        self._estimate_fits(list(self._catalog.values()), self.state.free_vram)

    @work(thread=True, exclusive=True, group="catalog-fits")
    def _estimate_fits(self, entries: list, free_bytes: int | None) -> None:
        """method_fits needs torch (the VRAM estimate): off the UI thread. Without the hardware
        step's report yet, the first GPU is asked, as `rwkv-tui models list` does."""
        from rwkv_tui.trainer.hub.catalog import fits_text, method_fits

        line = "fits: methods (default settings) whose estimate fits the GPU chosen in the Hardware step"
        if free_bytes is None:
            from rwkv_tui.trainer.hardware import detect_gpus

            gpus = detect_gpus()
            if gpus:
                free_bytes = gpus[0].free_bytes
                line = (f"fits: methods (default settings) whose estimate fits "
                        f"{free_bytes / 1024**3:.1f} GB free on {gpus[0].name}")
            else:
                line = "CPU only: no GPU detected, so no method is checked against GPU memory"
        fits = {entry.name: fits_text(method_fits(entry, free_bytes)) for entry in entries}
        self.post_from_worker(CatalogFits(fits, line))

    def on_catalog_fits(self, message: CatalogFits) -> None:
        table = self.query_one("#catalog-table", DataTable)
        for name, text in message.fits.items():
            if name in table.rows:
                table.update_cell(name, "fits", text)
        self.query_one("#catalog-fits", Static).update(message.line)

    def selected_entry(self):
        table = self.query_one("#catalog-table", DataTable)
        if not self._catalog or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return self._catalog.get(key)

    @on(Button.Pressed, "#download-start")
    def _download_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.start_download()

    def start_download(self) -> None:
        from rwkv_tui.trainer.hub.download import DownloadError, HubFile

        entry = self.selected_entry()
        if entry is None:
            self._download_failed("pick a model in the table first", "")
            return
        source = self.query_one("#download-source", Select).value
        try:
            hub_file = HubFile.from_entry(entry, str(source))
        except DownloadError as exc:
            self._download_failed(exc.message, exc.hint or "")
            return
        folder = self.query_one("#download-dir", Input).value.strip()
        dest = str(Path(folder).expanduser().resolve()) if folder else None
        self.query_one("#download-start", Button).disabled = True
        bar = self.query_one("#download-progress", ProgressBar)
        bar.display = True
        bar.update(total=entry.file_size, progress=0)
        where = dest or "the hub's cache"
        self.query_one("#download-status", Static).update(f"downloading {entry.file} into {where}…")
        self._download(hub_file, dest)

    @work(thread=True, exclusive=True, group="download")
    def _download(self, hub_file: HubFile, dest: str | None) -> None:
        """Runs for minutes: reports progress, and stops at the next chunk once the screen is gone."""
        import time

        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.hub.download import download_model

        worker = get_current_worker()
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            # huggingface_hub may call this from its own threads: no get_current_worker() here
            if worker.is_cancelled:
                raise _DownloadCancelled
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or (total and done >= total):
                last[0] = now
                self.post_message(DownloadProgress(done, total))

        try:
            result = download_model(hub_file, dest, progress)
        except _DownloadCancelled:
            return
        except RwkvTuiError as exc:
            self.post_from_worker(DownloadFailed(exc.message, exc.hint or ""))
            return
        except Exception as exc:  # noqa: BLE001 - a hub library's own error must not close the app
            self.post_from_worker(DownloadFailed(f"the download failed: {exc}", "run it again, or use "
                                                 "`rwkv-tui models download` to see the whole error"))
            return
        self.post_from_worker(DownloadDone(str(result.path), result.spec))

    def on_download_progress(self, message: DownloadProgress) -> None:
        bar = self.query_one("#download-progress", ProgressBar)
        bar.update(total=message.total if message.total else bar.total, progress=message.done)

    def on_download_failed(self, message: DownloadFailed) -> None:
        self._download_failed(message.message, message.hint)

    def _download_failed(self, message: str, hint: str) -> None:
        from textual.markup import escape

        self.query_one("#download-start", Button).disabled = False
        text = f"[red]{escape(message)}[/red]"
        if hint:
            text += f"\n[dim]hint:[/dim] {escape(hint)}"
        self.query_one("#download-status", Static).update(text)

    def on_download_done(self, message: DownloadDone) -> None:
        """Picked as if chosen in the Local tab: path filled in, model inspected, remembered."""
        bar = self.query_one("#download-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        self.query_one("#download-start", Button).disabled = False
        self.query_one("#download-status", Static).update(f"[green]downloaded[/green] {message.path}")
        self.workers.cancel_group(self, "default")  # a checkpoint read still running would overwrite it
        self.query_one("#model-path", Input).value = message.path
        self.query_one("#model-tabs", TabbedContent).active = "tab-local"
        self.post_message(ModelInspected(message.path, message.spec))

    def can_leave(self) -> bool:
        path = self.query_one("#model-path", Input).value.strip()
        if self.state.spec is None or path != self.state.config.model.path:
            self.inspect(path, then_next=True)  # goes on by itself once the model is read
            return False
        return True
