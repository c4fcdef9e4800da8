"""The dashboard of a finished run merges and exports it: Export shows only once the run has ended,
each target builds the right command line, its output streams in, and failures show."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import wait_for
from test_dashboard import T0, live_run, write_events

from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.run_view import RunView
from rwkv_tui.screens.dashboard import DashboardScreen
from rwkv_tui.screens.export import (ExportScreen, RunOutputs, build_argv, default_output, parse_progress,
                                     read_run_outputs, stream_lines, targets_for, version_of)
from rwkv_tui.trainer.config import RunConfig, save_config
from rwkv_tui.trainer.errors import RwkvTuiError
from rwkv_tui.trainer.training.folder import RunFolder

RWKV7 = "RWKV-7 1.2M (L2 C64)"
RWKV6 = "RWKV-6 1.2M (L2 C64)"


def ended_run(path: Path, method: str = "lora", model: str = RWKV7, files: list[str] | None = None,
              outputs: list[str] | None = None, base: str = "/models/base.pth") -> RunFolder:
    """A run folder that finished: config.toml, a start, two checkpoints and a done event."""
    folder = RunFolder.at(path).create()
    config = RunConfig.for_method(method)
    config.model.path = base
    save_config(config, folder.config)
    files = files if files is not None else [str(path / "checkpoints" / f"epoch{i}-{method}.pth") for i in (1, 2)]
    events = [{"t": T0, "kind": "start", "step": 0, "total_steps": 2, "model": model, "method": method,
               "device": "cpu"}]
    events += [{"t": T0 + i, "kind": "checkpoint", "step": i, "files": [f]} for i, f in enumerate(files, 1)]
    events.append({"t": T0 + 3, "kind": "done", "reason": "finished", "step": 2, "outputs": outputs or files})
    write_events(folder, events)
    folder.write_status(state="done", step=2)
    return folder


def fake_cli(tmp_path: Path, exit_code: int = 0) -> tuple[tuple[str, ...], Path]:
    """A stand-in for `python -m rwkv_tui`: records its argv, prints progress, then succeeds or fails
    the way the real CLI does (`wrote OUT` / `error: … hint: …` on stderr, exit 2)."""
    record = tmp_path / "argv.json"
    script = tmp_path / "fake_cli.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        json.dump(sys.argv[1:], open({str(record)!r}, "w"))
        flag = next((f for f in ("--hf", "--gguf", "--ai00") if f in sys.argv), None)
        out = sys.argv[sys.argv.index(flag) + 1] if flag else sys.argv[4]
        print("loading model", flush=True)
        sys.stdout.write("tensor 1/4\\rtensor 2/4\\r"); sys.stdout.flush()
        print("50%", flush=True)
        if {exit_code}:
            print("error: " + out + ": output exists", file=sys.stderr)
            print("  hint: choose another name or pass --force", file=sys.stderr)
            sys.exit({exit_code})
        print("wrote " + out, flush=True)
    """))
    return (sys.executable, str(script)), record


def footer_keys(screen) -> set[str]:
    return set(screen.active_bindings)


async def open_export(pilot, app) -> ExportScreen:
    dashboard = app.screen
    await wait_for(pilot, lambda: dashboard.view.state == "done")
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
    await pilot.pause()
    return app.screen


def result_text(screen: ExportScreen) -> str:
    return str(screen.query_one("#export-result").render())


# --- facts and command lines -------------------------------------------------------------------------


def run_outputs(method="lora", version="x070", newest="/r/checkpoints/epoch2-lora.pth", merged=None):
    return RunOutputs(run_dir=Path("/r"), base_model="/m/base.pth", method=method, version=version,
                      newest=newest, merged=merged)


def available(run: RunOutputs) -> dict[str, bool]:
    return {t.key: t.available for t in targets_for(run)}


