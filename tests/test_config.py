"""RunConfig: seeds' defaults per method, TOML presets with only the changes, overrides, validation."""

from __future__ import annotations

import pytest

from rwkv_tui.trainer.config import (
    RunConfig,
    SECTION_CHECKS,
    SECTIONS,
    ValidationFacts,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    ensure_valid,
    field_choices,
    field_help,
    iter_fields,
    load_config,
    save_config,
    validate,
)
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.spec import ModelSpec


def test_defaults_follow_the_seeds():
    lora = RunConfig.for_method("lora")
    assert (lora.method.r, lora.method.alpha, lora.method.dropout) == (32, 64.0, 0.01)
    assert lora.optim.lr_init == lora.optim.lr_final == 2e-5
    state = RunConfig.for_method("state")
    assert (state.optim.lr_init, state.optim.lr_final, state.optim.warmup_steps) == (1.0, 0.01, 10)
    assert state.data.ctx_len == 512
    assert (lora.optim.beta1, lora.optim.beta2, lora.optim.adam_eps) == (0.9, 0.99, 1e-8)
    assert lora.hardware.precision == "bf16" and lora.hardware.grad_cp


def test_every_field_has_help():
    for dotted, _ in iter_fields():
        assert len(field_help(dotted)) > 10, dotted
    assert field_choices("method.name") == ("full", "lora", "pissa", "miss", "lisa", "state")


def test_presets_store_only_changes_and_round_trip(tmp_path):
    config = RunConfig.for_method("state", data__path="chat.jsonl", epochs__epoch_count=3)
    path = save_config(config, tmp_path / "p.toml", header={"description": "mine"})
    text = path.read_text()
    assert "lr_init" not in text and "epoch_count = 3" in text and 'name = "state"' in text
    assert "description" in text
    assert load_config(path) == config
    assert config_to_dict(config, only_changes=True) == {"method": {"name": "state"},
                                                          "data": {"path": "chat.jsonl"},
                                                          "epochs": {"epoch_count": 3}}
    full = save_config(config, tmp_path / "full.toml", only_changes=False)
    assert load_config(full) == config


def test_unknown_keys_get_a_suggestion(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[optim]\nlr_int = 1e-4\n')
    with pytest.raises(ConfigError, match="unknown setting 'optim.lr_int'") as exc:
        load_config(bad)
    assert "optim.lr_init" in exc.value.hint
    bad.write_text('[optimizer]\nlr_init = 1e-4\n')
    with pytest.raises(ConfigError, match="unknown section") as exc:
        load_config(bad)
    assert "[optim]" in exc.value.hint
    bad.write_text('[optim\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_loading_reports_every_problem_at_once():
    data = {"optimizer": {"lr_init": 1e-4},                 # unknown section
            "data": {"ctx_length": 2048, "ctx_len": 512},   # unknown setting beside a good one
            "epochs": {"epoch_count": "three"},             # wrong type
            "method": {"name": "lora", "quant": "int4"}}    # not one of the choices
    with pytest.raises(ConfigError, match=r"4 problem\(s\)") as exc:
        config_from_dict(data, source="mine.toml")
    text = str(exc.value)
    assert text.startswith("mine.toml: 4 problem(s)")
    for line in ["optimizer: unknown section [optimizer] — did you mean [optim]?",
                 "data.ctx_length: unknown setting 'data.ctx_length' — did you mean 'data.ctx_len'?",
                 "epochs.epoch_count: 'three' is not a valid int — e.g. epochs.epoch_count=1",
                 "method.quant: 'int4' is not a valid choice — choose from: none, int8, nf4"]:
        assert line in text, text


def test_a_single_loading_problem_keeps_its_own_message_and_hint():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"method": {"name": "qlora"}, "data": {"ctx_len": 256}})
    assert (exc.value.field, exc.value.message) == ("method.name", "'qlora' is not a valid choice")
    assert "lora" in exc.value.hint
    with pytest.raises(ConfigError, match=r"\[hardware\] must be a table") as exc:
        config_from_dict({"hardware": 1})
    assert exc.value.field == "hardware" and "[hardware] header" in exc.value.hint


