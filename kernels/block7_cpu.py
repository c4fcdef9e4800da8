"""One RWKV-7 block for one token as one C call (kernels/cpu/block7_one.c): CPU decoding in fp32.

Through TorchScript, a decoded token costs ~70 small operators a layer, a few microseconds of
dispatch each; in C they are loops between the matrix-vector products. The trainer's model
(trainer/model/rwkv7.py) lists a block's weights in the order of `WEIGHTS` and keeps a
`CpuBlock` per block for a model laid out for decoding; this module only checks and calls.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch

from rwkv_tui.kernels.cpu_library import cpu_library, pointer

# The C enum's order. Matrices (r, k, v, o, ffn_k, ffn_v and the low-rank w1 … g2) are [in, out]
# rows: an nn.Linear weight passed as `weight.t()` of a column-major weight.
WEIGHTS = ("ln1_w", "ln1_b", "ln2_w", "ln2_b", "x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2",
           "a0", "a1", "a2", "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k", "r", "k", "v", "o",
           "lnx_w", "lnx_b", "ffn_x_k", "ffn_k", "ffn_v")


class CpuBlock:
    """A block's weights held for the C call, or `CpuBlock.build` says why it cannot be."""

    def __init__(self, sources: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], dims: Sequence[int],
                 ln_eps: float, lnx_eps: float, library) -> None:
        self.sources = tuple(sources)  # the parameters, to notice a replaced weight
        self.weights = tuple(w.detach() for w in weights)  # keeps the storage the pointers point into
        self.addresses = tuple(w.data_ptr() for w in self.sources)
        self.pointers = (ctypes.c_void_p * len(weights))(*(w.data_ptr() for w in self.weights))
        self.dims = (ctypes.c_int64 * len(dims))(*dims)
        C, H, N, F = dims[:4]
        self.shape, self.scratch_size = (C, H, N), 16 * C + F + sum(dims[4:8])
        self.ln_eps, self.lnx_eps, self.function = ln_eps, lnx_eps, library.rwkv7_block_one

    @classmethod
    def build(cls, sources: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], dims: Sequence[int],
              ln_eps: float, lnx_eps: float) -> CpuBlock | None:
        """None unless the library is here and every weight is a contiguous fp32 CPU tensor."""
        library = cpu_library()
        if isinstance(library, str) or len(weights) != len(WEIGHTS):
            return None
        if not all(w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous() for w in weights):
            return None
        return cls(sources, weights, dims, ln_eps, lnx_eps, library)

    def current(self) -> bool:
        """Whether every parameter still holds the memory the pointers were taken from."""
        return all(source.data_ptr() == address for source, address in zip(self.sources, self.addresses))

    def __call__(self, x, v_first, att_prev, wkv, ffn_prev) -> tuple[torch.Tensor, ...]:
        """x, v_first, att_prev, ffn_prev: [1, C]; wkv [1, H, N, N]. Returns new tensors
        (x, v_first, att_prev, wkv, ffn_prev) after the block; the inputs are not written to."""
        C, H, N = self.shape
        inputs = [t.contiguous() for t in (x, v_first, att_prev, wkv, ffn_prev)]
        outputs = (torch.empty(1, C), torch.empty(1, C), torch.empty(1, C), torch.empty(1, H, N, N), torch.empty(1, C))
        scratch = torch.empty(self.scratch_size)  # per call: two threads may decode with one model
        self.function(self.dims, self.ln_eps, self.lnx_eps, self.pointers, *map(pointer, inputs),
                      *map(pointer, outputs), pointer(scratch))
        return outputs
