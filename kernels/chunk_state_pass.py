"""The one sequential part of the chunked WKV7 op, S_{i+1} = S_i A_i + U_i over chunks, as a Triton kernel.

In `kernels/wkv7_chunked.py` everything inside a chunk is a batched matrix product over all
chunks at once; only this pass walks the chunks in order. As a Python loop it is one small
[N, N] product (and an autograd node) per chunk, and on a GPU the launches, not the
arithmetic, set its speed. Here one program per (batch, head) keeps S on chip and walks all
chunks in a single launch, forward and backward.

The products use "tf32x3" (three TF32 tensor-core products, about fp32's accuracy): plain fp32
("ieee") lowers a [64, 64] product to scalar FMAs that spill kilobytes of registers, and
one-pass TF32 would round the fp32 state to 10 mantissa bits every chunk.
"""

from __future__ import annotations

import torch

from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked

SUPPORTED_HEAD_SIZES = (16, 32, 64)  # tl.dot needs ≥ 16; a [128, 128] fp32 tile would not fit on chip
NUM_WARPS = 4  # the fewest spills across sm_80-sm_90 (tests/triton_compile_check.py --arch shows them)


def _kernels():
    from rwkv_tui.kernels import wkv7_triton_jit  # imported on first use: see kernels/wkv7_triton_jit.py

    return wkv7_triton_jit.state_pass_forward_kernel, wkv7_triton_jit.state_pass_backward_kernel


class ChunkStatePass(torch.autograd.Function):
    """(S0 [B,H,N,N] or None, A [B,H,n,N,N], U [B,H,n,N,N]) -> (starts [B,H,n,N,N], S_n [B,H,N,N]), fp32."""

    @staticmethod
    def forward(ctx, s0, transition, update):
        B, H, n, N, _ = transition.shape
        forward_kernel, _ = _kernels()
        transition, update = transition.float().contiguous(), update.float().contiguous()
        starts = torch.empty_like(transition)
        final = torch.empty(B, H, N, N, device=transition.device, dtype=torch.float32)
        initial = s0.float().contiguous() if s0 is not None else final  # unread without HAS_S0
        forward_kernel[(B * H,)](initial, transition, update, starts, final, n, N=N, HAS_S0=s0 is not None,
                                 num_warps=NUM_WARPS)
        ctx.save_for_backward(transition, starts)
        ctx.s0_dtype = None if s0 is None else s0.dtype
        ctx.set_materialize_grads(False)
        return starts, final

    @staticmethod
    def backward(ctx, d_starts, d_final):
        transition, starts = ctx.saved_tensors
        B, H, n, N, _ = transition.shape
        _, backward_kernel = _kernels()
        d_transition, d_update = torch.empty_like(transition), torch.empty_like(transition)
        d_s0 = torch.empty(B, H, N, N, device=transition.device, dtype=torch.float32)
        d_starts_in = d_starts.float().contiguous() if d_starts is not None else d_s0  # unread when absent
        d_final_in = d_final.float().contiguous() if d_final is not None else d_s0
        backward_kernel[(B * H,)](transition, starts, d_starts_in, d_final_in, d_transition, d_update, d_s0, n,
                                  N=N, HAS_D_STARTS=d_starts is not None, HAS_D_OUT=d_final is not None,
                                  num_warps=NUM_WARPS)
        return (None if ctx.s0_dtype is None else d_s0.to(ctx.s0_dtype)), d_transition, d_update


def chunk_state_pass(s0, transition, update):
    """Chunk start states and the final state; see `ChunkStatePass`."""
    return ChunkStatePass.apply(s0, transition, update)


def wkv7_chunked_triton(r, w, k, v, a, b, state=None):
    """The chunked op (kernels/wkv7_chunked.py) with its pass over chunks in Triton: the
    dispatcher's contract, (y in the input dtype, fp32 state)."""
    N = r.shape[-1]
    if N not in SUPPORTED_HEAD_SIZES:
        raise ValueError(f"the chunked Triton op supports head sizes {SUPPORTED_HEAD_SIZES}, got {N}")
    return wkv7_chunked(r, w, k, v, a, b, state, state_pass=chunk_state_pass)
