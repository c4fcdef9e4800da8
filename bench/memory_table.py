"""GPU memory per model size and method, from the VRAM estimator (`rwkv_tui.trainer.vram.estimate`):
one row per shape in the model catalogue (`rwkv-tui models list`), one column per method, at
ctx_len 1024 (state tuning: its default 512), micro_bsz 1, bf16, gradient checkpointing on, one
GPU. These are estimates, not measurements; prints a markdown table in GB and writes the JSON to
bench/results/memory-table-estimated-<date>.json.

    python bench/memory_table.py [--ctx-len 1024]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS  # noqa: E402

# (column, method, method.quant)
COLUMNS = [("full", "full", "none"), ("lora", "lora", "none"), ("pissa", "pissa", "none"),
           ("miss", "miss", "none"), ("lisa", "lisa", "none"), ("state", "state", "none"),
           ("lora+nf4", "lora", "nf4")]


def table(ctx_len: int) -> list[dict]:
    from rwkv_tui.trainer.config import METHOD_DEFAULTS, RunConfig
    from rwkv_tui.trainer.hub.catalog import load_catalog
    from rwkv_tui.trainer.model.init import rwkv7_spec
    from rwkv_tui.trainer.vram import GB, estimate

    rows, seen = [], set()
    for entry in load_catalog():
        if (entry.n_layer, entry.n_embd) in seen:
            continue  # the G1 and World checkpoints of one size share a shape
        seen.add((entry.n_layer, entry.n_embd))
        spec = rwkv7_spec(entry.n_layer, entry.n_embd)
        row = {"parameters": entry.parameters, "shape": entry.shape, "n_layer": entry.n_layer,
               "n_embd": entry.n_embd, "gb": {}, "ctx_len": {}}
        for column, method, quant in COLUMNS:
            overrides = {"data__micro_bsz": 1, "hardware__precision": "bf16", "hardware__grad_cp": True,
                         "method__quant": quant}
            if "data.ctx_len" not in METHOD_DEFAULTS[method]:
                overrides["data__ctx_len"] = ctx_len
            config = RunConfig.for_method(method, **overrides)
            row["gb"][column] = round(estimate(spec, config, 1, "cuda").total / GB, 2)
            row["ctx_len"][column] = config.data.ctx_len
        row["n_params"] = spec.n_params
        rows.append(row)
    return sorted(rows, key=lambda r: r["n_params"])


def markdown(rows: list[dict]) -> str:
    names = [c for c, _, _ in COLUMNS]
    lines = ["| model | layers × width | " + " | ".join(names) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in names) + " |"]
    for row in rows:
        lines.append(f"| {row['parameters']} | {row['shape']} | "
                     + " | ".join(f"{row['gb'][n]:.1f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx-len", type=int, default=1024, help="ctx_len of every method but state")
    parser.add_argument("--out", default=None, help="folder for the JSON (default bench/results/)")
    args = parser.parse_args(argv)

    rows = table(args.ctx_len)
    print(markdown(rows))
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "memory-table",
        "kind": "estimated (rwkv_tui.trainer.vram.estimate; no GPU calibration committed yet)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["python", "bench/memory_table.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"micro_bsz": 1, "precision": "bf16", "grad_cp": True, "n_gpus": 1, "device": "cuda",
                     "ctx_len": args.ctx_len, "state_ctx_len": "the method's default", "unit": "GiB"},
        "rows": rows,
    }
    path = out_dir / f"memory-table-estimated-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
