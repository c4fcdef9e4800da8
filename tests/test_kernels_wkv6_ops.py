"""RWKV-6/5 WKV: every op equals the float64 step-by-step recurrence, forward and gradients.

The reference itself is checked against the formula written element by element; the model
tests (test_model_oracle_v6_v5.py) check it against the official `rwkv` package.
"""

from __future__ import annotations

import pytest
import torch

from rwkv_tui.kernels import KernelUnavailableError, available_ops, wkv5, wkv6
from rwkv_tui.kernels.wkv6_from_wkv7 import wkv5_on, wkv6_on
from rwkv_tui.kernels.wkv6_reference import wkv6_sequential
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked

NAMES = ["r", "w", "k", "v", "u", "state"]


def make_inputs(B, T, H, N, seed=0, w_low=-6.0, w_high=2.0, per_step=True):
    """RWKV-6-like inputs; w (log(-log decay)) spans very slow to near-instant decay."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    w_shape = (B, T, H, N) if per_step else (H, N)
    w = w_low + (w_high - w_low) * torch.rand(*w_shape, generator=g, dtype=torch.float64)
    return randn(B, T, H, N), w, randn(B, T, H, N) * 0.5, randn(B, T, H, N), randn(H, N) * 0.5


def element_loop(r, w, k, v, u, state):
    B, T, H, N = r.shape
    y = torch.zeros(B, T, H, N, dtype=torch.float64)
    S = state.clone()
    for b in range(B):
        for h in range(H):
            for t in range(T):
                d = torch.exp(-torch.exp(w[b, t, h]))
                for i in range(N):
                    y[b, t, h, i] = sum(r[b, t, h, j] * (u[h, j] * k[b, t, h, j] * v[b, t, h, i] + S[b, h, j, i])
                                        for j in range(N))
                S[b, h] = d[:, None] * S[b, h] + k[b, t, h][:, None] * v[b, t, h][None, :]
    return y, S


def test_reference_is_the_written_formula():
    r, w, k, v, u = make_inputs(2, 5, 2, 3)
    state = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    y, S = wkv6_sequential(r, w, k, v, u, state)
    y2, S2 = element_loop(r, w, k, v, u, state)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(S, S2, rtol=1e-12, atol=1e-12)


def rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


def check_against_reference(op, B, T, H, N, dtype=torch.float64, tol=1e-10, with_state=True, per_step=True,
                            seed=0, **ranges):
    x = [t.requires_grad_() for t in make_inputs(B, T, H, N, seed=seed, per_step=per_step, **ranges)]
    state = (torch.randn(B, H, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
             .requires_grad_() if with_state else None)
    g = torch.Generator().manual_seed(seed + 1)
    dy, ds = torch.randn(B, T, H, N, generator=g, dtype=torch.float64), torch.randn(B, H, N, N, generator=g,
                                                                                    dtype=torch.float64)
    w_ref = x[1] if per_step else x[1].expand(B, T, H, N)
    y_ref, s_ref = wkv6_sequential(x[0], w_ref, x[2], x[3], x[4], state)
    inputs = [*x, *([state] if with_state else [])]
    ref_grads = torch.autograd.grad((y_ref * dy).sum() + (s_ref * ds).sum(), inputs)

    xs = [t.detach().to(dtype).requires_grad_() for t in x]
    st = state.detach().float().requires_grad_() if with_state and dtype != torch.float64 else (
        state.detach().clone().requires_grad_() if with_state else None)
    y, s = op(*xs, st)
    assert y.dtype == dtype and s.shape == (B, H, N, N)
    grads = torch.autograd.grad((y.double() * dy).sum() + (s.double() * ds).sum(), [*xs, *([st] if with_state else [])])
    assert rel(y, y_ref) < tol, rel(y, y_ref)
    assert rel(s, s_ref) < tol
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert rel(got, want) < tol, f"d{name}: {rel(got, want):.2e}"


@pytest.mark.parametrize("T", [1, 31, 32, 33, 70])
def test_chunked_op_equals_reference_in_float64(T):
    check_against_reference(wkv6_on(wkv7_chunked), 2, T, 2, 8, seed=T)


def test_chunked_op_with_extreme_decays_and_no_state():
    """w up to +3 (decay e^-20 per step) and down to -8 (decay 0.9997)."""
    check_against_reference(wkv6_on(wkv7_chunked), 1, 65, 2, 8, w_low=-8.0, w_high=3.0, with_state=False)


def test_rwkv5_constant_decay_table():
    check_against_reference(wkv5_on(wkv7_chunked), 2, 40, 2, 8, per_step=False)


def test_fp32_chunked_is_close():
    check_against_reference(wkv6_on(wkv7_chunked), 2, 50, 2, 16, dtype=torch.float32, tol=1e-5)


def test_triton_kernel_serves_rwkv6_too():
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("the CUDA suite runs the compiled kernel")
    from rwkv_tui.kernels.chunk_state_pass import wkv7_chunked_triton
    from rwkv_tui.kernels.wkv7_triton import wkv7_triton

    check_against_reference(wkv6_on(wkv7_triton), 1, 19, 2, 16, dtype=torch.float32, tol=2e-5)
    check_against_reference(wkv6_on(wkv7_chunked_triton), 1, 40, 2, 16, dtype=torch.float32, tol=2e-5)


def test_dispatch_and_named_shape_errors():
    r, w, k, v, u = (t.float() for t in make_inputs(1, 4, 2, 8))
    assert available_ops("cpu", torch.float32, family="wkv6") == ["torch_chunked", "torch_sequential"]
    out = wkv6(r, w, k, v, u)
    assert out.op == "torch_chunked" and out.state.dtype == torch.float32
    ref = wkv6(r, w, k, v, u, op="torch_sequential")
    torch.testing.assert_close(out.y, ref.y, rtol=1e-5, atol=1e-5)
    assert wkv5(r, w[0, 0], k, v, u).op == "torch_chunked"
    with pytest.raises(ValueError, match=r"bonus u \(time_faaaa\) must be \[H, N\]"):
        wkv6(r, w, k, v, u[0])
    with pytest.raises(ValueError, match="wkv5 decay w must be"):
        wkv5(r, w, k, v, u)
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        wkv6(r, w, k, v, u, op="triton")
