"""The wizard as a newcomer meets it (issue 17 points 1, 5, 6, 7; issue 16's wizard parts): focus on
entry and Enter that goes on, GPU picking and the launch environment, settings proposed from the
data, fields flagged where they are, the time estimate, Home's keys."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from conftest import MATH_CHAT, wait_for, write_tiny_workspace

from rwkv_tui.app import RwkvTuiApp
from rwkv_tui.screens.wizard import WizardState, screen_for
from rwkv_tui.screens.wizard.proposals import (first_user_turns, padding_fill, propose_ctx_len,
                                               propose_epoch_steps, propose_from_data, propose_loading)
from rwkv_tui.screens.wizard.review import headless_command, node_commands
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.hardware import GpuInfo, HardwareReport

GB = 1024**3


def three_gpus() -> HardwareReport:
    return HardwareReport([GpuInfo(0, "NVIDIA A100 80GB", 80 * GB, 70 * GB, "560.35", "12.6", "8.0"),
                           GpuInfo(1, "NVIDIA A100 80GB", 80 * GB, 60 * GB, "560.35", "12.6", "8.0"),
                           GpuInfo(2, "NVIDIA A100 40GB", 40 * GB, 30 * GB, "560.35", "12.6", "8.0")],
                          cpu_count=16, source="nvml")


def screen_name(app) -> str:
    return type(app.screen).__name__


# ------------------------------------------------------------------------------------------- focus


@pytest.mark.slow
@pytest.mark.asyncio
async def test_model_path_typed_at_once_and_enter_moves_on(tmp_path):
    """No Tab first: the path field has the focus; Enter reads the model, then opens Hardware."""
    model, _ = write_tiny_workspace(tmp_path)
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(screen_for("model", state))
        await wait_for(pilot, lambda: screen_name(app) == "ModelScreen")
        await pilot.press(*str(model), "enter")
        await wait_for(pilot, lambda: screen_name(app) == "HardwareScreen")
        assert state.spec is not None and state.config.model.path == str(model)


@pytest.mark.asyncio
async def test_empty_model_path_says_not_set(tmp_path):
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(screen_for("model", WizardState()))
        await wait_for(pilot, lambda: screen_name(app) == "ModelScreen")
        await pilot.press("enter")
        info = str(app.screen.query_one("#model-info").render())
        assert "model path not set" in info and "is a directory" not in info
        await pilot.press("ctrl+n")  # Next says the same, and stays
        await pilot.pause()
        assert screen_name(app) == "ModelScreen"
        assert "model path not set" in str(app.screen.query_one("#model-info").render())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_data_path_typed_at_once_checks_proposes_and_enter_again_moves_on(tmp_path):
    model, data = write_tiny_workspace(tmp_path)
    state = WizardState()
    state.config.model.path = str(model)
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(screen_for("data", state))
        await wait_for(pilot, lambda: screen_name(app) == "DataScreen")
        await pilot.press(*str(data), "enter")
        await wait_for(pilot, lambda: state.check is not None and state.proposals)
        config = state.config
        # MATH_CHAT: 24 samples of ~15 tokens. ctx_len 64, pack (padding fills a fraction), and one
        # pass over the packed stream per epoch.
        assert config.data.ctx_len == 64 and config.data.loading == "pack"
        packed = (state.check.train_tokens - 1) // 64
        assert config.epochs.epoch_steps == packed
        assert config.output.sample_prompts == ["What is 0 plus 0?", "What is 0 plus 1?", "What is 0 plus 2?"]
        shown = str(app.screen.query_one("#data-proposals").render())
        assert "data.ctx_len = 64" in shown and "95% of the samples" in shown
        # passes per epoch drive epoch_steps
        passes = app.screen.query_one("#data-passes")
        passes.value = "3"
        await pilot.pause()
        assert config.epochs.epoch_steps == -(-packed * 3 // 1)
        app.screen.query_one("#data-path").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen_name(app) == "ParamsScreen")
        assert "proposed from the data" in str(app.screen.query_one(".param-proposed").render())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_demo_keeps_its_data_settings(tmp_path):
    """The Home screen's demo goes through the wizard: its steps and ctx_len, sized to teach the
    facts, must not be replaced by the proposals for ordinary data."""
    model, data = write_tiny_workspace(tmp_path)
    state = WizardState(keep_data_settings="the demo's steps are sized to teach its facts")
    state.config.model.path = str(model)
    state.config.data.ctx_len, state.config.epochs.epoch_steps = 32, 15
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(screen_for("data", state))
        await wait_for(pilot, lambda: screen_name(app) == "DataScreen")
        await pilot.press(*str(data), "enter")
        await wait_for(pilot, lambda: state.check is not None and state.check.ok)
        await pilot.pause()
        assert (state.config.data.ctx_len, state.config.epochs.epoch_steps, state.proposals) == (32, 15, [])
        assert "settings kept: the demo's steps" in str(app.screen.query_one("#data-proposals").render())


@pytest.mark.asyncio
async def test_every_step_focuses_its_main_input(tmp_path, monkeypatch):
    import rwkv_tui.trainer.hardware as hardware

    monkeypatch.setattr(hardware, "detect_hardware", lambda: three_gpus())
    expected = {"model": "model-path", "hardware": "gpus", "method": "methods", "data": "data-path",
                "params": "f-method-r", "review": "next"}
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30)) as pilot:
        for key, widget_id in expected.items():
            screen = screen_for(key, WizardState())
            app.push_screen(screen)
            await wait_for(pilot, lambda: app.screen is screen and screen.focused is not None)
            assert screen.focused.id == widget_id, key


# -------------------------------------------------------------------------------------------- GPUs


@pytest.mark.asyncio
async def test_hardware_step_picks_several_gpus(tmp_path, monkeypatch):
    import rwkv_tui.trainer.hardware as hardware

    monkeypatch.setattr(hardware, "detect_hardware", lambda: three_gpus())
    state = WizardState()
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(screen_for("hardware", state))
        await wait_for(pilot, lambda: state.hardware is not None)
        hw = state.config.hardware
        assert state.gpu_indices == [0] and hw.devices == 1 and hw.strategy == "auto"
        await pilot.press("down", "space", "down", "space")  # GPU 1 and 2 too
        assert state.gpu_indices == [0, 1, 2] and hw.devices == 3
        await pilot.press("up", "up", "space")  # not GPU 0
        assert state.gpu_indices == [1, 2] and hw.devices == 2 and hw.accelerator == "gpu"
        assert hw.strategy == "deepspeed_stage_1"  # proposed for several GPUs
        assert state.free_vram == 30 * GB  # the fit check: the smallest picked GPU
        assert state.visible_devices == "1,2"
        note = str(app.screen.query_one("#hardware-note").render())
        assert "CUDA_VISIBLE_DEVICES=1,2" in note and "deepspeed_stage_1" in note
        await pilot.press("down", "down", "space")  # back to GPU 1 only: our own proposal is undone
        assert state.gpu_indices == [1] and hw.devices == 1 and hw.strategy == "auto"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen_name(app) == "MethodScreen")


def test_launch_environment_limits_the_trainer_to_the_picked_gpus(tmp_path, monkeypatch):
    import subprocess

    from rwkv_tui import launch

    env = launch.launch_environment("1,2", base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert launch.launch_environment(None, base={"PATH": "/bin"}) == {"PATH": "/bin"}

    started = []

    class FakeProcess:
        pid = 4242

    def fake_popen(command, **kwargs):
        started.append((command, kwargs["env"]))
        return FakeProcess()

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    config = RunConfig.for_method("lora", model__path="/m.pth", data__path="/d.jsonl")
    run_dir = tmp_path / "run"
    launch.launch_training(config, run_dir, visible_devices="1,2")
    assert started[-1][1]["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert launch.saved_visible_devices(run_dir) == "1,2"
    (run_dir / "trainer.pid").unlink()  # the fake process is not alive: the folder is free again
    launch.launch_training(config, run_dir, resume=True)  # a resume runs on the same GPUs
    assert "--resume" in started[-1][0] and started[-1][1]["CUDA_VISIBLE_DEVICES"] == "1,2"


def test_trainer_fit_check_sees_only_the_visible_gpus(monkeypatch):
    """NVML lists every GPU whatever CUDA_VISIBLE_DEVICES says: the trainer's memory budget must not."""
    import rwkv_tui.trainer.hardware as hardware

    report = three_gpus()
    monkeypatch.setattr(hardware, "_from_nvml", lambda: report.gpus)
    assert hardware.visible_gpus(report.gpus, {"CUDA_VISIBLE_DEVICES": "2,1"}) == [report.gpus[2], report.gpus[1]]
    assert hardware.visible_gpus(report.gpus, {"CUDA_VISIBLE_DEVICES": "GPU-1234"}) == report.gpus
    assert hardware.visible_gpus(report.gpus, {}) == report.gpus
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    budget = hardware.memory_budget("gpu", 2, cuda_available=True)
    assert budget.gpu_free_bytes == 30 * GB and budget.device.startswith("GPU 2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert hardware.memory_budget("gpu", 1, cuda_available=True).gpu_free_bytes == 60 * GB


def test_headless_command_names_the_gpus_and_each_node():
    from rwkv_tui.commands.train import _load

    config = RunConfig.for_method("lora", model__path="/m/x.pth", data__path="/d/a.jsonl")
    config.hardware.devices, config.hardware.strategy = 2, "deepspeed_stage_1"
    config.output.sample_prompts = ["What is 1, then 2?", "Say hi"]
    command = headless_command(config, "1,2")
    assert command.startswith("CUDA_VISIBLE_DEVICES=1,2 CUDA_DEVICE_ORDER=PCI_BUS_ID rwkv-tui train ")
    argv = shlex.split(command)
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert _load(None, overrides) == config  # prompts with commas survive (as a JSON list)

    config.hardware.num_nodes = 3
    nodes = node_commands(config, "1,2", master_addr="10.0.0.5")
    assert len(nodes) == 3
    for rank, line in enumerate(nodes):
        assert line.startswith(f"MASTER_ADDR=10.0.0.5 MASTER_PORT=29500 NODE_RANK={rank} CUDA_VISIBLE_DEVICES=1,2 ")
        assert "hardware.num_nodes=3" in line


# ---------------------------------------------------------------------------- defaults from the data


def test_ctx_len_is_the_p95_rounded_up_and_capped_by_vram():
    assert propose_ctx_len(231).value == 256
    assert propose_ctx_len(256).value == 256 and propose_ctx_len(3).value == 64
    capped = propose_ctx_len(3000, fits=lambda ctx: ctx <= 1024, where=" of GPU 0 (8.0 GB)")
    assert capped.value == 1024 and "capped from 3,008" in capped.reason and "GPU 0" in capped.reason


def test_vram_cap_uses_the_smallest_picked_gpu():
    from rwkv_tui.screens.wizard.proposals import vram_fit_check
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(config=RunConfig.for_method("full"), spec=rwkv7_spec(24, 2048))
    state.hardware = three_gpus()
    state.gpu_indices = [0, 2]
    fits, where = vram_fit_check(state)
    assert "GPU 2" in where
    state.gpu_indices = [0]
    roomy, _ = vram_fit_check(state)
    assert not fits(4096) or roomy(4096)  # what fits 30 GB fits 70 GB
    assert propose_ctx_len(1 << 16, fits).value < propose_ctx_len(1 << 16, roomy).value
    state.hardware = HardwareReport([])  # CPU: nothing to cap by
    assert vram_fit_check(state) == (None, "")


def test_pack_only_for_short_samples_and_epoch_steps_formula():
    assert padding_fill([64], 64) == 1.0 and padding_fill([31], 63) == 0.5
    assert propose_loading([10] * 20, 64, "pad").value == "pack"
    assert propose_loading([60] * 20, 64, "pad") is None
    assert propose_loading([10] * 20, 64, "random") is None
    steps = propose_epoch_steps(29, passes=2, micro_bsz=4, gpus=2, accumulate=2, loading="pad")
    assert steps.value == 4 and "29 samples × 2 pass(es)" in steps.reason  # ceil(58 / 16)
    assert propose_epoch_steps(1, 1, 8, 8, 8, "pad").value == 1


def test_proposals_from_a_check_report(tmp_path):
    from rwkv_tui.trainer.data.check import check_jsonl

    texts = [f"User: Tell me about item {i}.\n\nAssistant: " + "word " * (200 + i) for i in range(40)]
    _, data = write_tiny_workspace(tmp_path, texts=texts)
    report = check_jsonl(data, ctx_len=1024)
    config = RunConfig.for_method("lora")
    config.data.micro_bsz = 2
    proposals = {p.field: p for p in propose_from_data(report, config, passes=1, prompts=["a", "b", "c"])}
    p95 = report.token_stats()["p95"]
    assert proposals["data.ctx_len"].value == -(-p95 // 64) * 64
    assert "data.loading" not in proposals  # long samples fill their windows: pad stays
    assert proposals["epochs.epoch_steps"].value == 20  # 40 samples ÷ 2
    assert proposals["output.sample_prompts"].value == ["a", "b", "c"]


def test_sample_prompts_are_first_user_turns():
    texts = ["User: hi there\n\nAssistant: hello", "Instruction: sum 1 and 2\n\nResponse: 3",
             "User: hi there\n\nAssistant: again", "plain text first line\nsecond line", "User: fourth"]
    assert first_user_turns(texts) == ["hi there", "Instruction: sum 1 and 2", "plain text first line"]
    assert first_user_turns(MATH_CHAT[:2], count=5) == ["What is 0 plus 0?", "What is 0 plus 1?"]


# ----------------------------------------------------------------------------- params, review, home


async def open_cpu_params(app, pilot):
    """The Parameters step of a LoRA run on a CPU-only machine, once its problem line is shown."""
    state = WizardState(config=RunConfig.for_method("lora", model__path="/m.pth", data__path="/d.jsonl"))
    state.hardware = HardwareReport([])
    state.config.hardware.accelerator, state.config.hardware.precision = "cpu", "fp32"
    screen = screen_for("params", state)
    app.push_screen(screen)
    await wait_for(pilot, lambda: app.screen is screen and screen.query("#param-problems"))
    return screen


@pytest.mark.asyncio
async def test_bad_field_is_outlined_with_its_message_beside_it(tmp_path):
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_cpu_params(app, pilot)
        await pilot.pause()
        assert "no problems" in str(screen.query_one("#param-problems").render())
        for selector, value in [("#f-optim-lr_init", "abc"), ("#f-epochs-epoch_steps", "0")]:
            screen.query_one(selector).value = value
        await pilot.pause()
        assert screen.query("#f-optim-lr_init.invalid") and screen.query("#f-epochs-epoch_steps.invalid")
        message = screen.query_one("#m-optim-lr_init")
        assert message.display and "'abc' is not a valid float" in str(message.render())
        assert "epoch_steps" not in str(message.render())
        assert screen.query_one("#m-epochs-epoch_steps").display
        assert not screen.query_one("#m-optim-lr_final").display
        assert "2 problem(s)" in str(screen.query_one("#param-problems").render())
        screen.query_one("#f-output-trackers").value = "tensorboard,nope"
        await pilot.pause()
        assert "'nope' is not a valid choice" in str(screen.query_one("#m-output-trackers").render())
        screen.query_one("#f-output-trackers").value = "tensorboard,mlflow"
        screen.query_one("#f-output-sample_prompts").value = "What is 1, then 2? | Say hi"
        screen.query_one("#f-optim-lr_init").value = "1e-4"
        screen.query_one("#f-epochs-epoch_steps").value = "10"
        await pilot.pause()
        assert not screen.query(".invalid")
        assert screen.state.config.output.trackers == ["tensorboard", "mlflow"]
        assert screen.state.config.output.sample_prompts == ["What is 1, then 2?", "Say hi"]
        screen.query_one("#f-optim-lr_init").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen_name(app) == "ReviewScreen")


@pytest.mark.asyncio
async def test_review_enter_saves_preset_time_estimate_and_no_vram_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))
    from rwkv_tui.trainer.model.init import rwkv7_spec

    state = WizardState(config=RunConfig.for_method("lora", model__path="/m.pth", data__path="/d.jsonl"),
                        spec=rwkv7_spec(2, 64, vocab_size=65536, head_size=16))
    state.config.output.proj_dir = str(tmp_path / "runs")
    state.hardware = HardwareReport([])
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = screen_for("review", state)
        app.push_screen(screen)
        await wait_for(pilot, lambda: any("no estimate yet" in str(w.render()) for w in screen.query("#review-time")))
        assert not screen.query("#review-vram")  # a CPU run: no GPU memory to estimate
        screen.query_one("#preset-name").focus()
        await pilot.press(*"my-recipe", "enter")
        await wait_for(pilot, lambda: (tmp_path / "config" / "presets" / "my-recipe.toml").exists())
        assert screen_name(app) == "ReviewScreen"  # Enter saved, it did not start the run
        screen.query_one("#next").focus()
        await pilot.press("escape")
        await pilot.pause()
        assert screen_name(app) != "ReviewScreen"

    state.hardware = three_gpus()
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = screen_for("review", state)
        app.push_screen(screen)
        await wait_for(pilot, lambda: app.screen is screen and screen.query("#review-time"))
        assert "estimated VRAM per GPU" in str(screen.query_one("#review-vram").render())


