"""Linear products for inference on the CPU, in fp32 without gradients; elsewhere `F.linear`.

- `inference_linear`: a prefill's matrix products through oneDNN's GEMM instead of the default
  (MKL's), which measured 10-35% faster for this model's shapes at 256 rows on an AMD EPYC
  (AVX-512) box, the same products to rounding.
- `value_product`: the channel mix's value product for one token, reading only the weight rows
  its relu² input does not zero (kernels/cpu/sparse_matvec.c): decoding on the CPU reads every
  weight once per token, and this is the layer's largest matrix. The kernel reads the weight
  transposed ([in, out] rows); chat.lay_out_for_decoding stores the value weight that way
  (column-major) when `skips_zero_rows()` says the kernel is here.

RWKV_TUI_CPU_KERNEL=0 turns both off, as it does the C WKV op.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from rwkv_tui.kernels.cpu_library import cpu_kernels_off, cpu_library, pointer


@functools.cache
def _onednn_linear():
    """torch's oneDNN linear operator (it serves torch.compile's CPU path), or None without it."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def inference_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x [..., in], weight [out, in]) without bias, through oneDNN where it fits."""
    onednn = _onednn_linear()
    if (onednn is None or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.is_grad_enabled() or cpu_kernels_off()):
        return F.linear(x, weight)
    return onednn(x, weight, None, "none", [], "")


def skips_zero_rows() -> bool:
    """Whether the CPU kernel is built and loaded here."""
    return not isinstance(cpu_library(), str)


def value_product(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(hidden [B, in], weight [out, in]) -> [B, out]; on the CPU in fp32, without
    gradients, with `weight` stored column-major, it skips the rows of weightᵀ where hidden is 0."""
    if not (hidden.device.type == "cpu" and hidden.dtype == weight.dtype == torch.float32 and hidden.dim() == 2
            and weight.t().is_contiguous() and not torch.is_grad_enabled()):
        return F.linear(hidden, weight)
    library = cpu_library()
    if isinstance(library, str):
        return F.linear(hidden, weight)
    rows, cols = weight.shape[1], weight.shape[0]
    hidden = hidden.contiguous()
    out = torch.empty(hidden.shape[0], cols)
    for row in range(hidden.shape[0]):  # decoding is one row; a batch is a few
        library.rows_matvec(rows, cols, pointer(weight), pointer(hidden[row]), pointer(out[row]))
    return out
