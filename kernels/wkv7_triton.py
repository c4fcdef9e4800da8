"""WKV7 in Triton: the recurrence one step at a time, the state in registers, split by value rows.

Row i of the state only ever needs row i (S_t[i] = S_{t-1}[i] ⊙ d + (S_{t-1}[i]·a) b + v_i k),
so each program owns ROWS rows of one head's [N, N] state and walks the sequence: B·H·N/ROWS
programs run in parallel, each reading the six input vectors once per step.

Backward: the forward pass saves the fp32 state at the start of every CHUNK steps. Going
backwards chunk by chunk, a program reloads that checkpoint, recomputes the chunk's states
into a small scratch buffer, and walks the chunk in reverse with them: exact, never dividing
by a decay. Sums over value rows (the r, w, k, a, b gradients) are atomic adds when a head's
rows are split over several programs.

Portable on purpose: plain pointer arithmetic (no `tl.make_block_ptr`, gone in triton 3.9),
and the kernels run unchanged under TRITON_INTERPRET=1 on the CPU, which is how CI tests them.
The kernels (kernels/wkv7_triton_jit.py) are imported on first use, so TRITON_INTERPRET
is read then, not when this module is imported.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from rwkv_tui.kernels.availability import needs_cuda_and_float

CHUNK = 16
SUPPORTED_HEAD_SIZES = (16, 32, 64, 128)


@functools.cache
def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install 'rwkv-tui[gpu]')"
    return None


def triton_availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the Triton op can run on `device` with `dtype`; otherwise why not."""
    return needs_cuda_and_float("the Triton kernel", device, dtype) or _triton_missing()


def _kernels():
    """The jitted kernels, imported on first use (see kernels/wkv7_triton_jit.py for why)."""
    from rwkv_tui.kernels import wkv7_triton_jit

    return wkv7_triton_jit.forward_kernel, wkv7_triton_jit.backward_kernel


def rows_per_program(batch_heads: int, head_size: int) -> int:
    """Split heads over several programs only when there are too few heads to fill a GPU:
    16 rows keep the [rows, N] tiles in registers; whole heads avoid the atomic adds."""
    return head_size if batch_heads >= 512 else min(head_size, 16)


class _Wkv7Triton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state):
        B, T, H, N = r.shape
        forward_kernel, _ = _kernels()
        rows = rows_per_program(B * H, N)
        y = torch.empty_like(r)
        final_state = torch.empty(B, H, N, N, device=r.device, dtype=torch.float32)
        checkpoints = torch.empty(B * H, -(-T // CHUNK), N, N, device=r.device, dtype=torch.float32)
        s0 = state.float().contiguous() if state is not None else final_state  # unread without HAS_S0
        forward_kernel[(B * H, N // rows)](r, w, k, v, a, b, s0, y, final_state, checkpoints, T,
                                           H=H, N=N, ROWS=rows, CHUNK=CHUNK, HAS_S0=state is not None)
        ctx.save_for_backward(r, w, k, v, a, b, checkpoints)
        ctx.has_state, ctx.state_dtype = state is not None, None if state is None else state.dtype
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        return y, final_state

    @staticmethod
    def backward(ctx, dy, d_final_state):
        r, w, k, v, a, b, checkpoints = ctx.saved_tensors
        B, T, H, N = r.shape
        _, backward_kernel = _kernels()
        rows = rows_per_program(B * H, N)
        split = rows < N
        dy = dy.contiguous() if dy is not None else torch.zeros_like(r)
        grads = [(torch.zeros if split else torch.empty)(r.shape, device=r.device, dtype=torch.float32)
                 for _ in range(6)]
        dr, dw, dk, dv, da, db = grads
        d_state = torch.empty(B, H, N, N, device=r.device, dtype=torch.float32)
        scratch = torch.empty(B * H * (N // rows), CHUNK, rows, N, device=r.device, dtype=torch.float32)
        ds_out = d_final_state.float().contiguous() if d_final_state is not None else d_state
        backward_kernel[(B * H, N // rows)](r, w, k, v, a, b, dy, ds_out, checkpoints, scratch,
                                            dr, dw, dk, dv, da, db, d_state, T,
                                            H=H, N=N, ROWS=rows, CHUNK=CHUNK,
                                            HAS_DS_OUT=d_final_state is not None, SPLIT=split)
        grads = [g.to(r.dtype) for g in grads]
        return (*grads, d_state.to(ctx.state_dtype) if ctx.has_state else None)


def wkv7_triton(r, w, k, v, a, b, state=None):
    """The dispatcher's contract (see kernels.dispatch.wkv7): (y in the input dtype, fp32 state)."""
    N = r.shape[-1]
    if N not in SUPPORTED_HEAD_SIZES:
        raise ValueError(f"the Triton WKV7 kernel supports head sizes {SUPPORTED_HEAD_SIZES}, got {N}")
    r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
    return _Wkv7Triton.apply(r, w, k, v, a, b, state)
