"""Walk the wizard end to end on CPU with the demo model: model → … → Start → dashboard to done."""

from __future__ import annotations


import pytest

from conftest import wait_for

from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.screens.dashboard import DashboardScreen
from rwkv_tui.screens.wizard.method import best_choice, method_rows
from rwkv_tui.screens.wizard.review import headless_command
from rwkv_tui.screens.wizard.state import WizardState
from rwkv_tui.trainer.config import RunConfig, apply_overrides
from rwkv_tui.trainer.demo import create_demo, demo_texts


async def type_into(pilot, app, selector: str, text: str) -> None:
    field = app.screen.query_one(selector)
    field.value = ""
    field.focus()
    await pilot.press(*text)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_wizard_walk_from_model_to_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))
    ws = create_demo(tmp_path / "demo")
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")  # Home: "New fine-tune"
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelScreen")
        await type_into(pilot, app, "#model-path", str(tmp_path / "missing.pth"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "file not found" in str(app.screen.query_one("#model-info").render()))
        state = app.screen.state
        await type_into(pilot, app, "#model-path", str(ws.model))
        await pilot.press("enter")  # reads the model, then goes on by itself

        await wait_for(pilot, lambda: type(app.screen).__name__ == "HardwareScreen")
        assert state.spec.n_layer == 2
        from rwkv_tui.recent import recent_models

        assert recent_models() == [str(ws.model)]
        await wait_for(pilot, lambda: state.hardware is not None)
        await pilot.press("enter")  # the GPU table (or the CPU note) has the focus: Enter goes on

        await wait_for(pilot, lambda: type(app.screen).__name__ == "MethodScreen")
        await type_into(pilot, app, "#ctx-len", "64")
        assert state.config.method.name == "lora" and state.config.data.ctx_len == 64
        await pilot.press("ctrl+n")

        await wait_for(pilot, lambda: type(app.screen).__name__ == "DataScreen")
        await type_into(pilot, app, "#data-path", str(ws.data))
        await pilot.press("enter")
        await wait_for(pilot, lambda: state.check is not None)
        assert state.check.ok and state.check.samples == len(demo_texts())
        assert state.config.output.sample_prompts  # proposed from the data
        await pilot.press("enter")  # the checked file: Enter again goes on

        await wait_for(pilot, lambda: type(app.screen).__name__ == "ParamsScreen")
        await type_into(pilot, app, "#f-optim-lr_init", "abc")
        assert app.screen.query("#f-optim-lr_init.invalid")
        for selector, value in [("#f-optim-lr_init", "0.01"), ("#f-optim-lr_final", "0.001"),
                                ("#f-epochs-epoch_steps", "8"), ("#f-output-proj_dir", str(tmp_path / "runs")),
                                ("#f-hardware-grad_cp", "false")]:
            await type_into(pilot, app, selector, value)
        assert state.config.epochs.epoch_steps == 8 and state.config.optim.lr_init == 0.01
        await pilot.press("ctrl+n")

        await wait_for(pilot, lambda: type(app.screen).__name__ == "ReviewScreen")
        await type_into(pilot, app, "#preset-name", "from-wizard")
        await pilot.click("#save-preset")
        assert (tmp_path / "config" / "presets" / "from-wizard.toml").exists()
        await pilot.press("ctrl+n")  # Start

        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        dashboard = app.screen
        await wait_for(pilot, lambda: dashboard.view.state in ("done", "failed", "crashed"), timeout=180)
        assert dashboard.view.state == "done", dashboard.view.log
        assert len(dashboard.view.loss) == 8 and dashboard.view.checkpoints


def test_method_table_preselects_what_fits():
    from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(spec=rwkv7_spec(24, 2048))  # a 1.5B shape
    state.hardware = HardwareReport([GpuInfo(0, "small", 8 * 1024**3, 4 * 1024**3)])
    rows = method_rows(state, ctx_len=1024, micro_bsz=1)
    assert {r["method"] for r in rows} == {"full", "lora", "pissa", "miss", "lisa", "state"}
    best = best_choice(rows)
    # bf16 LoRA needs ~6 GB; in 4 GB free LoRA still fits over a quantized base (QLoRA).
    assert best["method"] == "lora" and best["quant"] != "none" and best["fits"]
    state.hardware = HardwareReport([GpuInfo(0, "big", 80 * 1024**3, 79 * 1024**3)])
    assert (best_choice(method_rows(state, 1024, 1))["method"], best_choice(method_rows(state, 1024, 1))["quant"]) \
        == ("lora", "none")
    state.hardware = HardwareReport([GpuInfo(0, "tiny", 2 * 1024**3, 1 * 1024**3)])
    nothing_fits = best_choice(method_rows(state, 1024, 1))
    assert (nothing_fits["method"], nothing_fits["quant"], nothing_fits["fits"]) == ("state", "none", False)


def test_headless_command_reproduces_the_config():
    import shlex

    from rwkv_tui.commands.train import _load

    config = apply_overrides(RunConfig.for_method("state"), ["model.path=/m/x.pth", "data.path=/d/a b.jsonl",
                                                             "method.targets=att.key", "hardware.grad_cp=false"])
    argv = shlex.split(headless_command(config))
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert _load(None, overrides) == config


@pytest.mark.asyncio
async def test_stop_on_a_live_run_leaves_a_checkpoint(tmp_path):
    from rwkv_tui.launch import launch_training
    from rwkv_tui.trainer.config import load_config

    ws = create_demo(tmp_path / "demo")
    config = load_config(ws.config)
    config.epochs.epoch_steps, config.epochs.epoch_count = 500, 1
    config.output.sample_prompts = []  # the stop is tested here: no decoding of the demo's samples first
    run_dir = tmp_path / "runs" / "live"
    launch_training(config, run_dir)
    app = RwkvTuiApp(attach=run_dir, runs_root=tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        dashboard = app.screen
        await wait_for(pilot, lambda: dashboard.view.step >= 2, timeout=90)
        await pilot.press("s")
        await pilot.press("s")
        await wait_for(pilot, lambda: dashboard.view.state == "stopped", timeout=90)
        stopped_at = dashboard.view.step
    files = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "resume.ckpt" in files and f"step{stopped_at}-lora.pth" in files
