"""The seeds' (user tutorials') VRAM figures for RWKV-7 fine-tunes, in GB, as printed there.

Only numbers that appear in /work/shared/seeds/*.txt (the project's copy of the tutorials); the
trainer benchmark divides its measured peak by them (target: ≤ 0.8). For RWKV-7 the seeds give
LoRA figures only; their RWKV-6 tables (LoRA/PiSSA, state tuning) are in tests/data/seed_vram.toml.
"""

from __future__ import annotations

# (model, benchmark method) -> GB. Seed 003_9ba7887006c20073.txt, "LoRA VRAM Reference", tab RWKV-7
# (columns bf16 / int8 / nf4). Its settings: ctxlen=1024, micro_bsz=1, strategy=deepspeed_stage_1,
# peft_config r=64, lora_alpha=32, lora_dropout=0.05 (RWKV-PEFT).
SEEDS_VRAM_GB: dict[tuple[str, str], float] = {
    ("0.1B", "lora"): 2.7, ("0.1B", "lora-int8"): 2.5, ("0.1B", "lora-nf4"): 2.4,  # 003_9ba7887006c20073.txt
    ("0.4B", "lora"): 3.4, ("0.4B", "lora-int8"): 2.9, ("0.4B", "lora-nf4"): 2.7,  # 003_9ba7887006c20073.txt
    ("1.5B", "lora"): 5.6, ("1.5B", "lora-int8"): 4.6, ("1.5B", "lora-nf4"): 3.9,  # 003_9ba7887006c20073.txt
    ("2.9B", "lora"): 8.8, ("2.9B", "lora-int8"): 6.7, ("2.9B", "lora-nf4"): 5.7,  # 003_9ba7887006c20073.txt
}
SEEDS_SETTINGS = {"ctx_len": 1024, "micro_bsz": 1, "lora_r": 64, "lora_alpha": 32.0}

# Rough, generation-agnostic full fine-tune needs, seed 004_ec4940bc426c8162.txt ("显存消耗估计":
# "1.5b : 15gb", "3b : 24gb", "7b : 48gb", "14b : 80gb"; "只是简单估计", no ctx_len given). Reported
# alongside full fine-tune rows for context only, never used for the ≤ 0.8 target.
SEEDS_ROUGH_FULL_GB: dict[str, float] = {
    "1.5B": 15.0,  # 004_ec4940bc426c8162.txt "1.5b : 15gb"
    "2.9B": 24.0,  # 004_ec4940bc426c8162.txt "3b : 24gb" (the nearest size the seed lists)
}


def seeds_gb(model: str, method: str, ctx_len: int, micro_bsz: int) -> float | None:
    """The seeds' figure for this benchmark row, or None when they give none for its settings."""
    if ctx_len != SEEDS_SETTINGS["ctx_len"] or micro_bsz != SEEDS_SETTINGS["micro_bsz"]:
        return None
    return SEEDS_VRAM_GB.get((model, method))
