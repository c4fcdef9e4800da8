"""The rwkv-fla adapter: its availability reasons, its convention mapping, and rwkv-fla's real
chunk_rwkv7 against the float64 recurrence (forward, six gradients, state gradient).

The real kernels run here only where rwkv-fla is importable (it is not in the dev install,
so in CI those tests skip): compiled on CUDA, or without a GPU in triton's interpreter with
three small patches (see `interpreted_fla`). That needs triton < 3.9, e.g.:

    python3 -m venv /tmp/flavenv
    /tmp/flavenv/bin/pip install torch==2.13.0 'triton<3.9' 'numpy<2.4' rwkv-fla pytest
    TRITON_INTERPRET=1 PYTHONPATH=. /tmp/flavenv/bin/python -m pytest tests/test_kernels_fla.py
"""

from __future__ import annotations

import contextlib
import os
import sys
import types

import pytest
import torch
from test_kernels_wkv7 import make_inputs
from wkv7_compare import compare as compare_op

from rwkv_tui.kernels import wkv7_fla as fla_module
from rwkv_tui.kernels.wkv7_fla import fla_availability, from_fla_state, to_fla, wkv7_fla

CUDA = torch.device("cuda")


def compare(*args, **kwargs):
    compare_op(wkv7_fla, *args, **kwargs)


def test_fla_is_offered_only_on_cuda():
    assert "CUDA" in fla_availability(torch.device("cpu"), torch.float32)
    assert "bf16" in fla_availability(CUDA, torch.float64)


def current_chunk_rwkv7(r, k, v, a, b, w=None, log_w=None, scale=1.0, initial_state=None,
                        output_final_state=True, cu_seqlens=None, head_first=False):
    raise AssertionError("only its signature is read")


def first_0_7_chunk_rwkv7(r, k, v, w, a, b, scale=1.0, initial_state=None, output_final_state=True,
                          cu_seqlens=None, head_first=False, use_log_w=True):
    raise AssertionError("only its signature is read")  # w meant log_w by default then


def fake_fla(monkeypatch, chunk_rwkv7=None, triton_version="3.8.0"):
    """The availability check, uncached, seeing a fake rwkv-fla (None: not installed) and triton."""
    monkeypatch.setattr(fla_module, "_fla_missing", fla_module._fla_missing.__wrapped__)
    if chunk_rwkv7 is None:
        monkeypatch.setitem(sys.modules, "rwkvfla", None)  # makes the import fail
        return
    modules = {"rwkvfla": {}, "rwkvfla.ops": {}, "rwkvfla.ops.rwkv7": {"chunk_rwkv7": chunk_rwkv7},
               "triton": {"__version__": triton_version}}
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("chunk_rwkv7,triton_version,problem", [
    (None, "3.8.0", "cannot be imported"),
    (first_0_7_chunk_rwkv7, "3.8.0", "too old"),
    (current_chunk_rwkv7, "3.9.0", "found triton 3.9.0"),
])
def test_unusable_fla_says_why_and_how_to_install(monkeypatch, chunk_rwkv7, triton_version, problem):
    fake_fla(monkeypatch, chunk_rwkv7, triton_version)
    reason = fla_availability(CUDA, torch.bfloat16)
    assert problem in reason
    assert "pip install 'rwkv-tui[gpu]'" in reason and "triton < 3.9" in reason


def test_usable_fla_is_available(monkeypatch):
    fake_fla(monkeypatch, current_chunk_rwkv7, "3.8.0+git1234")
    assert fla_availability(CUDA, torch.float16) is None


def test_to_fla_gives_the_log_decay_and_a_key_major_state():
    _, w, *_ = make_inputs(1, 3, 2, 4, dtype=torch.bfloat16)
    state = torch.randn(1, 2, 4, 4)
    log_w, fla_state = to_fla(w, state)
    assert log_w.dtype == torch.float32
    torch.testing.assert_close(log_w.exp(), torch.exp(-torch.exp(w.float())))
    assert fla_state[0, 1, 2, 3] == state[0, 1, 3, 2]  # [key, value] there, [value, key] here
    assert to_fla(w, None)[1] is None
    back = from_fla_state(fla_state)
    assert back.is_contiguous() and torch.equal(back, state)


