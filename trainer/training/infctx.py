"""Infctx: a ctx_len sample trained as consecutive chunks of `data.chunk_ctx` tokens.

RWKV is an RNN, so a sample need not be trained in one piece. `chunked_loss` runs the model
chunk by chunk, handing each chunk's final state (the WKV state and both token-shift states,
per layer) to the next one *with its gradient*, and wraps every chunk in
`torch.utils.checkpoint`: forward keeps only the states between chunks, backward recomputes
one chunk's activations at a time. Peak activation memory then follows chunk_ctx, while the
loss and every gradient equal the unchunked run's (one backward over the whole sample).

The loss is the token-weighted mean over the whole micro batch: each chunk contributes its
*sum* of masked token losses and the total is divided once by the mask count of the whole
batch, exactly as `loop.masked_cross_entropy` does unchunked. (A mean per chunk would weight
a chunk of padding as much as a chunk of answers.)

The first chunk starts from the model's own initial state (state=None): zeros, or the tuned
`time_state` of state tuning, whose gradient therefore reaches the first chunk only through
the carried states, as in an unchunked run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rwkv_tui.trainer.errors import RwkvTuiError

# forward(input_ids [B,T], state or None) -> (logits [B,T,V], state): one model call.
Forward = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
BatchLoss = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]

# The WKV ops of kernels/dispatch.py OPS whose backward takes the final state's gradient and
# returns the initial state's: all of them today (their tests check both: the "state gradient"
# cases of tests/test_kernels_*.py with use_final_state=True). tests/test_infctx.py fails when
# an op joins OPS without being judged here, so a new kernel cannot silently break infctx.
OPS_WITH_STATE_GRADIENTS = frozenset({"cuda", "triton", "triton_chunked", "fla", "torch_chunked",
                                      "torch_sequential"})
# Ops with no backward at all (the CPU inference kernel): unavailable while gradients are on, so
# "auto" never picks them for training, and a training config cannot name them (config.OPS).
FORWARD_ONLY_OPS = frozenset({"cpu"})


def masked_loss_sum(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The sum (not the mean) of the cross entropy over the tokens the mask marks as trained."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * loss_mask.flatten().to(losses.dtype)).sum()


def _chunk_step(forward: Forward, input_ids, targets, loss_mask, state):
    """One chunk: its masked loss sum and the state the next chunk starts from. Run under
    checkpoint, so its logits and activations are freed at once and recomputed in backward."""
    logits, new_state = forward(input_ids, state)
    return masked_loss_sum(logits, targets, loss_mask), _own_storage(new_state)


def _own_storage(state):
    """The state with views copied out: a token-shift state is `x[:, -1]`, a view that would keep
    the chunk's whole [B, T, C] input alive until backward, one per layer and chunk."""
    return [tuple(t.clone() if t._base is not None else t for t in layer) for layer in state]


def chunked_loss(forward: Forward, input_ids: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor,
                 chunk_ctx: int) -> torch.Tensor:
    """The masked mean cross entropy of [B, T] samples computed in chunks of `chunk_ctx` tokens,
    the state (with gradients) carried across; equal to the unchunked loss. A last chunk shorter
    than chunk_ctx is run as it is (config validation keeps ctx_len a multiple of chunk_ctx)."""
    if chunk_ctx < 1:
        raise ValueError(f"chunk_ctx must be at least 1, got {chunk_ctx}")
    total_tokens = loss_mask.sum().to(torch.float32).clamp(min=1.0)
    loss_sum = torch.zeros((), device=input_ids.device)
    state = None
    for start in range(0, input_ids.shape[1], chunk_ctx):
        piece = slice(start, start + chunk_ctx)
        # Non-reentrant: the gradient flows into `state` (a nested list) and nested checkpoints
        # (hardware.grad_cp's per-block ones) work inside.
        chunk_sum, state = checkpoint(_chunk_step, forward, input_ids[:, piece], targets[:, piece],
                                      loss_mask[:, piece], state, use_reentrant=False)
        loss_sum = loss_sum + chunk_sum
    return loss_sum / total_tokens


def chunked_batch_loss(fabric, chunk_ctx: int) -> BatchLoss:
    """The `loss_fn(model, batch)` for `loop.accumulate_gradients` with chunk_ctx > 0.

    Each chunk calls the unwrapped model under Fabric's autocast rather than the Fabric wrapper:
    the wrapper would cast the carried fp32 WKV state to bf16 at every chunk under bf16-mixed
    (its input conversion touches every float tensor), and a strategy wrapper (DDP) must not run
    its forward again inside backward's recomputation. Config validation therefore keeps
    chunk_ctx to single-process runs (see `chunk_ctx_problems`)."""
    from rwkv_tui.trainer.training.setup import fabric_unwrap

    def loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        core = fabric_unwrap(model)
        ensure_state_gradients(core.wkv_op)

        def forward(input_ids, state):
            with fabric.autocast():
                return core(input_ids, state)

        return chunked_loss(forward, batch["input_ids"], batch["targets"], batch["loss_mask"], chunk_ctx)

    return loss


def ensure_state_gradients(op: str) -> None:
    """Refuse a WKV op whose backward drops the carried state's gradient: with it, chunks would
    train as if each started from a constant state, and nothing would say so."""
    from rwkv_tui.kernels.dispatch import ALIASES

    name = ALIASES.get(op, op)
    if name != "auto" and name not in OPS_WITH_STATE_GRADIENTS:  # "auto" picks among OPS: all judged
        raise RwkvTuiError(f"data.chunk_ctx needs a WKV op that passes gradients through the state; "
                           f"{op!r} is not known to", hint="set hardware.op=auto (every built-in op does)")
