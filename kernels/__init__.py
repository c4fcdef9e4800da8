"""WKV operators. `wkv7(r, w, k, v, a, b, state=None, op="auto") -> (y, state, op)`; `wkv6`, `wkv5`.

Imports only torch: the engine (`trainer`) builds on this, never the other way round. The GPU
ops' modules (and triton, rwkv-fla) load on first use; kernels.dispatch.OPS lists every op.
"""

from rwkv_tui import refuse_bare_import

refuse_bare_import(__name__)

from rwkv_tui.kernels.dispatch import (
    KernelUnavailableError,
    Wkv7Output,
    available_ops,
    resolve_op,
    wkv7,
)
from rwkv_tui.kernels.cpu_linear import inference_linear, skips_zero_rows, value_product
from rwkv_tui.kernels.wkv6 import wkv5, wkv6
from rwkv_tui.kernels.wkv7_chunked import wkv7_chunked
from rwkv_tui.kernels.wkv7_reference import wkv7_sequential

__all__ = ["KernelUnavailableError", "Wkv7Output", "available_ops", "inference_linear", "resolve_op",
           "skips_zero_rows", "value_product", "wkv5", "wkv6", "wkv7", "wkv7_chunked", "wkv7_sequential"]
