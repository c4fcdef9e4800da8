"""CPU throughput of the torch WKV7 references (sequential vs chunked), forward and forward+backward.

Two views: the bare operator (B=1, N=64, H=4 and H=12 as in 0.1B models, fp32), and a
whole small RWKV-7 model (L4 C256) training step with each op. Prints a table and saves
JSON under bench/results/.

    python bench/kernels_cpu.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from bench.common import print_table, save_result
from rwkv_tui.kernels import wkv7

OPS = ("torch_sequential", "torch_chunked")


def operator_inputs(B, T, H, N):
    """Random inputs in RWKV-7's ranges (w ≤ -0.5, a = -kk, b = kk * iclr)."""
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w = -F.softplus(-torch.randn(B, T, H, N, generator=g) * 2) - 0.5
    kk = F.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, N, generator=g)
    return [x.requires_grad_() for x in (r, w, k, v, a, b)]


def best_time(fn, repeats: int) -> float:
    """Best of `repeats` after one warm-up: other processes on a small machine only ever slow a run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_operator(op: str, H: int, T: int, repeats: int) -> dict:
    B, N = 1, 64
    xs = operator_inputs(B, T, H, N)
    state = torch.randn(B, H, N, N, requires_grad=True)

    def forward():
        with torch.no_grad():
            wkv7(*xs, state=state, op=op)

    def forward_backward():
        y, s, _ = wkv7(*xs, state=state, op=op)
        (y.sum() + s.sum()).backward()

    fwd, fwd_bwd = best_time(forward, repeats), best_time(forward_backward, repeats)
    return {"what": f"operator B1 H{H} N64", "op": op, "T": T, "fwd_s": fwd, "fwd_bwd_s": fwd_bwd,
            "fwd_tokens_per_s": B * T / fwd, "tokens_per_s": B * T / fwd_bwd}


def bench_model(op: str, T: int, repeats: int) -> dict:
    from rwkv_tui.trainer.model import model_from_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec

    spec = rwkv7_spec(4, 256, vocab_size=65536)
    model = model_from_state_dict(random_state_dict(spec), spec)
    model.wkv_op = op
    idx = torch.randint(0, spec.vocab_size, (1, T + 1), generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.no_grad():
            model(idx[:, :-1])

    def forward_backward():
        logits, _ = model(idx[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    fwd, fwd_bwd = best_time(forward, repeats), best_time(forward_backward, repeats)
    return {"what": f"model L4 C256 ({spec.n_params / 1e6:.1f}M params)", "op": op, "T": T,
            "fwd_s": fwd, "fwd_bwd_s": fwd_bwd, "fwd_tokens_per_s": T / fwd, "tokens_per_s": T / fwd_bwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for T in (256, 1024):
        for H in (4, 12):
            rows += [bench_operator(op, H, T, args.repeats) for op in OPS]
        rows += [bench_model(op, T, args.repeats) for op in OPS]
    for row in rows:
        base = next(r for r in rows if r["what"] == row["what"] and r["T"] == row["T"] and r["op"] == OPS[0])
        row["speedup_vs_sequential"] = row["tokens_per_s"] / base["tokens_per_s"]
    print_table(rows, ["what", "op", "T", "fwd_tokens_per_s", "tokens_per_s", "speedup_vs_sequential"])
    path = save_result("kernels_cpu", rows, {
        "note": "fp32, best of repeats after a warm-up; tokens_per_s is forward+backward "
                "(gradients of all six inputs and the initial state), fwd_tokens_per_s forward only",
        "repeats": args.repeats,
    })
    print(f"saved {path}")


if __name__ == "__main__":
    main()
