"""Our CUDA WKV7 kernels equal the float64 recurrence: forward, six gradients, state gradient.

Without a GPU the kernel source itself (kernels/cuda/wkv7_kernels.cuh) still runs: the harness
in tests/cuda_harness/ compiles it with g++, one std::thread per CUDA thread, so CI checks the
algorithm, the indexing and the barriers. nvcc (when installed) and the torch headers check that
the real extension's sources compile. On a GPU the built extension is compared directly.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from test_kernels_wkv7 import make_inputs
from wkv7_compare import compare

from rwkv_tui.kernels import KernelUnavailableError, available_ops, wkv6, wkv7
from rwkv_tui.kernels import wkv7_cuda as cuda_module
from rwkv_tui.kernels.wkv7_cuda import SOURCES, build_directory, cuda_availability, load_extension, wkv7_cuda

HARNESS = Path(__file__).resolve().parent / "cuda_harness" / "wkv7_on_cpu.cpp"
CHUNK = 16  # wkv7::kChunk in kernels/cuda/wkv7_kernels.cuh


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++ to run the CUDA kernel source on the CPU")
    library = tmp_path_factory.mktemp("harness") / "libwkv7_on_cpu.so"
    subprocess.run([compiler, "-O1", "-std=c++20", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror",
                    "-Wno-unknown-pragmas", f"-I{SOURCES}", str(HARNESS), "-o", str(library)],
                   check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(library))
    lib.wkv7_forward.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] * 10
    lib.wkv7_backward.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] * 17
    assert lib.wkv7_chunk() == CHUNK  # the header's kChunk, which the buffers below are sized by
    return lib


def _ptr(x):
    return None if x is None else ctypes.c_void_p(x.data_ptr())


def harness_op(lib):
    """The dispatcher's op contract, with the kernels running in the CPU harness."""

    class HarnessWkv7(torch.autograd.Function):
        @staticmethod
        def forward(ctx, r, w, k, v, a, b, state):
            B, T, H, N = r.shape
            code = {torch.float32: 0, torch.bfloat16: 1}[r.dtype]
            xs = [x.contiguous() for x in (r, w, k, v, a, b)]
            y = torch.empty_like(r)
            s_out = torch.empty(B, H, N, N)
            checkpoints = torch.empty(B * H, -(-T // CHUNK), N, N)
            s0 = state.float().contiguous() if state is not None else None
            assert lib.wkv7_forward(code, B, T, H, N, *map(_ptr, xs), _ptr(s0), _ptr(y), _ptr(s_out),
                                    _ptr(checkpoints)) == 0
            ctx.save_for_backward(*xs, checkpoints)
            ctx.code, ctx.has_state = code, state is not None
            ctx.set_materialize_grads(False)
            return y, s_out

        @staticmethod
        def backward(ctx, dy, ds_out):
            *xs, checkpoints = ctx.saved_tensors
            B, T, H, N = xs[0].shape
            dy = dy.contiguous() if dy is not None else torch.zeros_like(xs[0])
            ds_out = ds_out.float().contiguous() if ds_out is not None else None
            scratch = torch.empty(B * H, CHUNK * (N * N + N))
            grads = [torch.empty_like(xs[0]) for _ in range(6)]
            ds0 = torch.empty(B, H, N, N)
            assert lib.wkv7_backward(ctx.code, B, T, H, N, *map(_ptr, xs), _ptr(dy), _ptr(ds_out),
                                     _ptr(checkpoints), _ptr(scratch), *map(_ptr, grads), _ptr(ds0)) == 0
            return (*grads, ds0 if ctx.has_state else None)

    return lambda r, w, k, v, a, b, state=None: HarnessWkv7.apply(r, w, k, v, a, b, state)


@pytest.mark.parametrize("T", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
def test_kernel_source_matches_reference_on_cpu(harness, T):
    compare(harness_op(harness), 2, T, 3, 16, torch.float32, "cpu", tol=1e-5, seed=T)


@pytest.mark.parametrize("N", [32, 64])
def test_kernel_source_head_sizes_without_state(harness, N):
    """Real head sizes, no initial state, only y used (the final state's gradient arrives as None)."""
    compare(harness_op(harness), 1, CHUNK + 3, 2, N, torch.float32, "cpu", with_state=False,
            use_final_state=False, tol=1e-5, seed=N)


def test_kernel_source_in_bf16(harness):
    """bf16 inputs and outputs, fp32 state: errors of bf16's size, not of a wrong formula."""
    compare(harness_op(harness), 2, 2 * CHUNK + 5, 2, 32, torch.bfloat16, "cpu", tol=3e-2, seed=7)


def test_kernel_source_unsupported_head_size(harness):
    x = [t.float().contiguous() for t in make_inputs(1, 2, 1, 8)]
    out = [torch.empty(1, 1, 8, 8) for _ in range(2)]
    assert harness.wkv7_forward(0, 1, 2, 1, 8, *map(_ptr, x), None, _ptr(x[0].clone()), *map(_ptr, out)) == 1


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return shutil.which("nvcc") or shutil.which("nvcc", path=str(Path(home) / "bin"))


def test_cuda_source_compiles_with_nvcc(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([nvcc, "-c", "-std=c++17", "-O3", "-arch=sm_80", str(SOURCES / "wkv7.cu"),
                             "-o", str(tmp_path / "wkv7.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_binding_compiles_against_torch_headers():
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++")
    include = Path(torch.__file__).parent / "include"
    result = subprocess.run([compiler, "-std=c++17", "-fsyntax-only", "-w", f"-I{include}",
                             f"-I{include / 'torch/csrc/api/include'}", f"-I{sysconfig.get_paths()['include']}",
                             "-DTORCH_EXTENSION_NAME=wkv7_check", str(SOURCES / "wkv7_op.cpp")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_cuda_op_is_offered_only_where_it_can_build():
    assert "CUDA GPUs" in cuda_availability(torch.device("cpu"), torch.float32)
    assert "bf16" in cuda_availability(torch.device("cuda"), torch.float64)
    assert "cuda" not in available_ops("cpu")
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        wkv7(*make_inputs(1, 2, 1, 16), op="cuda")
    with pytest.raises(ValueError, match="head sizes"):
        wkv7_cuda(*make_inputs(1, 2, 1, 8, dtype=torch.float32))


def test_missing_toolchain_is_explained(monkeypatch):
    monkeypatch.setattr(cuda_module, "_toolchain_missing", lambda: "no CUDA compiler (nvcc) found: …")
    load_extension.cache_clear()
    with pytest.raises(KernelUnavailableError, match="cannot build the CUDA WKV7 kernel: no CUDA compiler"):
        load_extension()
    load_extension.cache_clear()
    assert "nvcc" in cuda_availability(torch.device("cuda"), torch.bfloat16)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA")
def test_cpu_torch_says_why_not():
    assert cuda_module._toolchain_missing() == "this torch build has no CUDA support"


def test_build_directory_follows_sources_and_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("RWKV_TUI_KERNEL_CACHE", str(tmp_path / "cache"))
    first = build_directory()
    assert first.parent == tmp_path / "cache" and f"torch{torch.__version__}" in first.name
    copy = tmp_path / "src"
    shutil.copytree(SOURCES, copy)
    monkeypatch.setattr(cuda_module, "SOURCES", copy)
    assert build_directory() == first
    (copy / "wkv7.cu").write_text((copy / "wkv7.cu").read_text() + "\n// changed\n")
    assert build_directory() != first  # edited kernels are rebuilt, never loaded stale


def _skip_without_toolchain():
    reason = cuda_module._toolchain_missing()
    if reason:
        pytest.skip(f"the CUDA extension cannot be built here: {reason}")


@pytest.mark.cuda
@pytest.mark.parametrize("T", [1, 15, 16, 17, 100, 257])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_compiled_kernel_matches_reference_on_cuda(T, dtype, tol):
    _skip_without_toolchain()
    compare(wkv7_cuda, 2, T, 3, 64, dtype, "cuda", tol=tol, seed=T)
    compare(wkv7_cuda, 2, T, 3, 64, dtype, "cuda", with_state=False, use_final_state=False, tol=tol, seed=T)


@pytest.mark.cuda
def test_compiled_kernel_head_size_32_and_dispatch():
    _skip_without_toolchain()
    compare(wkv7_cuda, 3, 40, 5, 32, torch.float32, "cuda", tol=1e-4)
    x = [t.to("cuda", torch.bfloat16) for t in make_inputs(1, 20, 2, 64)]
    assert wkv7(*x, op="cuda").op == "cuda"
    u = torch.randn(2, 64, device="cuda", dtype=torch.bfloat16)
    assert wkv6(x[0], x[1], x[2], x[3], u, op="cuda").op == "cuda"


if __name__ == "__main__":  # build the extension once by hand: python tests/test_kernels_cuda.py
    print(load_extension(), file=sys.stderr)
