"""WKV7 through rwkv-fla's `chunk_rwkv7`: chunked Triton kernels (the DPLR delta rule), an adapter only.

rwkv-fla (checked against 0.7.202508221413, rwkvfla/ops/rwkv7/chunk.py and
generalized_delta_rule/dplr/) computes, per batch and head, with a key-major state h [K, V]:

    h_t = diag(exp(log_w_t)) h_{t-1} + b_t (a_tᵀ h_{t-1}) + k_t v_tᵀ,    o_t = scale · h_tᵀ r_t

which is our recurrence transposed. So the adapter only converts conventions:
- the decay goes in as `log_w` = -exp(w) (our w is log(-log(decay))). rwkv-fla's own `w=`
  argument would do that conversion too, but in a `torch.compile`d helper, and in rwkv-fla's
  first 0.7 releases `w` meant the log decay itself; `log_w` fails loudly there instead.
- states are [B, H, K, V] key-major there, value-major here: transposed on the way in and out.
- `scale` is passed as 1.0 explicitly: RWKV-7 does not scale r, and fla's core defaults to N**-0.5.
- inputs stay [B, T, H, N] (head_first=False), which rwkv-fla's kernels want anyway.

The package is imported on first use (it pulls in triton and transformers), from its own
`rwkvfla` namespace: the `fla` name it also installs collides with upstream
flash-linear-attention, whose chunk_rwkv7 has had other conventions.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import torch

from rwkv_tui.kernels.availability import needs_cuda_and_float

INSTALL_HINT = "pip install 'rwkv-tui[gpu]' (rwkv-fla needs triton < 3.9)"


@functools.cache
def _fla_missing() -> str | None:
    """Why rwkv-fla's chunk_rwkv7 cannot be used here, or None. Imports it, once."""
    try:
        import triton
        from rwkvfla.ops.rwkv7 import chunk_rwkv7
    except Exception as exc:  # not installed, or a broken install that fails while importing
        return f"rwkv-fla's chunk_rwkv7 cannot be imported ({exc}): {INSTALL_HINT}"
    if "log_w" not in inspect.signature(chunk_rwkv7).parameters:
        return f"this rwkv-fla is too old (its chunk_rwkv7 has no log_w argument): {INSTALL_HINT}"
    major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    if (major, minor) >= (3, 9):
        # Imports fine, then fails in every kernel: triton 3.9 removed tl.make_block_ptr.
        return f"rwkv-fla's kernels need triton < 3.9, found triton {triton.__version__}: {INSTALL_HINT}"
    return None


def fla_availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when rwkv-fla's op can run on `device` with `dtype`; otherwise why not."""
    return needs_cuda_and_float("rwkv-fla's chunk_rwkv7", device, dtype) or _fla_missing()


def _chunk_rwkv7() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    from rwkvfla.ops.rwkv7 import chunk_rwkv7

    return chunk_rwkv7


def to_fla(w: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Our (w, value-major state) as rwkv-fla's (log_w, key-major initial_state), both fp32.
    fp32 log_w: the kernels read it as fp32 anyway, and a bf16 -exp(w) would round the decay twice."""
    log_w = -torch.exp(w.float())
    return log_w, None if state is None else state.float().transpose(-1, -2)


def from_fla_state(final_state: torch.Tensor) -> torch.Tensor:
    """rwkv-fla's key-major [B, H, K, V] fp32 final state as our value-major [B, H, V, K]."""
    return final_state.transpose(-1, -2).contiguous()


def wkv7_fla(r, w, k, v, a, b, state=None):
    """The dispatcher's contract (see kernels.dispatch.wkv7): (y in the input dtype, fp32 state).
    Differentiable in all six inputs and `state` through rwkv-fla's own backward."""
    log_w, initial_state = to_fla(w, state)
    with warnings.catch_warnings():
        # A shape heuristic (seq_len < num_heads ⇒ "maybe head-first?") that misfires for
        # short sequences; our layout is always [B, T, H, N].
        warnings.filterwarnings("ignore", message="Input tensor shape suggests potential format mismatch")
        y, final_state = _chunk_rwkv7()(
            r=r, k=k, v=v, a=a, b=b, log_w=log_w, scale=1.0,
            initial_state=initial_state, output_final_state=True,
        )
    return y, from_fla_state(final_state)