def test_time_estimate_from_an_earlier_run(tmp_path):
    from rwkv_tui.screens.wizard.timing import estimate_line, measured_throughput, run_tokens
    from rwkv_tui.trainer.config import save_config

    config = RunConfig.for_method("lora", model__path="/m.pth", data__path="/d.jsonl")
    config.hardware.accelerator, config.hardware.devices = "gpu", 2
    config.epochs.epoch_steps, config.data.ctx_len = 100, 512
    earlier = tmp_path / "runs" / "lora-1"
    earlier.mkdir(parents=True)
    ran = RunConfig.for_method("lora", model__path="/m.pth", data__path="/other.jsonl")
    ran.hardware.accelerator, ran.data.ctx_len = "gpu", 512
    save_config(ran, earlier / "config.toml")
    events = [{"kind": "start", "device": "cuda:0"}, {"kind": "step", "step": 1, "tokens_per_s": 900.0},
              {"kind": "step", "step": 2, "tokens_per_s": 1000.0}]
    (earlier / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    found = measured_throughput(config, [earlier], on_gpu=True)
    assert found is not None and found.tokens_per_s == 2000.0  # one GPU's 1000/s × 2 GPUs
    assert measured_throughput(config, [earlier], on_gpu=False) is None  # measured on a GPU, not the CPU
    config.data.ctx_len = 1024
    assert measured_throughput(config, [earlier], on_gpu=True) is None  # another size trains at another speed
    config.data.ctx_len = 512
    tokens = run_tokens(config)
    assert tokens == 100 * 2 * 512
    line = estimate_line(config, found)
    assert f"{tokens:,} tokens at 2,000 tokens/s" in line and "51 s" in line and str(earlier) in line


@pytest.mark.asyncio
async def test_home_keys_and_q_back(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        keys = {key for key, active in app.screen.active_bindings.items() if active.binding.show}
        assert {"n", "d", "r", "p", "q"} <= keys  # shown in the footer
        await pilot.press("p")
        await wait_for(pilot, lambda: screen_name(app) == "PresetsScreen")
        await pilot.press("q")
        await wait_for(pilot, lambda: screen_name(app) == "HomeScreen")
        await pilot.press("n")
        await wait_for(pilot, lambda: screen_name(app) == "ModelScreen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen_name(app) == "HomeScreen")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


@pytest.mark.asyncio
async def test_a_tracker_without_its_package_is_flagged_at_its_field(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "swanlab", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "swanlab"
                        else real_find_spec(name, *a))
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_cpu_params(app, pilot)
        screen.query_one("#f-output-trackers").value = "swanlab"
        await pilot.pause()
        assert screen.query("#f-output-trackers.invalid")
        assert "pip install 'rwkv-tui[swanlab]'" in str(screen.query_one("#m-output-trackers").render())
        assert not screen.can_leave()


@pytest.mark.asyncio
async def test_a_preset_asking_for_two_gpus_gets_the_first_two(tmp_path, monkeypatch):
    import rwkv_tui.trainer.hardware as hardware

    monkeypatch.setattr(hardware, "detect_hardware", lambda: three_gpus())
    state = WizardState()
    state.config.hardware.devices = 2
    app = RwkvTuiApp(runs_root=tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(screen_for("hardware", state))
        await wait_for(pilot, lambda: state.hardware is not None)
        assert state.gpu_indices == [0, 1] and state.config.hardware.devices == 2
        assert state.visible_devices == "0,1" and state.free_vram == 60 * GB
