"""WKV7 operator speed on a GPU: every available op against the torch reference (torch_chunked).

For each op of `kernels.available_ops(device, dtype)` (torch_sequential only when asked for with
--ops: it is a Python loop over time steps) and each shape B×T×H×N of an RWKV-7 model's heads
(0.1B H=12, 0.4B H=16, 1.5B H=32, 2.9B H=40; N=64), it times the forward pass (no autograd
graph) and the forward+backward pass (gradients of all six inputs and of the initial state),
each the best of --repeats after --warmup calls, with CUDA events on a GPU. Each op's function
is called directly (kernels.dispatch.op_function), without the dispatcher's checks. Per row:

* ms and tokens/s (B·T / time);
* achieved bandwidth: the compulsory traffic divided by the time. Forward reads r,w,k,v,a,b and
  writes y (7·B·T·H·N elements of the input dtype) and reads/writes the fp32 state
  (2·B·H·N²·4 bytes); forward+backward adds reading the six inputs, dy and d(state) and writing
  six input gradients and d(initial state): 20·B·T·H·N elements + 4·B·H·N²·4 bytes in all.
  Kernels that re-read inputs or spill state move more than this; the figure is a lower bound;
* FLOP rate: the recurrence S_t = S_{t-1}(diag(w_t) + a_t b_tᵀ) + v_t k_tᵀ, y_t = S_t r_t costs
  per head per step N² (decay) + 2N² (S a) + 2N² (·bᵀ) + 2N² (v kᵀ) + 2N² (S r) = 9·N² FLOPs
  forward; forward+backward is counted as 3× forward = 27·N² (the usual convention; the chunked
  algorithm's extra work is not credited). Rate = that × B·T·H / time;
* speed-up of forward+backward (and forward) over torch_chunked on the same shape;
* correctness against torch_chunked on the same inputs: the largest absolute difference of y,
  of the final state and of the seven gradients, and `rel_err`, the largest of those divided by
  the largest magnitude of the matching reference tensor. A fast but wrong kernel shows here.

An op that raises (does not compile, out of memory) becomes a row whose `status` says why.

On the GPU machine (about 1-3 minutes; the CUDA op compiles on its first call):

    python3 bench/gpu_kernels.py                      # bf16, B=1, T=512,1024,4096, all four models
    python3 bench/gpu_kernels.py --batch 1,8 --dtypes bf16,fp32 --out "$OUT"

CPU smoke test of the code paths (tiny shapes, seconds): python bench/gpu_kernels.py --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from bench.common import (
    add_device_options,
    comma_list,
    default_smoke_folder,
    print_table,
    run_facts,
    save_result,
)
from rwkv_tui.kernels.dispatch import OPS, OpEntry, WkvFn, available_ops, op_function, resolve_op
from rwkv_tui.trainer.config import DTYPE_NAMES

HEADS = {"0.1B": 12, "0.4B": 16, "1.5B": 32, "2.9B": 40}  # RWKV-7 n_embd / 64
REFERENCE = "torch_chunked"
FWD_FLOPS = 9   # × N² per head per token, forward
TRAIN_FLOPS = 27  # × N² per head per token, forward + backward (3 × forward)
COLUMNS = ["model", "B", "T", "dtype", "op", "fwd_ms", "fwd_bwd_ms", "tokens_per_s", "fwd_bwd_GBps",
           "fwd_bwd_TFLOPs", "speedup", "fwd_speedup", "rel_err", "status"]


def make_inputs(B: int, T: int, H: int, N: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """r, w, k, v, a, b in RWKV-7's ranges (w ≤ -0.5, a = -kk, b = kk·iclr), a random initial
    state, and the fixed output gradients dy, d(state) the backward pass is fed."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device)

    shape = (B, T, H, N)
    r, k, v = randn(*shape), randn(*shape) * 0.5, randn(*shape)
    w = -F.softplus(-randn(*shape) * 2) - 0.5
    kk = F.normalize(randn(*shape), dim=-1)
    a, b = -kk, kk * torch.rand(*shape, generator=g, device=device)
    xs = [x.to(dtype) for x in (r, w, k, v, a, b)]
    state = randn(B, H, N, N) * 0.1
    return xs, state, randn(*shape).to(dtype), randn(B, H, N, N)


