"""Training speed, MFU and VRAM of our trainer on a GPU, against the VRAM estimator and the seeds.

Rows: RWKV-7 shapes 0.1B (L12 C768), 0.4B (L24 C1024), 1.5B (L24 C2048), 2.9B (L32 C2560) with
random weights (vocab 65536) × methods lora, pissa, state, full, lora-int8, lora-nf4 × ctx_len
1024 × micro_bsz 1 and 8; grad_cp on, bf16, strategy auto, op auto, LoRA/PiSSA rank 64 (alpha 32,
the seeds' LoRA settings). Each row builds the model, method and optimizer with the trainer's own
trainer.training.setup.build_training and steps with the loop's accumulate_gradients and
optimizer_step, runs --warmup-steps untimed steps and --steps timed optimizer steps on random
tokens, then frees everything.

Measured per row:
* tokens_per_s: micro_bsz·ctx_len·steps / wall time of the timed steps (each ends in loss.item());
* peak_alloc_gb / peak_reserved_gb: torch.cuda.max_memory_allocated / max_memory_reserved over
  the whole row (model build, method, steps), reset between rows;
* peak_device_gb: what nvidia-smi would show at the peak: (total − free) at the end of the row
  − memory_reserved() now + max_memory_reserved, i.e. CUDA context + the allocator's peak;
* mfu: tokens_per_s × model FLOPs per token / the device's peak dense bf16 FLOP/s, with
  M = n_params − vocab·n_embd (the parameters of matrix products; the embedding is a lookup) and
    full:                 6·M            (forward 2M, backward to activations 2M, to weights 2M)
    lora / pissa:         4·M + 6·P      (the frozen base: forward and backward to activations;
                                          P = adapter parameters, trained in full)
    state (and others):   4·M
  plus the WKV recurrence, 27·N² per head per layer per token (see bench/gpu_kernels.py). The
  recomputation that gradient checkpointing adds is not credited (it is MFU, not HFU). Peaks:
  H100 SXM / H200 989 TFLOP/s, H100 PCIe 756, A100 312; any other device needs --peak-tflops;
* est_gb: trainer.vram.estimate(spec, config).total and its relative errors against the peaks
  (est_err_* = estimate / measured − 1; est_err is against peak_device_gb, the figure the
  estimate models: it includes the CUDA context);
* seeds_gb: the tutorials' figure for the same row where they give one (bench/seeds_vram.py; RWKV-7
  LoRA at ctx_len 1024, micro_bsz 1 only) and vs_seeds = peak_device_gb / seeds_gb (target ≤ 0.8).
Out-of-memory rows are recorded as status OOM, other failures as "error: …". The JSON is
rewritten after every row, so a run cut short by a time limit keeps what it measured.

On the GPU machine (each row takes ~10-60 s, mostly building random weights; cut runs to fit
10-minute calls with --models/--methods/--micro-bsz/--rows-limit/--rows-offset):

    python3 bench/gpu_trainer.py --models 0.1B,0.4B --out "$OUT"
    python3 bench/gpu_trainer.py --models 1.5B,2.9B --micro-bsz 1 --out "$OUT"
    python3 bench/gpu_trainer.py --models 0.1B,0.4B,1.5B,2.9B
    python3 bench/gpu_trainer.py --long-full          # full fine-tune of 1.5B at ctx_len 4096 (MFU target)

CPU smoke test of the code paths (2 layers, n_embd 64, vocab 256, T 32, seconds):
    python bench/gpu_trainer.py --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import (
    add_device_options,
    comma_list,
    default_smoke_folder,
    print_table,
    run_facts,
    save_result,
)
from bench.seeds_vram import SEEDS_ROUGH_FULL_GB, seeds_gb

if TYPE_CHECKING:
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.spec import ModelSpec

GB = 1024**3
MODELS = {"0.1B": (12, 768), "0.4B": (24, 1024), "1.5B": (24, 2048), "2.9B": (32, 2560)}
# benchmark method -> (RunConfig method.name, method.quant)
METHODS = {"lora": ("lora", "none"), "pissa": ("pissa", "none"), "state": ("state", "none"),
           "full": ("full", "none"), "lora-int8": ("lora", "int8"), "lora-nf4": ("lora", "nf4")}
# Dense bf16 tensor-core peaks, TFLOP/s; the first name found in the device's name wins.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]
WKV_TRAIN_FLOPS = 27  # × N² per head per layer per token (forward + backward of the recurrence)
COLUMNS = ["model", "method", "bsz", "ctx", "status", "tokens_per_s", "mfu", "peak_alloc_gb",
           "peak_reserved_gb", "peak_device_gb", "est_gb", "est_err", "seeds_gb", "vs_seeds"]


def model_spec(name: str, smoke: bool) -> ModelSpec:
    from rwkv_tui.trainer.model.init import rwkv7_spec

    if smoke:
        return rwkv7_spec(2, 64, vocab_size=256, head_size=16, d_decay=8, d_aaa=8, d_mv=4, d_gate=16)
    n_layer, n_embd = MODELS[name]
    return rwkv7_spec(n_layer, n_embd, vocab_size=65536)


def make_config(method: str, ctx_len: int, micro_bsz: int, args: argparse.Namespace) -> RunConfig:
    from rwkv_tui.trainer.config import RunConfig

    name, quant = METHODS[method]
    config = RunConfig.for_method(name, data__ctx_len=ctx_len, data__micro_bsz=micro_bsz,
                                  hardware__grad_cp=True, hardware__precision=args.precision,
                                  hardware__strategy="auto", hardware__op=args.op)
    config.method.quant = quant
    if name in ("lora", "pissa"):
        config.method.r = args.lora_r
    if name == "lora":
        config.method.alpha = args.lora_alpha
    return config


def flops_per_token(spec: ModelSpec, config: RunConfig) -> float:
    """Model FLOPs of one trained token (see the module docstring)."""
    from rwkv_tui.trainer.vram import trainable_parameter_count

    matmul = spec.n_params - spec.vocab_size * spec.n_embd
    wkv = WKV_TRAIN_FLOPS * spec.n_layer * spec.n_head * spec.head_size**2
    name = config.method.name
    if name == "full":
        return 6 * matmul + wkv
    adapter = trainable_parameter_count(spec, config.method) if name in ("lora", "pissa") else 0
    return 4 * matmul + 6 * adapter + wkv


def device_peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def train_steps(spec: ModelSpec, state_dict: dict[str, torch.Tensor], config: RunConfig, device: torch.device,
                steps: int, warmup: int) -> dict:
    """A run's own construction (trainer.training.setup) and step (accumulate_gradients,
    optimizer_step, method.on_step), on random tokens."""
    from rwkv_tui.trainer.training.loop import accumulate_gradients, optimizer_step
    from rwkv_tui.trainer.training.setup import build_training, fabric_unwrap, make_fabric

    data = config.data
    begin = time.perf_counter()
    config.hardware.accelerator = "gpu" if device.type == "cuda" else "cpu"
    fabric = make_fabric(config)
    training = build_training(config, state_dict, spec, fabric)
    model, optimizer, method = training.model, training.optimizer, training.method
    model.train()
    setup_s = time.perf_counter() - begin

    generator = torch.Generator(device=fabric.device).manual_seed(1)

    def random_batches():
        while True:
            tokens = torch.randint(0, spec.vocab_size, (data.micro_bsz, data.ctx_len + 1), device=fabric.device,
                                   generator=generator)
            yield {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:],
                   "loss_mask": torch.ones(tokens[:, 1:].shape, device=fabric.device)}

    batches = random_batches()
    losses, start = [], 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        losses.append(accumulate_gradients(fabric, model, batches, data.accumulate_grad_batches))
        optimizer_step(fabric, model, optimizer, config.optim.grad_clip)
        method.on_step(model, step + 1)
    elapsed = time.perf_counter() - start
    out = {"setup_s": setup_s, "step_s": elapsed / steps,
           "tokens_per_s": steps * data.micro_bsz * data.accumulate_grad_batches * data.ctx_len / elapsed,
           "loss_first": losses[0], "loss_last": losses[-1], "trainable_params": training.trainable,
           "total_params": training.total, "wkv_op": fabric_unwrap(model).last_wkv_op}
    if device.type == "cuda":
        free, capacity = torch.cuda.mem_get_info(device)
        peak_reserved = torch.cuda.max_memory_reserved(device)
        out.update(peak_alloc_gb=torch.cuda.max_memory_allocated(device) / GB,
                   peak_reserved_gb=peak_reserved / GB,
                   peak_device_gb=(capacity - free - torch.cuda.memory_reserved(device) + peak_reserved) / GB,
                   device_total_gb=capacity / GB)
    return out


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_row(model_name: str, spec: ModelSpec, state_dict: dict[str, torch.Tensor], method: str, ctx_len: int,
              micro_bsz: int, args: argparse.Namespace, device: torch.device, peak_tflops: float | None) -> dict:
    from rwkv_tui.trainer.vram import estimate

    config = make_config(method, ctx_len, micro_bsz, args)
    row: dict = {"model": model_name, "method": method, "bsz": micro_bsz, "ctx": ctx_len,
                 "n_params": spec.n_params, "precision": args.precision, "grad_cp": True,
                 "lora_r": config.method.r if config.method.name in ("lora", "pissa") else None,
                 "est_gb": estimate(spec, config).total / GB,
                 "flops_per_token": flops_per_token(spec, config), "peak_tflops": peak_tflops}
    free_memory(device)
    if device.type == "cuda":
        free, capacity = torch.cuda.mem_get_info(device)
        row["baseline_device_gb"] = (capacity - free) / GB  # CUDA context and leftovers before the row
    try:
        # A fresh copy per row, as a real run loads its checkpoint: PiSSA rewrites the base weights in place.
        weights = {k: v.clone() for k, v in state_dict.items()}
        row.update(train_steps(spec, weights, config, device, args.steps, args.warmup_steps), status="ok")
    except Exception as error:  # noqa: BLE001 - an OOM or failing row is recorded, the run goes on
        oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
        row["status"] = "OOM" if oom else f"error: {type(error).__name__}: {error}"[:300]
    weights = None
    free_memory(device)
    if device.type == "cuda":  # what the row left behind (should be ~0: every row starts clean)
        row["leftover_alloc_gb"] = torch.cuda.memory_allocated(device) / GB
    if row["status"] == "ok":
        if peak_tflops:
            row["mfu"] = row["tokens_per_s"] * row["flops_per_token"] / (peak_tflops * 1e12)
        for key in ("peak_alloc_gb", "peak_reserved_gb", "peak_device_gb"):
            if row.get(key):
                row["est_err" + key.removeprefix("peak").removesuffix("_gb")] = row["est_gb"] / row[key] - 1
        row["est_err"] = row.get("est_err_device")
    seed = seeds_gb(model_name, method, ctx_len, micro_bsz)
    if seed is not None:
        row["seeds_gb"] = seed
        if row.get("peak_device_gb"):
            row["vs_seeds"] = row["peak_device_gb"] / seed
    if method == "full" and model_name in SEEDS_ROUGH_FULL_GB and ctx_len == 1024 and micro_bsz == 1:
        row["seeds_rough_full_gb"] = SEEDS_ROUGH_FULL_GB[model_name]
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of " + ", ".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    parser.add_argument("--micro-bsz", default=None, help="comma list (default 1,8)")
    parser.add_argument("--ctx-len", default="1024", help="comma list")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per row")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (op=auto's trial, "
                                                                    "kernel compilation, allocator warm-up)")
    parser.add_argument("--rows-limit", type=int, default=None, help="run at most this many rows")
    parser.add_argument("--rows-offset", type=int, default=0, help="skip this many rows of the grid first")
    parser.add_argument("--long-full", action="store_true",
                        help="only the issue's third target: full fine-tune of 1.5B at ctx_len 4096 (micro_bsz 1)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense bf16 TFLOP/s, for MFU on devices not in the table")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32", "tf32"))
    parser.add_argument("--op", default="auto", help="hardware.op (auto, torch, cuda, triton)")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--lora-alpha", type=float, default=32.0)
    add_device_options(parser, smoke_help="CPU-sized: 2 layers, n_embd 64, vocab 256, ctx_len 32, "
                                          "rank 8, 1+1 steps")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be at least 1 and --warmup-steps at least 0")
    default_smoke_folder(args)
    if args.long_full:
        args.models, args.methods, args.ctx_len = "1.5B", "full", "4096"
        args.micro_bsz = args.micro_bsz or "1"
    if args.smoke:
        args.models, args.ctx_len, args.lora_r, args.steps, args.warmup_steps = "tiny", "32", 8, 1, 1
        args.micro_bsz = args.micro_bsz or "1,2"
    args.micro_bsz = args.micro_bsz or "1,8"
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    device = torch.device(args.device)
    peak = device_peak_tflops(device, args.peak_tflops)
    if peak is None and device.type == "cuda":
        print(f"no peak FLOP/s known for {torch.cuda.get_device_name(device)}: pass --peak-tflops for MFU")
    for method in comma_list(args.methods):
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    for model in comma_list(args.models):
        if model not in MODELS and not args.smoke:
            raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    grid = [(m, meth, int(ctx), int(bsz)) for m in comma_list(args.models) for meth in comma_list(args.methods)
            for ctx in comma_list(args.ctx_len) for bsz in comma_list(args.micro_bsz)]
    grid = grid[args.rows_offset:]
    if args.rows_limit is not None:
        grid = grid[:args.rows_limit]
    extra = {"note": "bf16-mixed, grad_cp on, strategy auto, random weights and tokens; tokens_per_s over the "
                     "timed steps; peaks over the whole row; est_err = estimate / measured - 1; "
                     "vs_seeds = peak_device_gb / seeds_gb (target <= 0.8)",
             "bench_device": str(device), "steps": args.steps, "warmup_steps": args.warmup_steps,
             "peak_tflops": peak, **run_facts("bench/gpu_trainer.py", argv)}
    name = "gpu_trainer_smoke" if args.smoke else "gpu_trainer"
    rows: list[dict] = []
    cached: tuple[str, ModelSpec, dict[str, torch.Tensor]] | None = None
    path = None
    for model_name, method, ctx_len, micro_bsz in grid:
        if cached is None or cached[0] != model_name:
            from rwkv_tui.trainer.model.init import random_state_dict
            from rwkv_tui.trainer.training.setup import PRECISIONS

            cached = None
            gc.collect()
            spec = model_spec(model_name, args.smoke)
            cached = (model_name, spec, random_state_dict(spec, dtype=PRECISIONS[args.precision][1]))
        row = bench_row(model_name, cached[1], cached[2], method, ctx_len, micro_bsz, args, device, peak)
        rows.append(row)
        print("  ".join(f"{c}={v:.4g}" if isinstance(v, float) else f"{c}={v}"
                        for c in COLUMNS if (v := row.get(c)) is not None), flush=True)
        path = save_result(name, rows, extra, directory=args.out)
    print_table(rows, COLUMNS)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