def documented_chunk_rwkv7(r, k, v, a, b, w=None, log_w=None, *, scale, initial_state=None,
                           output_final_state=True, cu_seqlens=None, head_first=False):
    """rwkv-fla's chunk_rwkv7 as its source documents it, in float64: the DPLR recurrence
    (generalized_delta_rule/dplr/naive.py, gk = log_w) on a key-major state h [K, V],
    o_t = scale · h_tᵀ r_t. `scale` has no default here: the adapter must pass 1.0 itself."""
    assert w is None and log_w is not None, "pass log_w: in rwkv-fla's first 0.7 releases w meant log_w"
    assert cu_seqlens is None and not head_first
    B, T, H, K = r.shape
    y_dtype = r.dtype
    r, k, v, a, b, log_w = (x.double() for x in (r, k, v, a, b, log_w))
    h = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64) if initial_state is None else initial_state.double()
    outputs = []
    for t in range(T):
        r_t, k_t, v_t, a_t, b_t = (x[:, t, :, :, None] for x in (r, k, v, a, b))  # [B, H, N, 1]
        h = h * log_w[:, t, :, :, None].exp() + b_t * (a_t.transpose(-1, -2) @ h) + k_t * v_t.transpose(-1, -2)
        outputs.append(scale * (r_t.transpose(-1, -2) @ h).squeeze(-2))
    return torch.stack(outputs, dim=1).to(y_dtype), h.float() if output_final_state else None


@pytest.mark.parametrize("with_state", [True, False])
def test_adapter_maps_our_conventions_to_fla_documented_ones(monkeypatch, with_state):
    """Through fla's documented recurrence, the adapter computes ours: decay, both state
    transposes and scale=1 are right, or y, the state or a gradient comes out wrong."""
    monkeypatch.setattr(fla_module, "_chunk_rwkv7", lambda: documented_chunk_rwkv7)
    compare(2, 5, 2, 4, torch.float32, "cpu", with_state=with_state, tol=1e-5)


# ---- rwkv-fla's real kernels ----------------------------------------------------------------

def _late_bound(namespace, name: str):
    def call(*args, **kwargs):
        return getattr(namespace, name)(*args, **kwargs)
    return call


@pytest.fixture
def interpreted_fla(monkeypatch):
    """rwkv-fla's kernels in triton's interpreter. Three patches, all undone afterwards:
    - input_guard enters `torch.cpu.device(index)`, which does not exist: a null context;
    - autotuning benchmarks every config through a GPU driver: keep the first config only;
    - modules alias builtins at import (`exp = tl.exp`), while the interpreter swaps tl's
      builtins only while a kernel runs: those aliases look tl up at call time instead."""
    if torch.cuda.is_available():
        pytest.skip("runs compiled on CUDA below")
    pytest.importorskip("rwkvfla.ops.rwkv7", reason="rwkv-fla is not installed (pip install 'rwkv-tui[gpu]')")
    reason = fla_module._fla_missing.__wrapped__()
    if reason is not None:
        pytest.skip(reason)
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs TRITON_INTERPRET=1 (conftest.py sets it without CUDA)")
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner

    import rwkvfla.utils

    monkeypatch.setattr(rwkvfla.utils, "custom_device_ctx", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(Autotuner, "prune_configs", lambda self, kwargs: self.configs[:1])
    builtins = {id(value): (namespace, name) for namespace in (tl.math, tl) for name in dir(namespace)
                if tl.core.is_builtin(value := getattr(namespace, name))}
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("rwkvfla.") and module is not None:
            for attr, value in list(vars(module).items()):
                if id(value) in builtins:
                    monkeypatch.setattr(module, attr, _late_bound(*builtins[id(value)]))


# rwkv-fla's notes for GPUs and triton's deprecation of the block pointers it uses.
quiet_fla = pytest.mark.filterwarnings(
    "ignore:(ChunkDeltaRuleFunction does not support float32|tl.make_block_ptr is deprecated"
    "|Triton is not supported on current platform)")


@quiet_fla
@pytest.mark.parametrize("B,T,H,N", [(2, 1, 2, 16), (2, 16, 2, 16), (2, 20, 2, 16), (1, 37, 2, 32)])
def test_interpreted_fla_matches_reference_on_cpu(interpreted_fla, B, T, H, N):
    """Chunks of 16 steps: T within one chunk, exactly one, and partial last chunks; N=32
    splits the state's value columns over two programs."""
    compare(B, T, H, N, torch.float32, "cpu", tol=2e-5, seed=T)


@quiet_fla
def test_interpreted_fla_without_state_and_fp16(interpreted_fla):
    compare(2, 20, 2, 16, torch.float32, "cpu", with_state=False, use_final_state=False, tol=2e-5)
    compare(1, 17, 2, 16, torch.float16, "cpu", tol=3e-3)


@quiet_fla
@pytest.mark.cuda
@pytest.mark.parametrize("T", [1, 15, 16, 17, 100, 257])
# fp32: rwkv-fla sets no input_precision, so tl.dot rounds fp32 operands to tf32 on Ampere and newer.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_fla_matches_reference_on_cuda(T, dtype, tol):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    reason = fla_availability(CUDA, dtype)
    if reason is not None:
        pytest.skip(reason)
    compare(2, T, 3, 64, dtype, "cuda", tol=tol, seed=T)
    compare(2, T, 3, 64, dtype, "cuda", with_state=False, use_final_state=False, tol=tol, seed=T)
