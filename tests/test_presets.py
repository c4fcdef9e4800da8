"""Presets: built-ins load and validate, user presets save only changes, CLI list/show/export."""

from __future__ import annotations

import pytest

from rwkv_tui.trainer.config import RunConfig, load_config, validate
from rwkv_tui.trainer.errors import ConfigError
from rwkv_tui.trainer.presets import (
    delete_user_preset,
    duplicate_preset,
    list_presets,
    load_preset,
    save_user_preset,
)

BUILTINS = {"lora-rwkv7", "state-tuning", "qlora-nf4", "pissa", "miss", "full-small-model", "demo-cpu"}


@pytest.fixture(autouse=True)
def user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_CONFIG_DIR", str(tmp_path / "config"))


def test_builtin_presets_load_with_the_seeds_defaults():
    infos = {p.name: p for p in list_presets()}
    assert BUILTINS <= set(infos)
    assert all(p.description for p in infos.values())
    state = load_preset("state-tuning")
    assert state.method.name == "state" and state.optim.lr_init == 1.0 and state.data.ctx_len == 512
    assert load_preset("qlora-nf4").method.quant == "nf4"
    for name in BUILTINS:
        config = load_preset(name)
        config.model.path, config.data.path = "m.pth", "d.jsonl"
        problems = [p.field for p in validate(config, cuda_available=True)]
        assert problems == [], (name, problems)


def test_user_presets_save_duplicate_delete(tmp_path):
    config = RunConfig.for_method("state", epochs__epoch_count=4)
    path = save_user_preset("mine", config, "four epochs")
    assert "lr_init" not in path.read_text() and "epoch_count = 4" in path.read_text()
    assert load_preset("mine") == config
    with pytest.raises(ConfigError, match="exists"):
        save_user_preset("mine", config)
    duplicate_preset("state-tuning", "my-state")
    assert {"mine", "my-state"} <= {p.name for p in list_presets() if p.source == "user"}
    delete_user_preset("mine")
    with pytest.raises(ConfigError, match="no user preset"):
        delete_user_preset("lora-rwkv7")
    with pytest.raises(ConfigError, match="not a usable preset name"):
        save_user_preset("../evil", config)
    with pytest.raises(ConfigError, match="no preset named 'nope'"):
        load_preset("nope")


def test_presets_cli(tmp_path, capsys):
    from rwkv_tui.cli import main

    assert main(["presets", "list"]) == 0
    assert "state-tuning" in capsys.readouterr().out
    assert main(["presets", "show", "state-tuning"]) == 0
    shown = capsys.readouterr().out
    assert "lr_init = 1.0" in shown and "[hardware]" in shown
    assert main(["presets", "export", "miss", str(tmp_path / "m.toml")]) == 0
    assert load_config(tmp_path / "m.toml").method.r == 64
    assert main(["presets", "show", "nope"]) == 2
