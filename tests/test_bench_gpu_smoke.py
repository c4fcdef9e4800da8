"""The GPU benchmarks' code paths, run on the CPU with tiny shapes (their --smoke mode), in-process.

The CPU is forced even where a GPU exists, so the expected rows are the same everywhere."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` is not an installed package

from bench import gpu_kernels, gpu_trainer  # noqa: E402
from bench.seeds_vram import SEEDS_VRAM_GB, seeds_gb  # noqa: E402
from rwkv_tui.kernels.dispatch import OPS, OpEntry  # noqa: E402
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked  # noqa: E402


def _load(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["machine"]["device"] and data["date"] and data["versions"]["torch"]
    return data


def test_kernel_benchmark_smoke(tmp_path):
    # A wrong op and a broken one must show up as such, not vanish or stop the run.
    def wrong(r, w, k, v, a, b, state):
        y, s = wkv7_chunked(r, w, k, v, a, b, state)
        return y * 1.5, s

    def broken(*_):
        raise RuntimeError("does not compile here")

    def everywhere(device, dtype):
        return None

    ops = (*OPS, OpEntry("bench_wrong", 0, everywhere, {"wkv7": wrong}),
           OpEntry("bench_broken", 0, everywhere, {"wkv7": broken}))
    path = gpu_kernels.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)], ops=ops)
    assert path.parent == tmp_path
    data = _load(path)
    assert data["command"].startswith("python3 bench/gpu_kernels.py --smoke")
    rows = {row["op"]: row for row in data["rows"]}
    assert set(rows) == {"torch_chunked", "torch_sequential", "bench_wrong", "bench_broken"}
    for op in ("torch_chunked", "torch_sequential", "bench_wrong"):
        row = rows[op]
        assert row["status"] == "ok"
        for key in ("fwd_ms", "fwd_bwd_ms", "tokens_per_s", "fwd_bwd_GBps", "fwd_bwd_TFLOPs", "speedup"):
            assert row[key] > 0 and math.isfinite(row[key]), (op, key)
        assert math.isfinite(row["rel_err"]) and math.isfinite(row["max_err_y"])
    assert rows["torch_chunked"]["rel_err"] == 0 and rows["torch_chunked"]["speedup"] == 1
    assert rows["torch_sequential"]["rel_err"] < 1e-2  # the two torch references agree
    assert rows["bench_wrong"]["rel_err"] > 0.2  # fast-but-wrong is visible
    assert rows["bench_broken"]["status"].startswith("failed: RuntimeError: does not compile here")


@pytest.mark.slow
def test_trainer_benchmark_smoke(tmp_path):
    path = gpu_trainer.main(["--smoke", "--micro-bsz", "1,2", "--peak-tflops", "1", "--device", "cpu",
                             "--out", str(tmp_path)])
    data = _load(path)
    rows = data["rows"]
    assert [(r["method"], r["bsz"]) for r in rows] == [(m, b) for m in gpu_trainer.METHODS for b in (1, 2)]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and row["step_s"] > 0 and row["setup_s"] > 0
        assert math.isfinite(row["loss_first"]) and math.isfinite(row["loss_last"])
        assert row["est_gb"] > 0 and row["flops_per_token"] > 0
        assert 0 < row["mfu"] < 1  # 1 TFLOP/s "peak" is far above what a tiny CPU run reaches
        assert 0 < row["trainable_params"] <= row["total_params"]
        assert row["wkv_op"] == "torch_chunked"
    by_method = {r["method"]: r for r in rows if r["bsz"] == 1}
    assert by_method["full"]["flops_per_token"] > by_method["lora"]["flops_per_token"] > \
        by_method["state"]["flops_per_token"]
    assert by_method["full"]["trainable_params"] == by_method["full"]["total_params"]


def test_trainer_benchmark_records_failing_rows(tmp_path):
    # op=cuda cannot run on the CPU: the row says so and the run goes on.
    row = _load(gpu_trainer.main(["--smoke", "--methods", "state", "--micro-bsz", "1", "--op", "cuda",
                                  "--device", "cpu", "--out", str(tmp_path)]))["rows"][0]
    assert row["status"].startswith("error: ") and "cuda" in row["status"]
    assert row["est_gb"] > 0 and "tokens_per_s" not in row


def test_seed_figures_and_row_options():
    assert SEEDS_VRAM_GB[("1.5B", "lora-nf4")] == 3.9
    assert seeds_gb("0.1B", "lora", 1024, 1) == 2.7
    assert seeds_gb("0.1B", "lora", 1024, 8) is None and seeds_gb("0.1B", "full", 1024, 1) is None
    args = gpu_trainer.parse_args(["--long-full"])
    assert (args.models, args.methods, args.ctx_len, args.micro_bsz) == ("1.5B", "full", "4096", "1")
    spec = gpu_trainer.model_spec("1.5B", smoke=False)
    assert (spec.n_layer, spec.n_embd, spec.vocab_size) == (24, 2048, 65536)
    full = gpu_trainer.make_config("full", 1024, 1, gpu_trainer.parse_args([]))
    # 6·M (+ the recurrence) for a full fine-tune of ~1.5B: ~9 GFLOP per token
    assert 8e9 < gpu_trainer.flops_per_token(spec, full) < 1.1e10
