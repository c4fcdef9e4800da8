"""A tiny forward+backward of the CUDA WKV7 op, for compute-sanitizer on the GPU machine:

    compute-sanitizer --tool racecheck python3 bench/wkv7_cuda_sanitize.py
    compute-sanitizer --tool memcheck  python3 bench/wkv7_cuda_sanitize.py

Shared-memory races and out-of-bounds accesses in kernels/cuda/ show up there; the numbers
are also checked against the torch op so a silent miscompile fails loudly.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked
from rwkv_tui.kernels.wkv7_cuda import wkv7_cuda


def main() -> int:
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T, H, N = 2, 37, 2, 64  # T crosses chunk boundaries and ends mid-chunk

    def rand(scale=1.0):
        return torch.randn(B, T, H, N, device="cuda", generator=g) * scale

    kk = torch.nn.functional.normalize(rand(), dim=-1)
    inputs = [rand(), -0.6 - rand(0.5).abs(), rand(0.5), rand(), -kk, kk * 0.5]
    state = torch.randn(B, H, N, N, device="cuda", generator=g) * 0.3
    worst = 0.0
    for op in (wkv7_cuda, wkv7_chunked):
        xs = [x.clone().requires_grad_() for x in inputs]
        s0 = state.clone().requires_grad_()
        y, s = op(*xs, s0)
        (y.square().sum() + s.sum()).backward()
        got = [y, s, *(x.grad for x in xs), s0.grad]
        if op is wkv7_cuda:
            cuda_out = [t.detach() for t in got]
        else:
            worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(cuda_out, got))
    print(f"max relative difference from torch_chunked: {worst:.2e}")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