def test_an_adapter_run_offers_every_target_and_exports_through_the_base():
    run = run_outputs()
    assert available(run) == {"merged": True, "hf": True, "gguf": True, "ai00": True}
    cli = ("py", "-m", "rwkv_tui")
    assert build_argv(run, "merged", "/r/export/r-merged.pth", cli=cli) == [
        *cli, "merge", "/m/base.pth", "/r/checkpoints/epoch2-lora.pth", "/r/export/r-merged.pth"]
    assert build_argv(run, "gguf", "/o.gguf", outtype="q8_0", force=True, cli=cli) == [
        *cli, "export", "/m/base.pth", "--adapter", "/r/checkpoints/epoch2-lora.pth", "--gguf", "/o.gguf",
        "--outtype", "q8_0", "--force"]
    merged = run_outputs(merged="/r/checkpoints/final-merged.pth")
    assert not available(merged)["merged"]
    assert build_argv(merged, "hf", "/o", cli=cli) == [*cli, "export", "/r/checkpoints/final-merged.pth", "--hf", "/o"]
    assert build_argv(merged, "ai00", "/o.st", cli=cli)[4:] == ["/r/checkpoints/final-merged.pth", "--ai00", "/o.st"]


def test_a_full_run_exports_its_model_and_has_nothing_to_merge():
    run = run_outputs(method="full", newest="/r/checkpoints/epoch2-model.pth")
    targets = {t.key: t for t in targets_for(run)}
    assert not targets["merged"].available and "nothing to merge" in targets["merged"].reason
    assert build_argv(run, "hf", "/o", cli=("x",)) == ["x", "export", "/r/checkpoints/epoch2-model.pth", "--hf", "/o"]


def test_an_rwkv7_state_run_offers_only_the_ai00_state_and_says_why():
    run = run_outputs(method="state", newest="/r/checkpoints/epoch2-state.pth")
    targets = {t.key: t for t in targets_for(run)}
    assert {k for k, t in targets.items() if t.available} == {"ai00"}
    assert "load the state file itself" in targets["merged"].reason
    assert build_argv(run, "ai00", "/o.st", cli=("x",)) == ["x", "export", "/r/checkpoints/epoch2-state.pth",
                                                            "--ai00", "/o.st"]


def test_an_rwkv6_state_run_merges_but_has_no_rwkv7_formats():
    run = run_outputs(method="state", version="x060", newest="/r/checkpoints/epoch2-state.pth")
    targets = {t.key: t for t in targets_for(run)}
    assert {k for k, t in targets.items() if t.available} == {"merged", "ai00"}
    assert "RWKV-7 formats" in targets["gguf"].reason and "x060" in targets["gguf"].reason
    merged = run_outputs(method="state", version="x060", merged="/r/export/r-merged.pth",
                         newest="/r/checkpoints/epoch2-state.pth")
    # Ai00 loads a state file next to its base: the state itself is exported even after a merge.
    assert build_argv(merged, "ai00", "/o.st", cli=("x",))[2] == "/r/checkpoints/epoch2-state.pth"


def test_default_outputs_stay_inside_the_run_folder():
    run_dir = Path("/runs/lora-1")
    assert default_output(run_dir, "merged") == run_dir / "export" / "lora-1-merged.pth"
    assert default_output(run_dir, "hf") == run_dir / "export" / "lora-1-hf"
    assert default_output(run_dir, "gguf", "q8_0") == run_dir / "export" / "lora-1-q8_0.gguf"
    assert default_output(run_dir, "ai00", state=True) == run_dir / "export" / "lora-1-state.st"


def test_progress_lines_and_carriage_returns_are_read():
    assert parse_progress("converting  42%|████") == pytest.approx(0.42)
    assert parse_progress("tensor 3/12 blocks.0.att") == pytest.approx(0.25)
    assert parse_progress("wrote /x/y.gguf") is None and parse_progress("12/4") is None
    assert list(stream_lines(io.BytesIO(b"a\r\nb\rc\n\nd"))) == ["a", "b", "c", "d"]
    assert version_of(RWKV7) == "x070" and version_of(RWKV6) == "x060" and version_of("?") is None