def test_overrides_are_typed():
    config = apply_overrides(RunConfig(), ["optim.lr_init=1e-4", "hardware.grad_cp=false", "data.ctx_len=2048",
                                           "method.targets=att.key, att.value", "method.alpha=16"])
    assert config.optim.lr_init == 1e-4 and config.hardware.grad_cp is False and config.data.ctx_len == 2048
    assert config.method.targets == ["att.key", "att.value"] and config.method.alpha == 16.0
    for bad, match in [("data.ctx_len=big", "not a valid int"), ("hardware.grad_cp=maybe", "not a valid bool"),
                       ("method.quant=int4", "not a valid choice"), ("optim.lr=1", "unknown setting"),
                       ("noequals", "KEY=VALUE"), ("method.targets=att.foo", "not a valid choice")]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(RunConfig(), [bad])


def test_changing_the_method_rebases_its_defaults_but_keeps_edits():
    config = RunConfig.for_method("lora", optim__beta1=0.8)
    state = apply_overrides(config, ["method.name=state"])
    assert state.optim.lr_init == 1.0 and state.data.ctx_len == 512 and state.optim.beta1 == 0.8
    both = apply_overrides(config, ["optim.lr_init=0.5", "method.name=state"])
    assert both.optim.lr_init == 0.5


def test_validation_returns_every_problem_at_once():
    config = RunConfig.for_method("full", method__quant="nf4", optim__lr_init=-1.0, data__micro_bsz=0,
                                  hardware__strategy="deepspeed_stage_2", hardware__op="cuda",
                                  hardware__precision="fp32")
    fields = {p.field for p in validate(config, cuda_available=False)}
    assert {"model.path", "data.path", "method.quant", "optim.lr_init", "data.micro_bsz",
            "hardware.strategy", "hardware.op"} <= fields
    with pytest.raises(ConfigError, match=r"problem\(s\)") as exc:
        ensure_valid(config, cuda_available=False)
    assert "method.quant" in str(exc.value) and "hardware.strategy" in str(exc.value)


def test_each_section_check_reports_only_its_own_section():
    config = RunConfig.for_method("state", model__path="", data__path="", method__lisa_k=0, data__micro_bsz=0,
                                  epochs__epoch_save=0, optim__beta1=1.5, hardware__devices=0,
                                  hardware__precision="fp16")
    facts = ValidationFacts(cuda_available=False)
    reported = {check.__name__: {p.field for p in check(config, facts)} for check in SECTION_CHECKS}
    for section in SECTIONS:
        if f"{section}_problems" in reported:
            fields = reported[f"{section}_problems"]
            assert fields and all(f.split(".")[0] == section for f in fields), (section, fields)
    assert reported["cross_section_problems"] == {"hardware.precision"}  # state tuning in fp16
    assert reported["field_type_problems"] == set()
    assert sum(len(check(config, facts)) for check in SECTION_CHECKS) == len(validate(config, cuda_available=False))


def test_model_dependent_checks():
    spec = ModelSpec("x070", 2, 64, 4, 16, 256, 256)
    lisa = RunConfig.for_method("lisa", model__path="m.pth", data__path="d.jsonl", method__lisa_r=3)
    assert [p.field for p in validate(lisa, spec)] == ["method.lisa_r"]
    miss = RunConfig.for_method("miss", model__path="m.pth", data__path="d.jsonl", method__r=48)
    assert [p.field for p in validate(miss, spec)] == ["method.r"]
    ok = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl", hardware__precision="fp32")
    assert validate(ok, spec, cuda_available=False) == []
    cuda = RunConfig.for_method("lora", model__path="m.pth", data__path="d.jsonl", hardware__op="cuda",
                                data__ctx_len=100, hardware__precision="fp32")
    assert validate(cuda, spec) == []  # any ctx_len, fp32 too
    wide = ModelSpec("x070", 2, 256, 2, 128, 256, 256)
    assert [p.field for p in validate(cuda, wide)] == ["hardware.op"]


def test_kernel_head_sizes_mirror_the_kernels():
    from rwkv_tui.kernels import chunk_state_pass, wkv7_cuda, wkv7_triton
    from rwkv_tui.trainer.config import KERNEL_HEAD_SIZES

    assert KERNEL_HEAD_SIZES == {"cuda": wkv7_cuda.SUPPORTED_HEAD_SIZES, "triton": wkv7_triton.SUPPORTED_HEAD_SIZES,
                                 "triton_chunked": chunk_state_pass.SUPPORTED_HEAD_SIZES}
