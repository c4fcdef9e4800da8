"""The wizard's data step with several files (issue 15, points 3 and 4): each file checked, then
added with its repeat count; a preset's path list; Prepare over all of them; the preview shows the
converted text with the trained part highlighted."""

from __future__ import annotations

import json

import pytest

from conftest import wait_for
from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.screens.wizard import WizardState, screen_for
from rwkv_tui.screens.wizard.data import TRAINED_STYLE, mix_prefix, parse_repeat, preview_text
from rwkv_tui.trainer.config import DataSource, RunConfig

CHAT = ["User: hi %d\n\nAssistant: hello %d" % (i, i) for i in range(4)]
GENERAL = ["General text %d." % i for i in range(3)]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def styled(text) -> list[tuple[str, str]]:
    return [(text.plain[span.start:span.end], str(span.style)) for span in text.spans]


def test_preview_highlights_what_is_trained():
    sample = "User: hi\n\nAssistant: hello <think>why</think> there"
    trained = [part for part, style in styled(preview_text(sample)) if style == TRAINED_STYLE]
    assert trained == [" hello <think>why</think> there"]  # the answer, think block and all
    assert preview_text(sample, loss_mask="none").style == TRAINED_STYLE  # every token is learned
    assert preview_text("plain text").style == TRAINED_STYLE


def test_repeat_and_prefix_helpers():
    assert [parse_repeat(v) for v in ("3", "", " 2 ", "0", "x", "10001")] == [3, 1, 2, None, None, None]
    assert mix_prefix([DataSource("/d/chat.jsonl")]) == "/d/chat"
    assert mix_prefix([DataSource("/d/chat.parquet", 2), DataSource("/e/g.csv")]) == "/d/chat-mix"


async def add(pilot) -> None:
    await pilot.click("#add-source")
    await pilot.pause(0.3)  # a button ignores presses while it shows the last one


async def check(pilot, screen, state, path):
    screen.query_one("#data-path").value = str(path)
    screen.run_check(str(path))
    await wait_for(pilot, lambda: state.check is not None and state.check.path == str(path), timeout=30)


@pytest.mark.asyncio
async def test_several_files_each_with_its_repeat_then_prepared_together(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        app.push_screen(screen_for("data", state))
        await pilot.pause()
        screen = app.screen
        await add(pilot)  # nothing checked yet: nothing added
        assert state.config.data.sources == []

        await check(pilot, screen, state, chat)
        assert state.config.data.path == str(chat)
        screen.query_one("#data-repeat").value = "0"
        await add(pilot)
        assert state.config.data.sources == []  # not a repeat count
        screen.query_one("#data-repeat").value = "3"
        await add(pilot)
        assert state.config.data.sources == [DataSource(str(chat), 3)] and state.config.data.path == ""
        assert screen.query_one("#data-path").value == "" and screen.query_one("#data-repeat").value == "1"

        await check(pilot, screen, state, general)
        assert state.config.data.path == ""  # with several files, a checked file joins them by Add
        assert not screen.can_leave()  # typed and checked, but not added
        await add(pilot)
        assert state.config.data.sources == [DataSource(str(chat), 3), DataSource(str(general), 1)]
        assert "chat.jsonl ×3" in str(screen.query_one("#data-sources").render())
        assert screen.can_leave()

        await pilot.click("#prepare")
        await wait_for(pilot, lambda: state.config.data.data_type == "binidx", timeout=60)
        assert state.config.data.path == str(tmp_path / "chat-mix") and state.config.data.sources == []
        from rwkv_tui.trainer.data.binidx import BinIdx

        assert len(BinIdx(tmp_path / "chat-mix")) == 3 * len(CHAT) + len(GENERAL)


@pytest.mark.asyncio
async def test_a_preset_path_list_becomes_files_and_a_bad_file_is_not_added(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n', encoding="utf-8")
    config = RunConfig()
    config.data.path = [str(chat)]
    config.data.sources = [DataSource(str(chat), 2)]
    state = WizardState(config=config)
    app = RwkvTuiApp(runs_root=tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        app.push_screen(screen_for("data", state))
        await pilot.pause()
        screen = app.screen
        assert state.config.data.path == ""
        assert state.config.data.sources == [DataSource(str(chat), 1), DataSource(str(chat), 2)]
        await check(pilot, screen, state, bad)
        assert not state.check.ok
        await add(pilot)
        assert len(state.config.data.sources) == 2
