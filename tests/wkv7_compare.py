"""One check every WKV7 op passes: forward, the six gradients and the state gradient equal the
float64 sequential recurrence's, for random RWKV-7-like inputs."""

from __future__ import annotations

import torch
from test_kernels_wkv7 import NAMES, make_inputs

from rwkv_tui.kernels.wkv7_reference import wkv7_sequential


def rel(x, ref):
    return ((x.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def compare(fn, B, T, H, N, dtype, device, with_state=True, tol=1e-5, seed=0, use_final_state=True):
    """`fn(r, w, k, v, a, b, state) -> (y, final state)`: relative errors below `tol` everywhere."""
    x64 = [t.requires_grad_() for t in make_inputs(B, T, H, N, seed=seed)]
    state64 = (torch.randn(B, H, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
               * 0.3).requires_grad_() if with_state else None
    g = torch.Generator().manual_seed(seed + 2)
    dy = torch.randn(B, T, H, N, dtype=torch.float64, generator=g)
    ds = torch.randn(B, H, N, N, dtype=torch.float64, generator=g)

    y_ref, s_ref = wkv7_sequential(*x64, state=state64)
    loss_ref = (y_ref * dy).sum() + ((s_ref * ds).sum() if use_final_state else 0)
    ref_grads = torch.autograd.grad(loss_ref, [*x64, *([state64] if with_state else [])])

    xs = [t.detach().to(device, dtype).requires_grad_() for t in x64]
    state = state64.detach().to(device, torch.float32).requires_grad_() if with_state else None
    y, s = fn(*xs, state)
    assert y.dtype == dtype and s.dtype == torch.float32 and s.shape == (B, H, N, N)
    loss = (y.double() * dy.to(device)).sum() + ((s.double() * ds.to(device)).sum() if use_final_state else 0)
    grads = torch.autograd.grad(loss, [*xs, *([state] if with_state else [])])

    assert rel(y, y_ref) < tol, f"y: {rel(y, y_ref):.2e}"
    assert rel(s, s_ref) < tol, f"final state: {rel(s, s_ref):.2e}"
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert got.shape == want.shape
        assert rel(got, want) < tol, f"gradient of {name}: {rel(got, want):.2e}"
