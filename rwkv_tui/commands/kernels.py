"""`rwkv-tui kernels`: which WKV operators this machine can run, why not the others, how fast."""

from __future__ import annotations

import json

from rwkv_tui.trainer.config import DTYPE_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "kernels",
        help="list the WKV operators this machine can run and why not the others; "
             "--build compiles the CUDA kernel now, --time measures them",
        description="Training picks the WKV operator with hardware.op (auto by default: on a GPU "
                    "the fastest available one, measured on first use). This lists every operator "
                    "for a device and dtype, says why an unavailable one cannot run, and can build "
                    "the CUDA kernel ahead of the first run or time the available ones.",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when a GPU is present)")
    parser.add_argument("--dtype", choices=tuple(DTYPE_NAMES), default=None,
                        help="input dtype (default: bf16 on a GPU, fp32 on CPU)")
    parser.add_argument("--head-size", type=int, default=64, help="the model's head size (default 64)")
    parser.add_argument("--heads", type=int, default=None,
                        help="batch × heads to time with (default: 32 on a GPU, as a 1.5B model; 2 on CPU)")
    parser.add_argument("--ctx-len", type=int, default=None, help="sequence length to time with "
                                                                  "(default: 1024 on a GPU, 64 on CPU)")
    parser.add_argument("--build", action="store_true", help="compile the CUDA WKV7 kernel now (cached)")
    parser.add_argument("--time", action="store_true",
                        help="time forward+backward of every available op once, as op=auto does")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import torch

    from rwkv_tui.kernels.autotune import NEVER_MEASURED, time_ops
    from rwkv_tui.kernels.dispatch import op_function, op_report
    from rwkv_tui.trainer.errors import RwkvTuiError

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RwkvTuiError("no CUDA GPU is visible to torch", hint="use --device cpu, or check the driver")
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = getattr(torch, DTYPE_NAMES[dtype_name])

    if args.build:
        _build_cuda_kernel()
    report = [{"op": name, "priority": priority, "available": reason is None, "reason": reason}
              for name, priority, reason in op_report(device, dtype)]
    if args.time:
        timed = [row["op"] for row in report if row["available"] and row["op"] not in NEVER_MEASURED]
        on_gpu = device.type == "cuda"
        shape = (1, args.ctx_len or (1024 if on_gpu else 64), args.heads or (32 if on_gpu else 2), args.head_size)
        for op, result in time_ops({name: op_function(name) for name in timed}, device, dtype, shape).items():
            row = next(r for r in report if r["op"] == op)
            row["ms"] = round(result * 1e3, 3) if isinstance(result, float) else None
            row["error"] = None if isinstance(result, float) else result
    if args.json:
        print(json.dumps({"device": str(device), "dtype": dtype_name, "head_size": args.head_size, "ops": report},
                         indent=2))
        return 0
    _print_table(report, f"WKV7 operators on {device}, {dtype_name}, head size {args.head_size}")
    return 0


def _build_cuda_kernel() -> None:
    from rwkv_tui.kernels.errors import KernelUnavailableError
    from rwkv_tui.kernels.wkv7_cuda import build_directory, load_extension
    from rwkv_tui.trainer.errors import RwkvTuiError

    try:
        load_extension()
    except KernelUnavailableError as exc:
        raise RwkvTuiError(str(exc), hint="op=auto still trains with the other operators") from None
    print(f"CUDA WKV7 kernel ready in {build_directory()}")


def _print_table(report: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    timed = any("ms" in row for row in report)
    table = Table(title=title)
    for column in ("op", "ready", *(["fwd+bwd ms"] if timed else []), "why not"):
        table.add_column(column)
    for row in report:
        cells = [row["op"], "yes" if row["available"] else "no"]
        if timed:
            cells.append("" if row.get("ms") is None else f"{row['ms']:.2f}")
        cells.append(row.get("error") or row["reason"] or "")
        table.add_row(*cells)
    Console().print(table)