def test_the_outputs_come_from_the_run_folder(tmp_path):
    merged = tmp_path / "run" / "checkpoints" / "final-merged.pth"
    folder = ended_run(tmp_path / "run", outputs=[str(tmp_path / "run/checkpoints/epoch2-lora.pth"), str(merged)])
    view = RunView()
    for line in folder.events.read_text().splitlines():
        view.apply(json.loads(line))
    run = read_run_outputs(folder, view)
    assert (run.method, run.base_model, run.version) == ("lora", "/models/base.pth", "x070")
    assert run.newest.endswith("epoch2-lora.pth") and run.merged is None  # listed, but not on disk
    merged.parent.mkdir(parents=True, exist_ok=True)
    merged.write_bytes(b"x")
    assert read_run_outputs(folder, view).merged == str(merged)
    folder.config.unlink()
    with pytest.raises(RwkvTuiError, match="no config.toml"):
        read_run_outputs(folder, view)


def test_the_start_events_version_decides_over_the_display_name(tmp_path):
    folder = ended_run(tmp_path / "run", model="a community fine-tune")  # a name that says nothing
    view = RunView()
    for line in folder.events.read_text().splitlines():
        view.apply(json.loads(line))
    assert read_run_outputs(folder, view).version is None  # an older run: nothing to go by
    view.apply({"t": T0, "kind": "start", "step": 0, "total_steps": 2, "model": "a community fine-tune",
                "version": "x060", "method": "lora", "device": "cpu"})
    assert read_run_outputs(folder, view).version == "x060"


# --- the dashboard and the dialog ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_export_shows_in_the_footer_only_once_the_run_has_ended(tmp_path):
    with live_run(tmp_path / "live", total_steps=2, model=RWKV7, method="lora") as (folder, writer, _):
        app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen.view.state == "running")
            # Live, no checkpoint yet: Stop applies, Export and Chat do not (the footer shows what applies)
            assert "e" not in footer_keys(screen) and "c" not in footer_keys(screen) and "s" in footer_keys(screen)
            await pilot.press("e")
            await pilot.pause()
            assert app.screen is screen  # nothing opens while the trainer still writes
            writer.emit("done", reason="finished", step=2, outputs=[])
            await wait_for(pilot, lambda: screen.view.state == "done")
            await pilot.pause()
            assert "e" in footer_keys(screen)


@pytest.mark.asyncio
async def test_a_merge_streams_its_output_and_reports_what_it_wrote(tmp_path, monkeypatch):
    cli, record = fake_cli(tmp_path)
    monkeypatch.setattr(DashboardScreen, "export_cli", cli)
    folder = ended_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        out = folder.path / "export" / "run-merged.pth"
        assert screen.selected == "merged" and screen.query_one("#export-out").value == str(out)
        assert not screen.query_one("#outtype-row").display
        await pilot.click("#export-run")
        await wait_for(pilot, lambda: "wrote" in result_text(screen))
        assert json.loads(record.read_text()) == ["merge", "/models/base.pth", str(folder.path / "checkpoints" /
                                                                                     "epoch2-lora.pth"), str(out)]
        assert result_text(screen) == f"wrote {out}"
        assert screen.lines == ["loading model", "tensor 1/4", "tensor 2/4", "50%", f"wrote {out}"]
        assert screen.query_one("#export-progress").percentage == 1.0
        assert out.parent.is_dir()  # the export folder is made for the command
        assert screen.query_one("#target-merged").disabled  # merged now: exports start from it
        assert screen.run.merged == str(out)


@pytest.mark.asyncio
async def test_gguf_takes_the_chosen_outtype_and_force(tmp_path, monkeypatch):
    cli, record = fake_cli(tmp_path)
    monkeypatch.setattr(DashboardScreen, "export_cli", cli)
    folder = ended_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        await pilot.click("#target-gguf")
        await pilot.pause()
        assert screen.selected == "gguf" and screen.query_one("#outtype-row").display
        screen.query_one("#export-outtype").value = "q8_0"
        await pilot.pause()
        out = folder.path / "export" / "run-q8_0.gguf"
        assert screen.query_one("#export-out").value == str(out)
        screen.query_one("#export-force").value = True
        screen.start()
        await wait_for(pilot, lambda: "wrote" in result_text(screen))
        adapter = str(folder.path / "checkpoints" / "epoch2-lora.pth")
        assert json.loads(record.read_text()) == ["export", "/models/base.pth", "--adapter", adapter, "--gguf",
                                                  str(out), "--outtype", "q8_0", "--force"]