def best_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Seconds of the fastest of `repeats` calls after `warmup` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return min(times)


def ready_op(op: str, device: torch.device, dtype: torch.dtype, ops: Sequence[OpEntry]) -> WkvFn:
    """The WKV7 function of `op`, or KernelUnavailableError saying why it cannot run here."""
    return op_function(resolve_op(op, device, dtype, ops=ops), ops=ops)


def run_op(fn: WkvFn, xs, state, dy, d_state):
    """One forward+backward: y, final state and the seven gradients (six inputs, initial state)."""
    leaves = [x.detach().requires_grad_() for x in xs] + [state.detach().requires_grad_()]
    y, s = fn(*leaves)
    torch.autograd.backward([y, s], [dy, d_state])
    return y.detach(), s.detach(), [leaf.grad for leaf in leaves]


def max_errors(got, ref) -> dict:
    """Largest absolute differences to the reference, and the largest relative to its magnitude."""
    def err(x, y):  # NaN (a kernel writing garbage) counts as an infinite error
        diff = (x.float() - y.float()).abs().max().item()
        return diff if math.isfinite(diff) else math.inf

    def size(y):
        return max(y.float().abs().max().item(), 1e-30)

    (y, s, grads), (ry, rs, rgrads) = got, ref
    pairs = [(y, ry), (s, rs), *zip(grads, rgrads)]
    return {"max_err_y": err(y, ry), "max_err_state": err(s, rs),
            "max_err_grad": max(err(x, r) for x, r in zip(grads, rgrads)),
            "rel_err": max(err(x, r) / size(r) for x, r in pairs)}


def bench_shape(model: str, H: int, B: int, T: int, N: int, dtype_name: str, op_names: list[str],
                device: torch.device, repeats: int, warmup: int, ops: Sequence[OpEntry] = OPS) -> list[dict]:
    """Rows for the ops `op_names`, looked up in the table `ops`."""
    dtype = getattr(torch, DTYPE_NAMES[dtype_name])
    xs, state, dy, d_state = make_inputs(B, T, H, N, dtype, device)
    esize = torch.finfo(dtype).bits // 8
    elems, state_bytes = B * T * H * N, B * H * N * N * 4
    fwd_bytes = 7 * elems * esize + 2 * state_bytes
    train_bytes = 20 * elems * esize + 4 * state_bytes
    try:
        reference = run_op(ready_op(REFERENCE, device, dtype, ops), xs, state, dy, d_state)
    except Exception:  # noqa: BLE001 - e.g. out of memory: time the other ops without error columns
        reference = None
    rows = []
    for op in op_names:
        row = {"model": model, "H": H, "N": N, "B": B, "T": T, "dtype": dtype_name, "op": op}
        try:
            fn = ready_op(op, device, dtype, ops)
            got = run_op(fn, xs, state, dy, d_state)  # also the first call: compiles a kernel
            if reference is not None:
                row.update(max_errors(got, reference))
            del got
            leaves = [x.detach().requires_grad_() for x in xs] + [state.detach().requires_grad_()]

            def forward():
                with torch.no_grad():
                    fn(*xs, state)

            def forward_backward():
                for leaf in leaves:
                    leaf.grad = None
                y, s = fn(*leaves)
                torch.autograd.backward([y, s], [dy, d_state])

            fwd = best_time(forward, repeats, warmup, device)
            train = best_time(forward_backward, repeats, warmup, device)
            for leaf in leaves:  # the gradients are as big as the inputs: free them before the next op
                leaf.grad = None
            row.update(fwd_ms=fwd * 1e3, fwd_bwd_ms=train * 1e3, fwd_tokens_per_s=B * T / fwd,
                       tokens_per_s=B * T / train, fwd_GBps=fwd_bytes / fwd / 1e9,
                       fwd_bwd_GBps=train_bytes / train / 1e9,
                       fwd_TFLOPs=FWD_FLOPS * N * N * B * T * H / fwd / 1e12,
                       fwd_bwd_TFLOPs=TRAIN_FLOPS * N * N * B * T * H / train / 1e12, status="ok")
        except Exception as error:  # noqa: BLE001 - a failing op is a row, not the end of the run
            oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)
            row["status"] = "OOM" if oom else f"failed: {type(error).__name__}: {error}"[:300]
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ref_row = next((r for r in rows if r["op"] == REFERENCE and r["status"] == "ok"), None)
    for row in rows:
        if ref_row and row["status"] == "ok":
            row["speedup"] = ref_row["fwd_bwd_ms"] / row["fwd_bwd_ms"]
            row["fwd_speedup"] = ref_row["fwd_ms"] / row["fwd_ms"]
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(HEADS), help="comma list of " + ", ".join(HEADS))
    parser.add_argument("--T", default="512,1024,4096", help="comma list of sequence lengths")
    parser.add_argument("--batch", default="1", help="comma list of batch sizes, e.g. 1,8")
    parser.add_argument("--dtypes", default="bf16", help="comma list of bf16, fp16, fp32")
    parser.add_argument("--ops", default="", help="comma list of ops (default: every available one "
                                                  "but torch_sequential); torch_chunked always runs")
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    add_device_options(parser, smoke_help="tiny CPU-sized shapes (H=2, N=16, T=32), 1 repeat: "
                                          "exercises the code paths")
    args = parser.parse_args(argv)
    default_smoke_folder(args)
    if args.smoke:
        args.models, args.T, args.batch, args.head_size, args.repeats, args.warmup = "smoke", "32", "1", 16, 1, 1
    for model in args.models.split(","):
        if model.strip() not in (*HEADS, "smoke"):
            parser.error(f"unknown model {model!r}; choose from {', '.join(HEADS)}")
    return args


