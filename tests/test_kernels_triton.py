"""The Triton WKV7 kernel equals the float64 recurrence: forward, six gradients, state gradient.

Without a GPU the same kernels run under TRITON_INTERPRET=1 (tiny shapes: the interpreter
executes every step in numpy); on CUDA they run compiled, in bf16 and fp32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_kernels_wkv7 import make_inputs
from wkv7_compare import compare as compare_op
from wkv7_compare import rel

from rwkv_tui.kernels.chunk_state_pass import chunk_state_pass, wkv7_chunked_triton
from rwkv_tui.kernels.wkv7_triton import (
    CHUNK,
    rows_per_program,
    triton_availability,
    wkv7_triton,
)

# conftest.py sets TRITON_INTERPRET=1 without CUDA, before triton is first imported.
pytest.importorskip("triton")


def compare(*args, **kwargs):
    compare_op(wkv7_triton, *args, **kwargs)


@pytest.mark.parametrize("T", [1, CHUNK - 1, CHUNK + 1, 2 * CHUNK + 3])
def test_interpreted_kernel_matches_reference_on_cpu(T):
    if torch.cuda.is_available():
        pytest.skip("runs compiled on CUDA below")
    compare(2, T, 2, 16, torch.float32, "cpu", tol=2e-5, seed=T)


def test_interpreted_kernel_split_heads_and_no_state():
    """N=32 splits each head over two programs (atomic row sums); no initial state; only y used."""
    if torch.cuda.is_available():
        pytest.skip("runs compiled on CUDA below")
    assert rows_per_program(2, 32) == 16
    compare(1, CHUNK + 5, 2, 32, torch.float32, "cpu", with_state=False, use_final_state=False, tol=2e-5)


def test_triton_is_offered_only_on_cuda():
    assert "CUDA" in triton_availability(torch.device("cpu"), torch.float32)
    assert "bf16" in triton_availability(torch.device("cuda"), torch.float64)
    with pytest.raises(ValueError, match="head sizes"):
        wkv7_triton(*make_inputs(1, 2, 1, 8, dtype=torch.float32))


@pytest.mark.cuda
@pytest.mark.parametrize("T", [1, 15, 16, 17, 100, 257])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_compiled_kernel_matches_reference_on_cuda(T, dtype, tol):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    compare(2, T, 3, 64, dtype, "cuda", tol=tol, seed=T)
    compare(2, T, 3, 64, dtype, "cuda", with_state=False, use_final_state=False, tol=tol, seed=T)


@pytest.mark.cuda
def test_compiled_kernel_whole_heads_path_on_cuda():
    """Enough heads that each program owns a whole head (plain stores, no atomics)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    assert rows_per_program(8 * 64, 64) == 64
    compare(8, 40, 64, 64, torch.float32, "cuda", tol=1e-4)


def _loop_state_pass(s0, transition, update):
    B, H, _, N, _ = transition.shape
    S = s0 if s0 is not None else torch.zeros(B, H, N, N, dtype=transition.dtype)
    starts = []
    for i in range(transition.shape[2]):
        starts.append(S)
        S = S @ transition[:, :, i] + update[:, :, i]
    return torch.stack(starts, dim=2), S


@pytest.mark.parametrize("with_state,use_starts", [(True, True), (False, True), (True, False)])
def test_chunk_state_pass_matches_the_loop(with_state, use_starts):
    """The pass over chunks in one Triton kernel == the Python loop, values and all three gradients."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(1)
    B, H, n, N = 2, 3, 5, 16
    s0 = torch.randn(B, H, N, N, generator=g, dtype=torch.float64)
    transition = torch.randn(B, H, n, N, N, generator=g, dtype=torch.float64) * 0.3
    update = torch.randn(B, H, n, N, N, generator=g, dtype=torch.float64)
    d_starts = torch.randn(B, H, n, N, N, generator=g, dtype=torch.float64)
    d_final = torch.randn(B, H, N, N, generator=g, dtype=torch.float64)

    def run(fn, dtype, dev):
        xs = [x.to(dev, dtype).requires_grad_() for x in (s0, transition, update)]
        starts, final = fn(xs[0] if with_state else None, xs[1], xs[2])
        loss = (final.double() * d_final.to(dev)).sum()
        if use_starts:
            loss = loss + (starts.double() * d_starts.to(dev)).sum()
        grads = torch.autograd.grad(loss, xs if with_state else xs[1:])
        return [t.detach().double().cpu() for t in (starts, final, *grads)]

    for got, want in zip(run(chunk_state_pass, torch.float32, device), run(_loop_state_pass, torch.float64, "cpu")):
        assert rel(got, want) < 1e-5


@pytest.mark.parametrize("T", [1, 33, 70])
def test_chunked_triton_op_matches_reference(T):
    if torch.cuda.is_available():
        pytest.skip("runs compiled on CUDA below")
    compare_op(wkv7_chunked_triton, 2, T, 2, 16, torch.float32, "cpu", tol=2e-5, seed=T)
    compare_op(wkv7_chunked_triton, 1, T, 2, 32, torch.float32, "cpu", with_state=False, use_final_state=False,
               tol=2e-5, seed=T)


@pytest.mark.cuda
@pytest.mark.parametrize("T", [1, 15, 100, 257, 1000])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_chunked_triton_op_on_cuda(T, dtype, tol):
    compare_op(wkv7_chunked_triton, 2, T, 3, 64, dtype, "cuda", tol=tol, seed=T)


@pytest.mark.slow
def test_kernels_compile_for_a_gpu_that_is_not_here():
    """triton compiles ahead of time for sm_90 on the CPU (front end, LLVM, its own ptxas): a
    kernel the interpreter accepts but the GPU compiler would reject fails here, in CI."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parent / "triton_compile_check.py"
    result = subprocess.run([sys.executable, str(script), "--arch", "90"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for kernel in ("forward             bf16 N=64 rows=16", "backward            bf16 N=64 rows=16",
                   "backward            fp32 N=32 rows=16", "chunk pass backward fp32 N=64"):
        assert kernel in result.stdout
    for line in result.stdout.splitlines():  # spilling is a compile that works but runs slowly
        if "chunk pass" in line or "rows=16" in line:
            assert "STACK:0" in line, line
