"""What the validation loss costs during training: one real run (`trainer.training.loop.run`) on
a random model with the config's defaults (ctx_len, micro_bsz, loading, loss_mask, val_every),
data.val_fraction of generated chat documents held out; seconds per validation (the `val`
events' own timing) against seconds per optimizer step (between step events), and the share of
training time validation takes at the default interval: val_seconds / (val_every x step_seconds).

    python bench/validation.py [--layers 2 --embd 64 --documents 1000 --val-fraction 0.05 --steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402
from bench.dataprep import conversations  # noqa: E402


def main() -> None:
    import torch

    from rwkv_tui.trainer.checkpoint import save_state_dict
    from rwkv_tui.trainer.config import RunConfig
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec
    from rwkv_tui.trainer.training.folder import RunFolder, read_all_events
    from rwkv_tui.trainer.training.loop import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: data.val_every)")
    parser.add_argument("--method", default="lora")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = rwkv7_spec(args.layers, args.embd, vocab_size=65536, head_size=64 if args.embd >= 128 else 16)
        model = save_state_dict(random_state_dict(spec, seed=0), work / "model.pth", dtype=torch.bfloat16)
        data = work / "chat.jsonl"
        with data.open("w", encoding="utf-8") as out:
            for _, (question, answer) in zip(range(args.documents), conversations(0)):
                out.write(json.dumps({"text": f"User: {question}\n\nAssistant: {answer}"}, ensure_ascii=False) + "\n")
        config = RunConfig.for_method(args.method)
        config.model.path, config.data.path = str(model), str(data)
        config.data.val_fraction = args.val_fraction
        steps = args.steps or config.data.val_every
        config.epochs.epoch_steps, config.epochs.epoch_count = steps, 1
        config.hardware.accelerator = "cpu" if not torch.cuda.is_available() else "auto"
        config.hardware.precision = "fp32" if not torch.cuda.is_available() else config.hardware.precision
        config.output.proj_dir = str(work / "runs")
        run(config, work / "runs" / "bench")
        events = read_all_events(RunFolder.at(work / "runs" / "bench"))

    steps = [(e["step"], e["t"]) for e in events if e["kind"] == "step"]  # the dashboard may not see every step
    step_s = (steps[-1][1] - steps[0][1]) / (steps[-1][0] - steps[0][0])
    vals = [e for e in events if e["kind"] == "val"]
    val_s = statistics.median(e["seconds"] for e in vals)
    every = config.data.val_every
    row = {"model": f"L{args.layers} C{args.embd}", "method": args.method, "ctx_len": config.data.ctx_len,
           "micro_bsz": config.data.micro_bsz, "loading": config.data.loading, "loss_mask": config.data.loss_mask,
           "val_documents": vals[0]["documents"], "val_tokens": vals[0]["tokens"],
           "step_tokens": config.data.ctx_len * config.data.micro_bsz, "steps": steps[-1][0],
           "step_s": round(step_s, 4), "val_s": round(val_s, 4), "val_every": every,
           "val_share_at_default": round(val_s / (every * step_s + val_s), 4),
           "vals_s": [e["seconds"] for e in vals],
           "done": next((e.get("reason") for e in events if e["kind"] == "done"), None)}
    print_table([row], ["model", "val_documents", "val_tokens", "step_s", "val_s", "val_every", "val_share_at_default"])
    print(save_result("validation", [row], {"load_average": os.getloadavg(),
                                            "note": "machine shared with other engineers; see load_average"}))


if __name__ == "__main__":
    main()
