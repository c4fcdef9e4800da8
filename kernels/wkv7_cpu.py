"""WKV7 forward as a small C loop (kernels/cpu/wkv7_cpu.c): the CPU op for inference.

Chat, eval and validation prefill on the CPU without gradients; there the chunked torch op
spends most of its time in small batched products, padding and copies (12-14 ms a layer for
256 tokens at C768, against ~3 ms for this loop). Training keeps the torch ops: this one has no
backward, so it is unavailable while gradients are on. kernels/cpu_library.py builds it.
"""

from __future__ import annotations

import torch

from rwkv_tui.kernels.cpu_library import cpu_library, pointer
from rwkv_tui.kernels.errors import KernelUnavailableError


def cpu_availability(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the C op can run on `device` with `dtype` now; otherwise why not."""
    if device.type != "cpu":
        return "the C kernel runs on the CPU"
    if dtype != torch.float32:
        return f"the C kernel takes fp32 inputs, not {dtype}"
    library = cpu_library()
    if isinstance(library, str):
        return library
    if torch.is_grad_enabled():
        return "built; forward only, so it serves inference (chat, eval, validation), not training"
    return None


def wkv7_cpu(r, w, k, v, a, b, state=None):
    """The dispatcher's contract (see kernels.dispatch.wkv7), forward only: (y fp32, state fp32).
    The caller's state is never written to."""
    library = cpu_library()
    if isinstance(library, str):
        raise KernelUnavailableError(f"the CPU WKV7 kernel is unavailable: {library}")
    B, T, H, N = r.shape
    decay = torch.exp(-torch.exp(w.float()))  # torch vectorizes the exponentials; the loop takes decays
    r, k, v, a, b = (x.float().contiguous() for x in (r, k, v, a, b))
    final = torch.zeros(B, H, N, N)
    if state is not None:
        final.copy_(state)
    y = torch.empty(B, T, H, N)
    pointers = [pointer(x) for x in (r, decay, k, v, a, b, final, y)]
    # On the calling thread: splitting the heads over a Python thread pool measured no faster in
    # a 2-thread prefill here (the products dominate), and its idle threads made fork()ed data
    # workers of the same process hang. Many-core machines and long prompts may want it back.
    library.wkv7_forward(B * H, T, H, N, *pointers)
    return y, final
