"""Shared by the benchmarks: machine facts, and a JSON result file under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions (None when absent), read from the metadata without importing anything."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def save_result(name: str, rows: list[dict], extra: dict | None = None,
                directory: str | Path | None = None) -> Path:
    """Write the rows with the machine facts and the exact command to `directory` (bench/results/
    by default) as `{name}-{device}-{date}.json`; a second call the same day overwrites it."""
    out_dir = Path(directory) if directory is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        **(extra or {}),
        "rows": rows,
    }
    path = out_dir / f"{name}-{payload['machine']['device'].replace(' ', '_')}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"
    return str(value)


def add_device_options(parser, smoke_help: str) -> None:
    """--device, --out and --smoke, as every GPU benchmark takes them."""
    import torch

    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="folder for the JSON (default bench/results/; with "
                                                    "--smoke a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help=smoke_help)


def default_smoke_folder(args) -> None:
    """Smoke runs never litter bench/results/."""
    if args.smoke and args.out is None:
        import tempfile

        args.out = str(Path(tempfile.gettempdir()) / "rwkv-tui-bench-smoke")


def comma_list(text: str) -> list[str]:
    """"a, b," -> ["a", "b"]: the benchmarks' list options."""
    return [part.strip() for part in text.split(",") if part.strip()]


def run_facts(script: str, argv: list[str] | None) -> dict:
    """What every GPU benchmark saves beside its rows: package versions and, when `main(argv)` is
    called in-process (tests), the command that call stands for (else save_result takes sys.argv)."""
    facts: dict = {"versions": package_versions("torch", "triton", "lightning", "bitsandbytes")}
    if argv is not None:
        facts["command"] = shlex.join(["python3", script, *argv])
    return facts
