"""The CPU kernels (kernels/cpu/*.c): the forward-only WKV7 op and the value product that skips
zero rows, against the torch references; where the library cannot be built, the fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rwkv_tui.kernels import KernelUnavailableError, available_ops, value_product, wkv6, wkv7
from rwkv_tui.kernels import cpu_library as library_module
from rwkv_tui.kernels.cpu_library import cpu_library
from rwkv_tui.kernels.wkv6_reference import wkv6_sequential
from rwkv_tui.kernels.wkv7_cpu import cpu_availability, wkv7_cpu
from rwkv_tui.kernels.wkv7_reference import wkv7_sequential
from tests.test_kernels_wkv7 import make_inputs

needs_library = pytest.mark.skipif(isinstance(cpu_library(), str), reason=f"no CPU kernels: {cpu_library()}")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@needs_library
@pytest.mark.parametrize(("B", "T", "H", "N"), [(1, 1, 1, 4), (2, 37, 3, 16), (1, 70, 2, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_wkv7_cpu_equals_the_reference(B, T, H, N, with_state):
    x64 = make_inputs(B, T, H, N, seed=T)
    state = torch.randn(B, H, N, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    want_y, want_state = wkv7_sequential(*x64, state=state if with_state else None)
    given = state.float() if with_state else None
    kept = None if given is None else given.clone()
    with torch.no_grad():
        y, final = wkv7_cpu(*[t.float() for t in x64], state=given)
    assert y.dtype == final.dtype == torch.float32 and y.shape == (B, T, H, N)
    assert rel(y, want_y) < 1e-5 and rel(final, want_state) < 1e-5
    if given is not None:
        assert torch.equal(given, kept)  # the caller's state is never written to


@needs_library
def test_auto_takes_the_c_op_for_inference_and_the_torch_op_for_training():
    x = [t.float() for t in make_inputs(1, 9, 2, 8)]
    with torch.no_grad():
        assert wkv7(*x).op == "cpu"
        assert available_ops("cpu")[0] == "cpu"
        assert wkv7(*[t.double() for t in x]).op == "torch_chunked"  # fp32 only
    assert wkv7(*x).op == "torch_chunked"  # gradients on: the C op has no backward
    with pytest.raises(KernelUnavailableError, match="forward only, so it serves inference"):
        wkv7(*x, op="cpu")


@needs_library
def test_the_c_op_serves_rwkv6_through_the_wkv7_form():
    g = torch.Generator().manual_seed(3)
    r, k, v = (torch.randn(1, 11, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    w = -torch.rand(1, 11, 2, 8, generator=g, dtype=torch.float64) * 3
    u = torch.randn(2, 8, generator=g, dtype=torch.float64)
    want_y, want_state = wkv6_sequential(r, w, k, v, u)
    with torch.no_grad():
        out = wkv6(*(t.float() for t in (r, w, k, v, u)))
    assert out.op == "cpu" and rel(out.y, want_y) < 1e-5 and rel(out.state, want_state) < 1e-5


def test_the_switch_turns_the_c_op_off(monkeypatch):
    monkeypatch.setenv("RWKV_TUI_CPU_KERNEL", "0")
    with torch.no_grad():
        assert "RWKV_TUI_CPU_KERNEL=0" in cpu_availability(torch.device("cpu"), torch.float32)
        assert wkv7(*[t.float() for t in make_inputs(1, 5, 1, 4)]).op == "torch_chunked"
    hidden, weight = torch.relu(torch.randn(1, 8)), torch.randn(8, 4).t()
    with torch.no_grad():
        torch.testing.assert_close(value_product(hidden, weight), F.linear(hidden, weight))


def test_a_failed_build_is_a_reason_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("RWKV_TUI_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(library_module, "_compiler", lambda: "/bin/false")
    library_module._load.cache_clear()
    try:
        reason = cpu_library()
        assert isinstance(reason, str) and "building the CPU kernels with /bin/false failed" in reason
        with torch.no_grad():
            assert "building the CPU kernels" in cpu_availability(torch.device("cpu"), torch.float32)
            assert wkv7(*[t.float() for t in make_inputs(1, 5, 1, 4)]).op == "torch_chunked"
        assert not list(tmp_path.glob("*.so"))  # no half-written library left behind
        monkeypatch.setattr(library_module, "_compiler", lambda: None)
        library_module._load.cache_clear()
        assert "no C compiler found" in cpu_library()
    finally:
        library_module._load.cache_clear()


@needs_library
@pytest.mark.parametrize("rows", [1, 3])
def test_value_product_skips_zero_rows_and_equals_linear(rows):
    g = torch.Generator().manual_seed(rows)
    hidden = torch.relu(torch.randn(rows, 96, generator=g)) ** 2  # about half zero, as relu² leaves it
    hidden[0, :50] = 0
    weight = torch.randn(40, 96, generator=g).t().contiguous().t()  # [out, in], column-major
    with torch.no_grad():
        got = value_product(hidden, weight)
    torch.testing.assert_close(got, F.linear(hidden, weight), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # all zero: a zero row
        assert torch.equal(value_product(torch.zeros(1, 96), weight), torch.zeros(1, 40))


def test_value_product_falls_back_to_linear_where_the_kernel_does_not_fit():
    hidden, weight = torch.relu(torch.randn(2, 16)), torch.randn(8, 16)  # row-major weight
    with torch.no_grad():
        torch.testing.assert_close(value_product(hidden, weight), F.linear(hidden, weight))
    column_major = weight.t().contiguous().t().requires_grad_()
    out = value_product(hidden, column_major)  # gradients on: linear, differentiable
    out.sum().backward()
    assert column_major.grad is not None


@needs_library
def test_the_c_block_decodes_as_the_compiled_block(tmp_path):
    """A model laid out for decoding on the CPU runs each RWKV-7 block as one C call
    (kernels/cpu/block7_one.c); token after token, from no state and from a tuned one, its
    logits and states equal those of the same model decoding through TorchScript."""
    from conftest import write_tiny_checkpoint
    from rwkv_tui.trainer.chat import lay_out_for_decoding
    from rwkv_tui.trainer.generate import load_for_chat

    path, _ = write_tiny_checkpoint(tmp_path, n_layer=3, n_embd=64, head_size=16, vocab_size=256)
    in_c, compiled = lay_out_for_decoding(load_for_chat(path)), load_for_chat(path).eval()
    assert all(block.cpu_decode is not None for block in in_c.blocks)
    assert "cpu_decode" not in compiled.blocks[0].__dict__
    g = torch.Generator().manual_seed(5)
    tuned = [torch.randn(4, 16, 16, generator=g) * 0.3 for _ in in_c.blocks]
    tokens = torch.randint(0, 256, (1, 7), generator=g)
    for start in ("none", "tuned"):
        for model in (in_c, compiled):
            for block, state in zip(model.blocks, tuned):
                block.att.time_state = torch.nn.Parameter(state.clone()) if start == "tuned" else None
        with torch.no_grad():
            states, steps = [None, None], [[], []]
            for t in range(tokens.shape[1]):
                for side, model in enumerate((in_c, compiled)):
                    logits, states[side] = model(tokens[:, t: t + 1], states[side])
                    steps[side].append(logits)
        torch.testing.assert_close(torch.cat(steps[0], 1), torch.cat(steps[1], 1), rtol=1e-5, atol=1e-5)
        for ours, theirs in zip(*states):
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_library
def test_a_replaced_weight_takes_the_block_off_the_c_path(tmp_path):
    """The C call reads the weights it was given; once a parameter's memory changes (a new
    `.data`), the block decodes through TorchScript again and sees the new weight."""
    from conftest import write_tiny_checkpoint
    from rwkv_tui.trainer.chat import lay_out_for_decoding
    from rwkv_tui.trainer.generate import load_for_chat

    path, _ = write_tiny_checkpoint(tmp_path, vocab_size=256)
    model, plain = lay_out_for_decoding(load_for_chat(path)), load_for_chat(path).eval()
    for m in (model, plain):
        m.blocks[1].ffn.x_k.data = torch.full_like(m.blocks[1].ffn.x_k, 0.25)
    assert not model.blocks[1].cpu_decode.current() and model.blocks[0].cpu_decode.current()
    with torch.no_grad():
        got, _ = model(torch.tensor([[9]]))
        want, _ = plain(torch.tensor([[9]]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_inference_linear_is_linear_and_steps_aside_for_gradients(monkeypatch):
    """A prefill's products go through oneDNN on the CPU without gradients: the same numbers as
    F.linear to rounding, any input rank, column-major weights too; with gradients, F.linear."""
    from rwkv_tui.kernels import inference_linear

    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 9, 48, generator=g), torch.randn(32, 48, generator=g)
    with torch.no_grad():
        for w in (weight, weight.t().contiguous().t()):
            torch.testing.assert_close(inference_linear(x, w), F.linear(x, weight), rtol=1e-5, atol=1e-5)
    trained = weight.clone().requires_grad_()
    inference_linear(x, trained).sum().backward()
    assert trained.grad is not None
    monkeypatch.setenv("RWKV_TUI_CPU_KERNEL", "0")
    with torch.no_grad():
        assert torch.equal(inference_linear(x, weight), F.linear(x, weight))

