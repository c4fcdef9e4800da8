"""Each fine-tuning method knows its own facts (file names, merging, quantization, what the chat
loads) and takes its settings from the run's MethodConfig; the UI reads those facts without torch."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import wait_for, write_tiny_checkpoint
from rwkv_tui.trainer.config import METHODS, RunConfig, save_config, validate
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.peft import METHOD_CLASSES, build_method
from rwkv_tui.trainer.peft.catalog import MERGED_FILE, METHOD_INFO, ChatTarget, method_info
from rwkv_tui.trainer.peft.lora import LoraMethod

# Written out here rather than derived, so a changed file name fails a test.
OUTPUT_SUFFIXES = {"full": "-model.pth", "lisa": "-model.pth", "state": "-state.pth",
                   "lora": "-lora.pth", "pissa": "-pissa.pth", "miss": "-miss.pth"}
QUANTIZABLE = {"lora", "pissa", "miss", "state"}
MERGED_AT_THE_END = {"lora", "pissa", "miss"}


def test_every_method_class_points_at_its_catalog_entry():
    assert tuple(METHOD_INFO) == METHODS == tuple(METHOD_CLASSES)
    for name, cls in METHOD_CLASSES.items():
        assert cls.info is METHOD_INFO[name]
        assert build_method(RunConfig.for_method(name).method).name == name


@pytest.mark.parametrize("name", METHODS)
def test_method_facts(name):
    info = method_info(name)
    assert info.output_suffix == OUTPUT_SUFFIXES[name]
    assert info.output_file("epoch2") == f"epoch2{OUTPUT_SUFFIXES[name]}"
    assert info.supports_quantization == (name in QUANTIZABLE)
    assert info.produces_merged_model == (name in MERGED_AT_THE_END)


def test_an_unknown_method_is_a_config_error_listing_the_methods():
    with pytest.raises(ConfigError, match="unknown method") as exc:
        method_info("qlora")
    assert "lora" in exc.value.hint
    config = RunConfig.for_method("lora")
    config.method.name = "qlora"
    with pytest.raises(ConfigError, match="unknown method"):
        build_method(config.method)


@pytest.mark.parametrize("name", METHODS)
def test_quantization_rule_agrees_everywhere(name):
    """The config check, the method builder and the wizard's table all follow `supports_quantization`."""
    from rwkv_tui.screens.wizard.method import method_rows
    from rwkv_tui.screens.wizard.state import WizardState
    from rwkv_tui.trainer.model.init import rwkv7_spec

    config = RunConfig.for_method(name, method__quant="int8")
    flagged = any(p.field == "method.quant" for p in validate(config, bitsandbytes_available=True))
    assert flagged == (name not in QUANTIZABLE)
    if name in QUANTIZABLE:
        assert build_method(config.method).quant == "int8"
    else:
        with pytest.raises(ConfigError, match="cannot be quantized"):
            build_method(config.method)
    rows = method_rows(WizardState(spec=rwkv7_spec(2, 64)), ctx_len=64, micro_bsz=1)
    quants = {r["quant"] for r in rows if r["method"] == name}
    assert quants == ({"none", "int8", "nf4"} if name in QUANTIZABLE else {"none"})


