"""The model step's Download tab: the catalogue with what fits the GPU, a download that feeds the
progress bar and ends with the model picked as if chosen in the Local tab, errors with their hint."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

from conftest import wait_for, write_tiny_checkpoint
from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.screens.wizard import WizardState, screen_for
from rwkv_tui.trainer.hub import catalog as hub_catalog
from rwkv_tui.trainer.hub import download as hub_download
from rwkv_tui.trainer.hub.catalog import CatalogEntry, load_catalog
from rwkv_tui.trainer.hub.download import Downloaded, DownloadError
from test_models_hub import REPO, hub, tiny  # noqa: F401 - the loopback hub and its checkpoint, as fixtures


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def open_download_tab(pilot, app, state: WizardState):
    screen = screen_for("model", state)
    app.push_screen(screen)
    await wait_for(pilot, lambda: app.screen is screen and screen.focused is not None)
    assert screen.focused is screen.query_one("#model-path")  # the Local tab's path field, as before
    await pilot.click("#model-tabs Tab#--content-tab-tab-download")
    table = screen.query_one("#catalog-table")
    await wait_for(pilot, lambda: table.row_count > 0 and "…" not in str(screen.query_one("#catalog-fits").render()))
    return screen, table


def select_row(table, name: str) -> None:
    table.move_cursor(row=[key.value for key in table.rows].index(name))


def status_text(screen) -> str:
    return str(screen.query_one("#download-status").render())


@pytest.mark.asyncio
async def test_the_download_tab_lists_the_catalogue_with_what_fits(home):
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport

    state = WizardState(hardware=HardwareReport([GpuInfo(0, "Test GPU", 8 * 1024**3, 3 * 1024**3)]))
    app = RwkvTuiApp(runs_root=home)
    async with app.run_test(size=(110, 40)) as pilot:
        screen, table = await open_download_tab(pilot, app, state)
        catalog = load_catalog()
        assert [key.value for key in table.rows] == [entry.name for entry in catalog]
        row = table.get_row("rwkv7-g1d-0.1b")
        assert row[:5] == ["rwkv7-g1d-0.1b", "0.1B", "12×768", "0.38 GB", "8192"]
        fits = row[5].split(", ")
        assert "state" in fits and "lora" in fits and "full" not in fits  # 3 GiB free, as in test_models_hub
        assert table.get_row("rwkv7-g1e-13.3b")[5] == "none"
        assert "Hardware step" in str(screen.query_one("#catalog-fits").render())
        assert not screen.query_one("#download-progress").display  # no bar before a download


@pytest.mark.asyncio
async def test_a_download_feeds_the_bar_then_picks_the_model(home, monkeypatch):
    from rwkv_tui.recent import recent_models

    half_reported, release = threading.Event(), threading.Event()
    calls = []

    def fake_download(hub_file, dest_dir=None, on_progress=None):
        calls.append((hub_file, dest_dir))
        path, spec = write_tiny_checkpoint(Path(dest_dir), name=hub_file.file)
        total = path.stat().st_size
        on_progress(total // 2, total)
        half_reported.set()
        release.wait(10)
        on_progress(total, total)
        return Downloaded(path, spec)

    monkeypatch.setattr(hub_download, "download_model", fake_download)
    state = WizardState()
    app = RwkvTuiApp(runs_root=home)
    async with app.run_test(size=(110, 40)) as pilot:
        screen, table = await open_download_tab(pilot, app, state)
        select_row(table, "rwkv7-g1d-0.1b")
        screen.query_one("#download-start").press()
        await wait_for(pilot, half_reported.is_set)
        bar = screen.query_one("#download-progress")
        await wait_for(pilot, lambda: bar.progress > 0)
        assert bar.display and bar.percentage == pytest.approx(0.5, abs=0.01)
        assert screen.query_one("#download-start").disabled  # one download at a time
        assert state.spec is None
        release.set()
        await wait_for(pilot, lambda: state.spec is not None)

        hub_file, dest = calls[0]
        entry = hub_catalog.find_entry("rwkv7-g1d-0.1b")
        assert (hub_file.repo, hub_file.file, hub_file.source) == (entry.hf_repo, entry.file, "hf")
        assert dest == str(home / "models")  # the default folder, resolved against the working folder
        path = str(home / "models" / entry.file)
        assert state.config.model.path == path and state.spec.n_layer == 2
        assert screen.query_one("#model-path").value == path
        assert screen.query_one("#model-tabs").active == "tab-local"  # shown as if picked there
        info = Console(width=100, record=True, file=io.StringIO())
        info.print(screen.query_one("#model-info").content)
        assert "x070" in info.export_text()  # the spec table, as after picking the file by hand
        assert bar.percentage == 1 and "downloaded" in status_text(screen)
        assert not screen.query_one("#download-start").disabled
        assert recent_models()[0] == path
        assert screen.can_leave()


@pytest.mark.asyncio
async def test_a_failed_download_shows_the_message_and_hint(home, monkeypatch):
    def failing(hub_file, dest_dir=None, on_progress=None):
        raise DownloadError(f"not found (404): {hub_file.repo}/{hub_file.file}",
                            hint="check the repository and file name on the model page")

    monkeypatch.setattr(hub_download, "download_model", failing)
    state = WizardState()
    app = RwkvTuiApp(runs_root=home)
    async with app.run_test(size=(110, 40)) as pilot:
        screen, table = await open_download_tab(pilot, app, state)
        select_row(table, "rwkv7-g1d-0.1b")
        screen.query_one("#download-start").press()
        await wait_for(pilot, lambda: "404" in status_text(screen))
        assert "check the repository and file name" in status_text(screen)
        assert not screen.query_one("#download-start").disabled and state.spec is None

        # a source the catalogue has no location for: said before anything starts
        select_row(table, "rwkv7-world-0.1b")
        screen.query_one("#download-source").value = "modelscope"
        await pilot.pause()
        screen.query_one("#download-start").press()
        await wait_for(pilot, lambda: "no ModelScope location" in status_text(screen))
        assert "hf" in status_text(screen) and state.spec is None


@pytest.mark.asyncio
async def test_a_download_through_a_loopback_hub(home, hub, tiny, monkeypatch):  # noqa: F811
    hub.files["tiny.pth"] = tiny
    entry = CatalogEntry(name="tiny", family="test", parameters="0.0B", n_layer=2, n_embd=64,
                         file_size=len(tiny), ctx_len=512, date="", hf_repo=REPO, file="tiny.pth",
                         modelscope_repo="", sha256=hashlib.sha256(tiny).hexdigest())
    monkeypatch.setattr(hub_catalog, "load_catalog", lambda: [entry])
    state = WizardState()
    app = RwkvTuiApp(runs_root=home)
    async with app.run_test(size=(110, 40)) as pilot:
        screen, table = await open_download_tab(pilot, app, state)
        screen.query_one("#download-dir").value = ""  # the hub's cache (HF_HOME)
        screen.query_one("#download-start").press()
        await wait_for(pilot, lambda: state.spec is not None or "red" in status_text(screen))
        assert state.spec is not None, status_text(screen)
        assert state.config.model.path.startswith(str(home / "hf-home" / "hub"))
        assert Path(state.config.model.path).read_bytes() == tiny
        assert screen.query_one("#download-progress").percentage == 1
