"""Every WKV7 op equals the float64 step-by-step recurrence: forward, six gradients, state gradient.

The sequential reference itself is checked twice: against the formula written out below,
and against the official `rwkv` package's x070 CPU path (run in a subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rwkv_tui.kernels import (
    KernelUnavailableError,
    autotune,
    available_ops,
    dispatch,
    resolve_op,
    wkv7,
    wkv7_chunked,
    wkv7_sequential,
)
from rwkv_tui.kernels.dispatch import OPS, LazyFunction, OpEntry, choose_op, op_function
from rwkv_tui.kernels.wkv7_chunked import safe_chunk_length

NAMES = ["r", "w", "k", "v", "a", "b", "state"]


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


def gradients(fn, x, state, seed=7):
    """Gradients of a random linear function of (y, final state) w.r.t. the six inputs and the state."""
    x = [t.detach().requires_grad_() for t in x]
    state = state.detach().requires_grad_()
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(x[0].shape, generator=g, dtype=torch.float64)
    ds = torch.randn(state.shape, generator=g, dtype=torch.float64)
    y, s = fn(*x, state=state)
    return torch.autograd.grad((y * dy).sum() + (s * ds).sum(), [*x, state])


def assert_same_gradients(got, ref, tol):
    for name, g_got, g_ref in zip(NAMES, got, ref):
        assert torch.isfinite(g_got).all(), f"gradient of {name} is not finite"
        torch.testing.assert_close(g_got, g_ref, rtol=tol, atol=tol, msg=f"gradient of {name}")


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


@pytest.mark.parametrize("T,chunk", [(1, 32), (13, 4), (40, 16), (70, 32), (200, 32)])
def test_chunked_equals_sequential_gradients(T, chunk):
    x = make_inputs(2, T, 2, 8, seed=100 + T)
    state = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    ref = gradients(wkv7_sequential, x, state)
    got = gradients(lambda *a, state: wkv7_chunked(*a, state=state, chunk=chunk), x, state)
    assert_same_gradients(got, ref, 1e-9)


def test_gradients_without_an_initial_state():
    x = [t.requires_grad_() for t in make_inputs(2, 45, 2, 8, seed=9)]
    dy = torch.randn(2, 45, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.autograd.grad((wkv7_sequential(*x)[0] * dy).sum(), x)
    got = torch.autograd.grad((wkv7_chunked(*x)[0] * dy).sum(), x)
    assert_same_gradients(got, ref, 1e-9)


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


def test_long_sequence_gradients_at_the_fastest_decay():
    x = make_inputs(1, 600, 2, 8, w_scale=0.5, w_shift=8.0, seed=4)
    state = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    assert_same_gradients(gradients(wkv7_chunked, x, state), gradients(wkv7_sequential, x, state), 1e-9)


def test_fp32_long_sequence_at_the_fastest_decay_stays_close():
    x64 = make_inputs(1, 1000, 2, 32, w_scale=0.5, w_shift=8.0, seed=6)
    y32, s32 = wkv7_chunked(*[t.float() for t in x64])
    y64, s64 = wkv7_sequential(*x64)
    assert torch.isfinite(y32).all() and torch.isfinite(s32).all()
    assert ((y32.double() - y64).norm() / y64.norm()) < 1e-5
    assert ((s32.double() - s64).norm() / s64.norm()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decays_beyond_rwkv7s_range_stay_exact(dtype):
    """w up to +4 (decay e^-55): the chunk shortens itself instead of overflowing."""
    x = make_inputs(2, 90, 2, 8, seed=8)
    x[1] = torch.empty_like(x[1]).uniform_(-3.0, 4.0, generator=torch.Generator().manual_seed(2))
    assert safe_chunk_length(-torch.exp(x[1]), 32) < 32
    state = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    y1, s1 = wkv7_sequential(*x, state=state)
    y2, s2 = wkv7_chunked(*[t.to(dtype) for t in x], state=state.to(dtype))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(y2.double(), y1, rtol=tol, atol=tol)
    torch.testing.assert_close(s2.double(), s1, rtol=tol, atol=tol)
    if dtype == torch.float64:
        assert_same_gradients(gradients(wkv7_chunked, x, state), gradients(wkv7_sequential, x, state), 1e-9)


def test_chunk_length_is_kept_inside_rwkv7s_range():
    fastest_rwkv7 = -torch.exp(torch.tensor([-0.5]))  # the largest per-step log-decay RWKV-7 can produce
    assert safe_chunk_length(fastest_rwkv7, 32) == 32
    assert safe_chunk_length(torch.tensor([-10.0]), 32) == 8
    assert safe_chunk_length(torch.tensor([-40.0]), 32) == 2


def test_bf16_inputs_keep_an_fp32_state():
    x64 = make_inputs(1, 50, 2, 16, seed=5)
    x16 = [t.to(torch.bfloat16) for t in x64]
    y, s = wkv7_chunked(*x16)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    y_ref, s_ref = wkv7_sequential(*[t.double() for t in x16])
    assert ((y.double() - y_ref).norm() / y_ref.norm()) < 2e-2
    assert ((s.double() - s_ref).norm() / s_ref.norm()) < 1e-5


def test_bf16_gradients_come_back_in_bf16_and_close():
    x64 = make_inputs(1, 40, 2, 16, seed=12)
    x16 = [t.to(torch.bfloat16).requires_grad_() for t in x64]
    state = torch.randn(1, 2, 16, 16, requires_grad=True)
    y, s, _ = wkv7(*x16, state=state)
    (y.float().square().sum() + s.sum()).backward()
    ref = [t.double().detach().requires_grad_() for t in x16]
    ref_state = state.double().detach().requires_grad_()
    y_ref, s_ref = wkv7_sequential(*ref, state=ref_state)
    (y_ref.square().sum() + s_ref.sum()).backward()
    for name, got, want in zip(NAMES, [*x16, state], [*ref, ref_state]):
        assert got.grad.dtype == got.dtype, name
        assert ((got.grad.double() - want.grad).norm() / want.grad.norm()) < 3e-2, name


def test_fp32_matches_fp64():
    x64 = make_inputs(2, 300, 4, 64, seed=11)
    y32, s32 = wkv7_chunked(*[t.float() for t in x64])
    y64, s64 = wkv7_sequential(*x64)
    assert ((y32.double() - y64).norm() / y64.norm()) < 1e-5
    assert ((s32.double() - s64).norm() / s64.norm()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_stays_fp32_under_mixed_precision_autocast(dtype):
    """bf16-mixed training runs the model under autocast; the op must not let it demote the state."""
    x64 = make_inputs(1, 200, 2, 32, seed=13)
    x = [t.to(dtype).requires_grad_() for t in x64]
    state = torch.randn(1, 2, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, s, _ = wkv7(*x, state=state)
        (y.float().square().sum() + s.sum()).backward()
    assert y.dtype == dtype and s.dtype == torch.float32 and state.grad.dtype == torch.float32
    y_ref, s_ref = wkv7_sequential(*[t.detach().double() for t in x], state=state.detach().double())
    assert ((s.double() - s_ref).norm() / s_ref.norm()) < 1e-5
    if dtype == torch.float32:
        assert ((y.double() - y_ref).norm() / y_ref.norm()) < 1e-5


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
    with pytest.raises(KernelUnavailableError, match="unknown wkv7 op 'fast'"):
        resolve_op("fast", "cpu")


def test_the_result_unpacks_as_before_and_carries_no_trial_on_cpu():
    out = wkv7(*make_inputs(1, 3, 1, 4))
    y, state, op = out
    assert y is out.y and state is out.state and op == out.op == "torch_chunked"
    assert out.trials_ms == {}  # "auto" measures only on a GPU


def test_an_op_runs_where_its_availability_check_allows():
    """How a row is chosen: its availability check first, then its priority."""
    calls = []

    def fake_op(r, w, k, v, a, b, state):
        calls.append(r.dtype)
        return wkv7_sequential(r, w, k, v, a, b, state)

    fp64_only = OpEntry("triton", 20, lambda device, dtype: None if dtype == torch.float64 else "fp64 only here",
                        {"wkv7": fake_op})
    table = (*(entry for entry in OPS if entry.name != "triton"), fp64_only)
    x = make_inputs(1, 3, 1, 4)
    assert choose_op("auto", x[0], ops=table) == ("triton", {})
    op_function("triton", ops=table)(*x, None)
    assert calls == [torch.float64]
    assert available_ops("cpu", torch.float32, ops=table) == ["torch_chunked", "torch_sequential"]
    assert resolve_op("auto", "cpu", torch.float32, ops=table) == "torch_chunked"
    with pytest.raises(KernelUnavailableError, match="fp64 only here"):
        resolve_op("triton", "cpu", torch.float32, ops=table)


def test_the_table_lists_each_op_once_for_the_families_it_serves():
    assert [entry.name for entry in OPS] == ["cuda", "triton", "triton_chunked", "fla", "cpu", "torch_chunked",
                                             "torch_sequential"]  # written best first
    assert [entry.priority for entry in OPS] == sorted((entry.priority for entry in OPS), reverse=True)
    for family in ("wkv6", "wkv5"):  # rwkv-fla's kernel has no RWKV-6/5 form
        assert [entry.name for entry in dispatch.family_ops(family)] == [
            "cuda", "triton", "triton_chunked", "cpu", "torch_chunked", "torch_sequential"]
    with pytest.raises(KernelUnavailableError, match="unknown wkv6 op 'fla'"):
        resolve_op("fla", "cpu", family="wkv6")


def test_every_lazily_named_function_exists():
    lazy = [f for entry in OPS for f in (entry.availability, *entry.functions.values())
            if isinstance(f, LazyFunction)]
    assert len(lazy) >= 5  # every GPU op names its module instead of importing it
    for function in lazy:
        assert callable(function.load()), function


def test_importing_the_kernels_loads_no_gpu_module():
    code = ("import sys, rwkv_tui.kernels; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('triton', 'rwkvfla', 'fla') "
            "or m.split('.')[-1] in ('wkv7_cuda', 'wkv7_triton', 'wkv7_triton_jit', 'wkv7_fla', "
            "'chunk_state_pass', 'availability')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == []


def test_bad_shapes_are_named():
    x = make_inputs(2, 5, 2, 4)
    with pytest.raises(ValueError, match="input k"):
        wkv7(x[0], x[1], x[2][:, :4], *x[3:])
    with pytest.raises(ValueError, match=r"state must be \[B, H, N, N\]"):
        wkv7(*x, state=torch.zeros(2, 2, 4, 5))
    with pytest.raises(ValueError, match="T ≥ 1"):
        wkv7(*[t[:, :0] for t in x])


# --- the official package as an oracle -------------------------------------------------------------------
# Its x070 CPU path (RWKV_x070_TMix_seq) wraps the recurrence in the time mix. With token-shift mixes at 0,
# the gate at 1, the bonus at 0 and an identity output, what comes out is group_norm(y) and the final state.

def _time_mix_params(T, H, N, seed=0):
    C = H * N
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    return {
        "x": randn(T, C), "state": randn(H, N, N),
        "R": randn(C, C, scale=C ** -0.5), "K": randn(C, C, scale=C ** -0.5), "V": randn(C, C, scale=C ** -0.5),
        "w0": randn(C), "w1": randn(C, 8, scale=0.3), "w2": randn(8, C, scale=0.3),
        "a0": randn(C), "a1": randn(C, 8, scale=0.3), "a2": randn(8, C, scale=0.3),
        "k_k": 1 + randn(C, scale=0.2), "k_a": 1 + randn(C, scale=0.2),
    }


def _run_official_time_mix(params_file: str, out_file: str) -> None:
    """In the subprocess: the package reads its switches from the environment at import time."""
    import rwkv.model as official

    p = torch.load(params_file, weights_only=True)
    C = p["x"].shape[1]
    H, N = p["state"].shape[0], p["state"].shape[1]
    zeros, ones = torch.zeros(C), torch.ones(C)
    out, _, state, _ = official.RWKV_x070_TMix_seq(
        0, H, N, p["x"], zeros, p["x"], p["state"].clone(),
        zeros, zeros, zeros, zeros, zeros, zeros,                    # x_r, x_w, x_k, x_v, x_a, x_g
        p["w0"], p["w1"], p["w2"], p["a0"], p["a1"], p["a2"],
        zeros, torch.zeros(C, 1), torch.zeros(1, C),                  # v0, v1, v2 (unused in layer 0)
        torch.zeros(C, 1), torch.full((1, C), 2.0),                   # g1, g2: gate = 2 * sigmoid(0) = 1
        p["k_k"], p["k_a"], zeros,                                    # k_k, k_a, r_k
        p["R"], p["K"], p["V"], torch.eye(C), ones, zeros,            # R_, K_, V_, O_, ln_w, ln_b
    )
    torch.save({"out": out, "state": state}, out_file)


def test_sequential_matches_the_official_rwkv_package(tmp_path):
    pytest.importorskip("rwkv")
    T, H, N = 24, 2, 8
    p = _time_mix_params(T, H, N)
    torch.save(p, tmp_path / "params.pt")
    env = dict(os.environ, RWKV_V7_ON="1", RWKV_CUDA_ON="0", RWKV_JIT_ON="0")
    proc = subprocess.run([sys.executable, str(Path(__file__)), str(tmp_path / "params.pt"), str(tmp_path / "out.pt")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = torch.load(tmp_path / "out.pt", weights_only=True)

    # The same inputs as the package derives them (DESIGN.md's time mix), then our op in float64.
    q = {name: t.double() for name, t in p.items()}
    x = q["x"]
    r, k, v = x @ q["R"], x @ q["K"], x @ q["V"]
    w = -F.softplus(-(q["w0"] + torch.tanh(x @ q["w1"]) @ q["w2"])) - 0.5
    a = torch.sigmoid(q["a0"] + (x @ q["a1"]) @ q["a2"])
    kk = F.normalize((k * q["k_k"]).view(T, H, N), dim=-1)
    k = k * (1 + (a - 1) * q["k_a"])
    heads = (1, T, H, N)
    y, state = wkv7_sequential(r.view(heads), w.view(heads), k.view(heads), v.view(heads),
                               -kk.view(heads), (kk * a.view(T, H, N)).view(heads), state=q["state"][None])

    def rel(got, want):
        return float((got.double() - want).norm() / want.norm())

    assert rel(official["state"], state[0]) < 1e-5
    assert rel(official["out"], F.group_norm(y.view(T, H * N), H, eps=64e-5)) < 1e-4


@pytest.fixture
def fresh_autotune():
    """The autotune cache is the kernels' one process-wide state: a test starts and ends with it empty."""
    autotune.reset_autotune()
    yield
    autotune.reset_autotune()


