"""The VRAM estimator against the tutorials' tables, and its exact trainable-parameter counts."""

from __future__ import annotations

import math

from pathlib import Path

import pytest

from rwkv_tui.trainer.config import RunConfig, tomllib
from rwkv_tui.trainer.spec import ModelSpec
from rwkv_tui.trainer.vram import GB, estimate, render_table, trainable_parameter_count

SHAPES = {  # (version, n_layer, n_embd, ffn multiplier)
    "RWKV7-0.1B": ("x070", 12, 768, 4.0), "RWKV7-0.4B": ("x070", 24, 1024, 4.0),
    "RWKV7-1.5B": ("x070", 24, 2048, 4.0), "RWKV7-2.9B": ("x070", 32, 2560, 4.0),
    "RWKV6-1.6B": ("x060", 24, 2048, 3.5), "RWKV6-3B": ("x060", 32, 2560, 3.5),
    "RWKV6-7B": ("x060", 32, 4096, 3.5),
}
# The tables come from another trainer (RWKV-PEFT); the GPU benchmark recalibrates to ±10% of
# our own measurements. Its RWKV-6 LoRA rows quantize less than we assume (−36% at 7B nf4):
# only a GPU measurement of our own RWKV-6 runs can close that gap (issue 6).
TOLERANCE = {"x070": 0.25, "x060": 0.40}


def spec_for(name: str) -> ModelSpec:
    from rwkv_tui.trainer.model.init import rwkv6_spec, rwkv7_spec

    version, L, C, _ = SHAPES[name]
    return rwkv7_spec(L, C) if version == "x070" else rwkv6_spec(L, C)


def seed_rows():
    data = tomllib.loads((Path(__file__).parent / "data" / "seed_vram.toml").read_text())
    for row in data["row"]:
        for quant, gb in row["figures"].items():
            yield row["model"], row["method"], quant, gb


def config_for(method: str, quant: str) -> RunConfig:
    config = RunConfig.for_method(method, data__ctx_len=1024, data__micro_bsz=1,
                                  hardware__strategy="deepspeed_stage_1", hardware__grad_cp=True)
    config.method.quant = quant
    if method == "lora":
        config.method.r, config.method.alpha = 64, 32.0
    return config


@pytest.mark.parametrize("model,method,quant,seed_gb", list(seed_rows()))
def test_estimate_is_close_to_the_tutorial_tables(model, method, quant, seed_gb):
    got = estimate(spec_for(model), config_for(method, quant)).total / GB
    tolerance = TOLERANCE[SHAPES[model][0]]
    assert abs(got - seed_gb) / seed_gb <= tolerance, f"{model} {method} {quant}: {got:.2f} vs {seed_gb}"


def test_estimate_orders_make_sense():
    spec = spec_for("RWKV7-1.5B")
    lora = estimate(spec, config_for("lora", "none")).total
    assert estimate(spec, config_for("lora", "nf4")).total < estimate(spec, config_for("lora", "int8")).total < lora
    assert estimate(spec, config_for("full", "none")).total > 2 * lora
    no_cp = config_for("lora", "none")
    no_cp.hardware.grad_cp = False
    assert estimate(spec, no_cp).total > lora
    big_batch = config_for("lora", "none")
    big_batch.data.micro_bsz = 8
    assert estimate(spec, big_batch).total > lora
    breakdown = estimate(spec, config_for("lora", "none"))
    assert breakdown.fits(80 * GB) and not breakdown.fits(2 * GB)
    assert "total" in render_table(breakdown) and "logits" in render_table(breakdown)


def test_trainable_counts_are_exact():
    spec = spec_for("RWKV7-0.4B")
    C, F, L = 1024, 4096, 24
    lora = config_for("lora", "none").method
    assert trainable_parameter_count(spec, lora) == L * 64 * (4 * 2 * C + 2 * (C + F))
    state = RunConfig.for_method("state").method
    assert trainable_parameter_count(spec, state) == L * 16 * 64 * 64
    miss = RunConfig.for_method("miss", method__r=64).method
    assert trainable_parameter_count(spec, miss) == L * 64 * (4 * C + F + C)
    assert trainable_parameter_count(spec, RunConfig.for_method("full").method) == spec.n_params


def print_error_table():  # pragma: no cover - run by hand: python -c "import tests.test_vram as t; t.print_error_table()"
    for model, method, quant, seed_gb in seed_rows():
        got = estimate(spec_for(model), config_for(method, quant)).total / GB
        print(f"{model:<11} {method:<5} {quant:<4} seed {seed_gb:5.1f}  ours {got:5.2f}  {100 * (got / seed_gb - 1):+5.0f}%")
    assert math.isfinite(got)