@pytest.mark.parametrize("cls", list(METHOD_CLASSES.values()), ids=list(METHOD_CLASSES))
def test_constructors_repeat_no_defaults_and_swallow_nothing(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # after self
    assert [p.name for p in parameters] == ["settings", "seed"]
    assert all(p.default is inspect.Parameter.empty for p in parameters)
    assert all(p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)


def test_settings_come_from_the_method_config():
    lora = build_method(RunConfig.for_method("lora", method__r=8, method__alpha=3.0, method__dropout=0.2,
                                             method__targets=["att.key"]).method, seed=5)
    assert (lora.r, lora.alpha, lora.dropout, lora.targets, lora.seed) == (8, 3.0, 0.2, ["att.key"], 5)
    pissa = build_method(RunConfig.for_method("pissa", method__r=8, method__alpha=3.0, method__svd_niter=2).method)
    assert (pissa.r, pissa.alpha, pissa.dropout, pissa.svd_niter) == (8, 8.0, 0.0, 2)  # PiSSA is never scaled
    lisa = build_method(RunConfig.for_method("lisa", method__lisa_r=3, method__lisa_k=7).method)
    assert (lisa.lisa_r, lisa.lisa_k) == (3, 7)
    miss = build_method(RunConfig.for_method("miss", method__r=16, method__quant="nf4").method)
    assert (miss.r, miss.quant, miss.targets) == (16, "nf4", RunConfig().method.targets)


def test_merge_needs_no_method_instance():
    g = torch.Generator().manual_seed(0)
    base = {"blocks.0.att.key.weight": torch.randn(6, 5, generator=g)}
    a, b = torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g)
    adapter = {"blocks.0.att.key.lora_A": a, "blocks.0.att.key.lora_B": b}
    merged = LoraMethod.merge(base, adapter, {"alpha": 4.0})
    torch.testing.assert_close(merged["blocks.0.att.key.weight"], base["blocks.0.att.key.weight"] + b @ a * 2.0)


@pytest.mark.parametrize("name", METHODS)
def test_outputs_are_named_and_merged_by_the_method(tmp_path, name):
    from rwkv_tui.trainer.model import load_model
    from rwkv_tui.trainer.training.outputs import finish_outputs, save_method_output

    path, spec = write_tiny_checkpoint(tmp_path, n_layer=2, n_embd=64, vocab_size=256, head_size=16)
    config = RunConfig.for_method(name, model__path=str(path), method__r=8, method__lisa_r=1)
    model = load_model(path)
    method = build_method(config.method)
    method.apply(model)
    saved = save_method_output(model, method, spec, config, tmp_path, "epoch1")
    assert [p.name for p in saved] == [f"epoch1{OUTPUT_SUFFIXES[name]}"] and saved[0].exists()
    merged = finish_outputs(config, saved, tmp_path)
    assert [p.name for p in merged] == ([MERGED_FILE] if name in MERGED_AT_THE_END else [])


def test_chat_target_follows_the_method():
    base = "/models/base.pth"
    assert method_info("full").chat_target(["/r/epoch1-model.pth"], base) == ChatTarget("/r/epoch1-model.pth")
    assert method_info("state").chat_target(["/r/a-state.pth", "/r/b-state.pth"], base) == \
        ChatTarget(base, state="/r/b-state.pth")
    assert method_info("miss").chat_target(["/r/final-miss.pth"], base) == ChatTarget(base, adapter="/r/final-miss.pth")
    merged = f"/r/{MERGED_FILE}"
    assert method_info("lora").chat_target(["/r/final-lora.pth", merged], base) == ChatTarget(merged)


@pytest.mark.asyncio
async def test_dashboard_chats_with_what_the_method_says(tmp_path, monkeypatch):
    from textual.screen import Screen

    import rwkv_tui.screens.chat
    from rwkv_tui.app import RwkvTuiApp
    from test_dashboard import finished_run

    opened = []

    class RecordingChat(Screen):
        def __init__(self, model_path, adapter=None, state=None):
            super().__init__()
            opened.append((model_path, adapter, state))

    monkeypatch.setattr(rwkv_tui.screens.chat, "ChatScreen", RecordingChat)
    folder = finished_run(tmp_path / "run")  # lora checkpoints /x/epoch{1,2,3}-lora.pth
    save_config(RunConfig.for_method("lora", model__path="/models/base.pth"), folder.config)
    app = RwkvTuiApp(attach=folder.path, runs_root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.view.state == "done")
        await pilot.press("c")
        await wait_for(pilot, lambda: opened)
    assert opened == [("/models/base.pth", "/x/epoch3-lora.pth", None)]


def test_the_ui_reads_method_facts_without_torch():
    code = ("import sys; import rwkv_tui.screens.dashboard, rwkv_tui.screens.wizard.method, "
            "rwkv_tui.trainer.peft.catalog; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
