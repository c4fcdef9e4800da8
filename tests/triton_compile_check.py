"""Compile the Triton WKV7 kernels ahead of time for a GPU that is not here (sm_90 by default):
triton's own front end, LLVM and ptxas run on the CPU, so a kernel that would not compile on
the GPU fails here. Prints each kernel's registers and stack (spills) from the cubin.

    python tests/triton_compile_check.py [--arch 90]

Run without TRITON_INTERPRET (the interpreter replaces the jitted functions).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from rwkv_tui.kernels import wkv7_triton_jit as jit
from rwkv_tui.kernels.chunk_state_pass import NUM_WARPS as PASS_WARPS
from rwkv_tui.kernels.wkv7_triton import CHUNK

INPUTS = ["r_ptr", "w_ptr", "k_ptr", "v_ptr", "a_ptr", "b_ptr"]
GRADS = ["dr_ptr", "dw_ptr", "dk_ptr", "dv_ptr", "da_ptr", "db_ptr", "ds0_ptr"]


def signatures(dtype: str, N: int, rows: int) -> dict:
    x = "*" + dtype
    forward = {name: x for name in INPUTS}
    forward.update(s0_ptr="*fp32", y_ptr=x, s_out_ptr="*fp32", ckpt_ptr="*fp32", T="i32")
    backward = {name: x for name in [*INPUTS, "dy_ptr"]}
    backward.update(ds_out_ptr="*fp32", ckpt_ptr="*fp32", scratch_ptr="*fp32", **{g: "*fp32" for g in GRADS},
                    T="i32")
    shared = {"H": 32, "N": N, "ROWS": rows, "CHUNK": CHUNK}
    pass_forward = {"s0_ptr": "*fp32", "a_ptr": "*fp32", "u_ptr": "*fp32", "starts_ptr": "*fp32", "s_out_ptr": "*fp32",
                    "n_chunks": "i32"}
    pass_backward = {name: "*fp32" for name in ["a_ptr", "starts_ptr", "d_starts_ptr", "d_out_ptr", "da_ptr",
                                                "du_ptr", "ds0_ptr"]}
    pass_backward["n_chunks"] = "i32"
    kernels = {"forward": (jit.forward_kernel, forward, {**shared, "HAS_S0": True}, 4),
               "backward": (jit.backward_kernel, backward, {**shared, "HAS_DS_OUT": True, "SPLIT": rows < N}, 4)}
    if dtype == "fp32" and rows == 16:  # the chunk pass is fp32 and has no rows: once per N
        kernels["chunk pass forward"] = (jit.state_pass_forward_kernel, pass_forward, {"N": N, "HAS_S0": True},
                                         PASS_WARPS)
        kernels["chunk pass backward"] = (jit.state_pass_backward_kernel, pass_backward,
                                          {"N": N, "HAS_D_STARTS": True, "HAS_D_OUT": True}, PASS_WARPS)
    return kernels


def resource_usage(cubin: bytes) -> str:
    tool = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", handle.name], capture_output=True, text=True)
    return " ".join(part for line in out.stdout.splitlines() if "REG" in line
                    for part in line.split() if part.startswith(("REG", "STACK")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 90")
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    print(f"triton {triton.__version__}, sm_{args.arch}")
    for dtype in ("bf16", "fp32"):
        for N, rows in ((64, 16), (64, 64), (32, 16)):
            for name, (fn, signature, constexprs, warps) in signatures(dtype, N, rows).items():
                for constant in constexprs:
                    signature[constant] = "constexpr"
                kernel = triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=target,
                                        options={"num_warps": warps})
                print(f"{name:19} {dtype} N={N} rows={rows}: {resource_usage(kernel.asm['cubin'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
