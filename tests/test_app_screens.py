"""Presets and chat in the app."""

from __future__ import annotations

import pytest

from conftest import wait_for, write_tiny_checkpoint
from rwkv_tui.app import RwkvTuiApp


@pytest.mark.asyncio
async def test_presets_screen_duplicate_delete_and_load(tmp_path, monkeypatch):
    from rwkv_tui.screens.presets import PresetsScreen
    from rwkv_tui.trainer.presets import list_presets

    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path))
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(PresetsScreen())
        await pilot.pause()
        screen = app.screen
        names = [p.name for p in screen.presets]
        screen.query_one("DataTable").move_cursor(row=names.index("state-tuning"))
        await pilot.press("c")
        await wait_for(pilot, lambda: "state-tuning-copy" in {p.name for p in list_presets()})
        screen.query_one("DataTable").move_cursor(row=[p.name for p in screen.presets].index("state-tuning"))
        await pilot.press("delete")  # built-in: refused
        assert "state-tuning" in {p.name for p in list_presets()}
        screen.query_one("DataTable").move_cursor(row=[p.name for p in screen.presets].index("state-tuning-copy"))
        await pilot.press("delete")
        await wait_for(pilot, lambda: "state-tuning-copy" not in {p.name for p in list_presets()})
        screen.query_one("DataTable").move_cursor(row=[p.name for p in screen.presets].index("state-tuning"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelScreen")
        assert app.screen.state.config.method.name == "state" and app.screen.state.config.optim.lr_init == 1.0


@pytest.mark.asyncio
async def test_chat_screen_replies(tmp_path):
    from rwkv_tui.screens.chat import ChatScreen

    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=65536)
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ChatScreen(str(path), max_tokens=16))
        screen = app.screen
        await wait_for(pilot, lambda: screen.model is not None and not screen.query_one("#chat-input").disabled)
        screen.query_one("#chat-input").value = "Hello"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.history) == 1, timeout=60)
        assert screen.history[0][0] == "Hello"