def test_auto_measures_each_op_once_and_drops_failing_ones(fresh_autotune, monkeypatch):
    """kernels.autotune: the fastest op wins, a failing op is skipped, the choice is cached."""
    calls = {"slow": 0, "fast": 0}

    def slow(*x):
        calls["slow"] += 1
        time.sleep(0.02)  # a clear margin on a busy CI machine: the same work as `fast`, and a wait
        return wkv7_chunked(*x)

    def fast(*x):
        calls["fast"] += 1
        return wkv7_chunked(*x)

    def broken(*x):
        raise RuntimeError("does not compile here")

    def everywhere(device, dtype):
        return None

    candidates = [OpEntry(name, priority, everywhere, {"wkv7": fn})
                  for name, fn, priority in [("broken", broken, 60), ("slow", slow, 50), ("fast", fast, 40)]]
    cpu = torch.device("cpu")
    choice = autotune.fastest_op(cpu, torch.float32, (1, 50, 3, 16), candidates)
    assert choice.op == "fast"
    (label, trials), = choice.trials_ms.items()  # what events.jsonl shows
    assert label == "wkv7 cpu float32 N=16 BH=4 T=64"  # B·H and T rounded up to powers of two
    assert trials["slow"] >= 20.0 and trials["fast"] < trials["slow"] and "does not compile" in trials["broken"]
    before = dict(calls)
    assert autotune.fastest_op(cpu, torch.float32, (2, 64, 2, 16), candidates) == choice  # same kind
    assert calls == before
    one_token = autotune.fastest_op(cpu, torch.float32, (1, 1, 2, 16), candidates)  # generation: measured apart
    assert list(one_token.trials_ms) == ["wkv7 cpu float32 N=16 BH=2 T=1"]
    assert autotune.trial_size(5000, 1024) == 1024 and autotune.trial_size(1, 1024) == 1
    monkeypatch.setenv("RWKV_TUI_WKV_AUTO", "fixed")
    assert autotune.fastest_op(cpu, torch.float32, (1, 8, 1, 32), candidates) == ("broken", {})  # priority order
    monkeypatch.delenv("RWKV_TUI_WKV_AUTO")
    autotune.reset_autotune()  # forgets every choice: the same kind of input is measured again
    before = dict(calls)
    assert autotune.fastest_op(cpu, torch.float32, (1, 50, 3, 16), candidates).op == "fast"
    assert calls["fast"] > before["fast"]


@pytest.mark.cuda
def test_auto_on_a_gpu_returns_what_its_trial_measured(fresh_autotune):
    candidates = [op for op in available_ops("cuda", torch.float32) if op not in autotune.NEVER_MEASURED]
    if len(candidates) < 2:
        pytest.skip(f"only {candidates} can run here: nothing to measure")
    x = [t.float().cuda() for t in make_inputs(1, 64, 2, 16)]
    out = wkv7(*x)
    (label, trials), = out.trials_ms.items()
    assert label == f"wkv7 {x[0].device} float32 N=16 BH=2 T=64"
    assert out.op == min((op for op in trials if isinstance(trials[op], float)), key=trials.get)
    assert wkv7(*x).trials_ms == out.trials_ms  # one measurement per kind of input
    assert wkv7(*x, op="torch").trials_ms == {}  # a named op is not measured


if __name__ == "__main__":
    _run_official_time_mix(sys.argv[1], sys.argv[2])