def main(argv: list[str] | None = None, ops: Sequence[OpEntry] = OPS) -> Path:
    """Run the benchmark over the ops of the table `ops` (a test adds fake ones) and save the rows."""
    args = parse_args(argv)
    device = torch.device(args.device)
    models = comma_list(args.models)
    lengths = [int(t) for t in comma_list(args.T)]
    batches = [int(b) for b in comma_list(args.batch)]
    dtypes = comma_list(args.dtypes)
    rows: list[dict] = []
    for dtype_name in dtypes:
        if args.ops:
            op_names = [REFERENCE] + [o for o in comma_list(args.ops) if o != REFERENCE]
        else:
            skip = {REFERENCE, "torch_sequential"} if device.type == "cuda" else {REFERENCE}
            available = available_ops(device, getattr(torch, DTYPE_NAMES[dtype_name]), ops=ops)
            op_names = [REFERENCE] + [o for o in available if o not in skip]
        for model in models:
            H = HEADS.get(model, 2)  # smoke: 2 heads
            for B in batches:
                for T in lengths:
                    rows += bench_shape(model, H, B, T, args.head_size, dtype_name, op_names, device,
                                        args.repeats, args.warmup, ops)
    print_table(rows, COLUMNS)
    extra = {"note": "fwd = forward without autograd; fwd_bwd = forward + backward (all six inputs and the "
                     "initial state); best of repeats after warm-up; GBps = compulsory traffic / time; "
                     f"TFLOPs from {FWD_FLOPS}·N² (fwd) and {TRAIN_FLOPS}·N² (fwd+bwd) per head per token; "
                     f"errors against {REFERENCE} on the same inputs",
             "bench_device": str(device), "repeats": args.repeats, "warmup": args.warmup,
             **run_facts("bench/gpu_kernels.py", argv)}
    name = "gpu_kernels_smoke" if args.smoke else "gpu_kernels"
    path = save_result(name, rows, extra, directory=args.out)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
