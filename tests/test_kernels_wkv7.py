"""Every WKV7 op equals the float64 step-by-step recurrence: forward, six gradients, state gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import KernelUnavailableError, available_ops, resolve_op, wkv7, wkv7_chunked, wkv7_sequential


def make_inputs(B, T, H, N, dtype=torch.float64, seed=0, w_scale=2.0, w_shift=0.0):
    """Inputs shaped like RWKV-7's: w ≤ -0.5, a = -kk, b = kk * iclr with kk unit-norm."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    r, k, v = randn(B, T, H, N), randn(B, T, H, N) * 0.5, randn(B, T, H, N)
    w = -F.softplus(-(randn(B, T, H, N) * w_scale + w_shift)) - 0.5
    kk = F.normalize(randn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    return [x.to(dtype) for x in (r, w, k, v, -kk, kk * iclr)]


def per_step_loop(r, w, k, v, a, b, state):
    """The recurrence exactly as DESIGN.md writes it, one (batch, head) at a time."""
    B, T, H, N = r.shape
    y = torch.zeros(B, T, H, N, dtype=torch.float64)
    S_all = state.clone()
    for bi in range(B):
        for h in range(H):
            S = S_all[bi, h].clone()
            for t in range(T):
                d = torch.exp(-torch.exp(w[bi, t, h]))
                S = S * d[None, :] + torch.outer(S @ a[bi, t, h], b[bi, t, h]) + torch.outer(v[bi, t, h], k[bi, t, h])
                y[bi, t, h] = S @ r[bi, t, h]
            S_all[bi, h] = S
    return y, S_all


def test_sequential_matches_the_formula():
    x = make_inputs(2, 7, 2, 4)
    state = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    y, s = wkv7_sequential(*x, state=state)
    y_ref, s_ref = per_step_loop(*x, state)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 15, 31, 32, 33, 64, 100, 257])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_sequential_forward(T, with_state):
    x = make_inputs(2, T, 3, 8, seed=T)
    state = torch.randn(2, 3, 8, 8, dtype=torch.float64) if with_state else None
    y1, s1 = wkv7_sequential(*x, state=state)
    y2, s2 = wkv7_chunked(*x, state=state)
    torch.testing.assert_close(y2, y1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s1, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T,chunk", [(1, 32), (13, 4), (40, 16), (70, 32)])
def test_chunked_equals_sequential_gradients(T, chunk):
    x = [t.requires_grad_() for t in make_inputs(2, T, 2, 8, seed=100 + T)]
    state = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(7)
    dy = torch.randn(2, T, 2, 8, generator=g, dtype=torch.float64)
    ds = torch.randn(2, 2, 8, 8, generator=g, dtype=torch.float64)

    def grads(fn):
        y, s = fn(*x, state=state)
        return torch.autograd.grad((y * dy).sum() + (s * ds).sum(), [*x, state])

    ref = grads(wkv7_sequential)
    got = grads(lambda *a, state: wkv7_chunked(*a, state=state, chunk=chunk))
    for name, g_ref, g_got in zip(["r", "w", "k", "v", "a", "b", "state"], ref, got):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_expanded_state_gets_a_gradient():
    """State tuning feeds one [H,N,N] state expanded over the batch."""
    x = make_inputs(3, 20, 2, 8)
    tuned = torch.randn(2, 8, 8, dtype=torch.float64, requires_grad=True)
    y = wkv7(*x, state=tuned.unsqueeze(0).expand(3, 2, 8, 8)).y
    (grad,) = torch.autograd.grad(y.square().sum(), tuned)
    y_ref, _ = wkv7_sequential(*x, state=tuned.unsqueeze(0).expand(3, 2, 8, 8))
    (grad_ref,) = torch.autograd.grad(y_ref.square().sum(), tuned)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("w_shift", [-8.0, 8.0])  # very slow decay; decay pinned at RWKV-7's fastest
def test_long_sequences_stay_finite_and_exact(w_shift):
    x = make_inputs(1, 2000, 2, 16, w_scale=0.5, w_shift=w_shift, seed=3)
    y1, s1 = wkv7_sequential(*x)
    y2, s2 = wkv7_chunked(*x)
    assert torch.isfinite(y2).all() and torch.isfinite(s2).all()
    torch.testing.assert_close(y2, y1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s2, s1, rtol=1e-9, atol=1e-9)


def test_bf16_inputs_keep_an_fp32_state():
    x64 = make_inputs(1, 50, 2, 16, seed=5)
    x16 = [t.to(torch.bfloat16) for t in x64]
    y, s = wkv7_chunked(*x16)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    y_ref, s_ref = wkv7_sequential(*[t.double() for t in x16])
    assert ((y.double() - y_ref).norm() / y_ref.norm()) < 2e-2
    assert ((s.double() - s_ref).norm() / s_ref.norm()) < 1e-5


def test_fp32_matches_fp64():
    x64 = make_inputs(2, 300, 4, 64, seed=11)
    y32, s32 = wkv7_chunked(*[t.float() for t in x64])
    y64, s64 = wkv7_sequential(*x64)
    assert ((y32.double() - y64).norm() / y64.norm()) < 1e-5
    assert ((s32.double() - s64).norm() / s64.norm()) < 1e-5


def test_dispatcher_reports_the_op_and_explains_refusals():
    x = make_inputs(1, 5, 1, 4)
    assert wkv7(*x).op == "torch_chunked"
    assert wkv7(*x, op="torch").op == "torch_chunked"
    assert wkv7(*x, op="torch_sequential").op == "torch_sequential"
    assert available_ops("cpu") == ["torch_chunked", "torch_sequential"]
    assert resolve_op("auto", "cpu") == "torch_chunked"
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        wkv7(*x, op="cuda")
    with pytest.raises(KernelUnavailableError, match="rwkv-fla"):
        resolve_op("fla", "cpu")
    with pytest.raises(KernelUnavailableError, match="unknown WKV op 'fast'"):
        resolve_op("fast", "cpu")