@pytest.mark.asyncio
async def test_a_failing_command_shows_its_error_and_hint(tmp_path, monkeypatch):
    cli, record = fake_cli(tmp_path, exit_code=2)
    monkeypatch.setattr(DashboardScreen, "export_cli", cli)
    folder = ended_run(tmp_path / "run")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        await pilot.click("#target-hf")
        await pilot.pause()
        screen.start()
        await wait_for(pilot, lambda: "failed" in result_text(screen))
        text = result_text(screen)
        assert text.startswith("failed (exit 2):") and "output exists" in text and "pass --force" in text
        assert json.loads(record.read_text())[-2:] == ["--hf", str(folder.path / "export" / "run-hf")]
        assert not screen.query_one("#export-run").disabled  # it can be run again, e.g. with --force
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))


@pytest.mark.asyncio
async def test_an_rwkv7_state_run_offers_the_ai00_state_only(tmp_path, monkeypatch):
    cli, record = fake_cli(tmp_path)
    monkeypatch.setattr(DashboardScreen, "export_cli", cli)
    folder = ended_run(tmp_path / "run", method="state")
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        assert screen.selected == "ai00"
        assert all(screen.query_one(f"#target-{k}").disabled for k in ("merged", "hf", "gguf"))
        assert "load the state file itself" in str(screen.query_one("#export-why").render())
        screen.start()
        await wait_for(pilot, lambda: "wrote" in result_text(screen))
        assert json.loads(record.read_text()) == ["export", str(folder.path / "checkpoints" / "epoch2-state.pth"),
                                                  "--ai00", str(folder.path / "export" / "run-state.st")]


@pytest.mark.asyncio
async def test_a_run_without_config_says_so(tmp_path):
    folder = ended_run(tmp_path / "run")
    folder.config.unlink()
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        dashboard = app.screen
        await wait_for(pilot, lambda: dashboard.view.state == "done")
        await pilot.press("e")
        await pilot.pause()
        assert app.screen is dashboard
        assert any("no config.toml" in str(n.message) for n in app._notifications)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_real_merge_command_runs_from_the_dashboard(tmp_path):
    import torch

    from test_training_run import CHAT
    from conftest import write_tiny_checkpoint
    from rwkv_tui.trainer.training.loop import run

    model_path, _ = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=65536, head_size=16)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in CHAT))
    config = RunConfig.for_method("lora")
    config.model.path, config.data.path = str(model_path), str(data)
    config.data.ctx_len, config.data.micro_bsz, config.data.loading = 32, 2, "pad"
    config.epochs.epoch_steps, config.epochs.epoch_count = 2, 1
    config.hardware.accelerator, config.hardware.precision, config.hardware.strategy = "cpu", "fp32", "auto"
    config.hardware.grad_cp = False
    result = run(config, tmp_path / "run")
    trainer_merged = next(p for p in result.outputs if p.name == "final-merged.pth")
    expected = torch.load(trainer_merged, map_location="cpu")
    trainer_merged.unlink()  # so the dialog offers the merge itself

    app = RwkvTuiApp(attach=tmp_path / "run", runs_root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        assert screen.selected == "merged"
        screen.start()
        await wait_for(pilot, lambda: "wrote" in result_text(screen) or "failed" in result_text(screen), timeout=120)
        out = tmp_path / "run" / "export" / "run-merged.pth"
        assert result_text(screen).startswith(f"wrote {out}"), screen.lines
    merged = torch.load(out, map_location="cpu")
    assert merged.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(merged[key].float(), tensor.float(), atol=2e-2, rtol=2e-2)
