"""Peak memory and tokens/s of training steps against ctx_len, whole samples vs chunks (infctx).

Each configuration runs in a fresh child process that builds a random model through the trainer
(`build_training`, LoRA), then does warm-up + timed optimizer steps of `accumulate_gradients` on
random tokens, as a run does. On the CPU the memory is the child's peak RSS (ru_maxrss: the
interpreter, torch, the model and the step together; `step_rss_mb` is the part above the RSS
after the model was built; glibc's mmap threshold is fixed, see CHILD_ENV); on a GPU it is
torch.cuda.max_memory_allocated over the steps.

The issue's aim: at ctx 16384 in chunks of 1024, memory at most 1.5x that of ctx 1024 unchunked.

    python bench/infctx.py [--layers 4 --embd 256 --vocab 4096] [--ctx 1024 4096 16384] [--chunk 1024]
                           [--steps 2] [--device cpu|cuda] [--skip-whole-above N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
import torch
from lightning.fabric import Fabric
from rwkv_tui.trainer.config import RunConfig
from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec
from rwkv_tui.trainer.training.infctx import chunked_batch_loss
from rwkv_tui.trainer.training.loop import accumulate_gradients, optimizer_step
from rwkv_tui.trainer.training.setup import build_training

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
cuda = args["device"] == "cuda"
spec = rwkv7_spec(args["layers"], args["embd"], vocab_size=args["vocab"], head_size=64)
config = RunConfig.for_method("lora")
config.data.ctx_len, config.data.chunk_ctx = args["ctx"], args["chunk"]
config.hardware.precision = "bf16" if cuda else "fp32"
config.hardware.grad_cp = args["grad_cp"]
fabric = Fabric(accelerator=args["device"], devices=1, precision="bf16-mixed" if cuda else "32-true")
training = build_training(config, random_state_dict(spec, seed=0), spec, fabric)
model = training.model
model.train()

def batches():
    while True:
        ids = torch.randint(0, spec.vocab_size, (1, args["ctx"] + 1), device=fabric.device)
        yield {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": torch.ones(1, args["ctx"], device=fabric.device)}

stream = batches()
loss_fn = chunked_batch_loss(fabric, args["chunk"]) if args["chunk"] else None
built_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if cuda:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
times = []
for step in range(1 + args["steps"]):  # the first is a warm-up
    start = time.perf_counter()
    loss = accumulate_gradients(fabric, model, stream, 1, loss_fn=loss_fn)
    optimizer_step(fabric, model, training.optimizer, 1.0)
    if cuda:
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
    assert loss == loss, "nan loss"
peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
seconds = sum(times[1:]) / len(times[1:])
out = {"tokens_per_s": round(args["ctx"] / seconds, 1), "step_s": round(seconds, 2),
       "peak_rss_mb": round(peak_rss), "step_rss_mb": round(peak_rss - built_rss), "loss": round(loss, 4)}
if cuda:
    out["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
print(json.dumps(out))
"""


# glibc keeps freed buffers above its (self-raising) mmap threshold in the heap, so peak RSS would
# count fragmentation as memory; a fixed threshold returns them, and RSS tracks the live tensors.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(settings: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(settings)], capture_output=True, text=True,
                          env={**os.environ, **CHILD_ENV})
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--ctx", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per child (1: steadier figures on a shared machine)")
    parser.add_argument("--grad-cp", action="store_true", help="per-block gradient checkpointing too")
    parser.add_argument("--skip-whole-above", type=int, default=0,
                        help="do not run unchunked samples longer than this (0: run all)")
    parser.add_argument("--name", default="infctx")
    args = parser.parse_args()

    rows = []
    for ctx in args.ctx:
        chunks = [0] + ([args.chunk] if args.chunk < ctx else [])
        for chunk in chunks:
            if chunk == 0 and args.skip_whole_above and ctx > args.skip_whole_above:
                continue
            settings = {"layers": args.layers, "embd": args.embd, "vocab": args.vocab, "ctx": ctx, "chunk": chunk,
                        "steps": args.steps, "device": args.device, "grad_cp": args.grad_cp,
                        "threads": args.threads}
            row = {"ctx_len": ctx, "chunk_ctx": chunk, **measure(settings)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    memory = "max_memory_allocated_mb" if args.device == "cuda" else "peak_rss_mb"
    base = next((r.get(memory) for r in rows if r["ctx_len"] == min(args.ctx) and r["chunk_ctx"] == 0), None)
    for row in rows:
        if base and row.get(memory):
            row["memory_vs_shortest_whole"] = round(row[memory] / base, 2)
    print_table(rows, ["ctx_len", "chunk_ctx", "tokens_per_s", "step_s", "peak_rss_mb", "step_rss_mb",
                       *(["max_memory_allocated_mb"] if args.device == "cuda" else []), "memory_vs_shortest_whole"])
    model = {"n_layer": args.layers, "n_embd": args.embd, "vocab_size": args.vocab, "head_size": 64,
             "method": "lora", "micro_bsz": 1, "grad_cp": args.grad_cp,
             "precision": "bf16-mixed" if args.device == "cuda" else "fp32", "torch_threads": args.threads}
    load = os.getloadavg()  # the machine may be shared: tokens/s are only comparable within one run
    path = save_result(args.name, rows, {"model": model, "memory": memory, "child_env": CHILD_ENV,
                                         "load_average_1_5_15": [round(x, 1) for x in load]})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
