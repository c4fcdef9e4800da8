"""Decode and prefill speed of our model against the `rwkv` pip package, same checkpoint, one run.

    python bench/decode.py [--layers 12 --embd 768] [--threads 1,2] [--repeats 5] [--model M.pth]
                           [--device cpu|cuda] [--decode-tokens 32] [--prefill-tokens 256]

Decode is `model(idx[1,1], state)` token after token, as the chat runs it (ours: the model
`rwkv-tui chat` loads, fp32 on the CPU with its decoding layout; the package:
`RWKV(model, strategy="cpu fp32")` with RWKV_JIT_ON=1, RWKV_CUDA_ON=0, as tests/rwkv_oracle.py
runs it); prefill is one forward over `--prefill-tokens` tokens from a zero state, logits for the
last position only on both sides (the package's default; ours with `last_only=True`, as chat
prefills a prompt). Without
`--model` a random-init checkpoint of the asked shape (World vocab) is written to a temporary
folder: speed depends on the weights' values only through how many of the channel mix's relu²
inputs are zero (half at random init), whose weight rows our decode skips.
`RWKV_TUI_CPU_KERNEL=0` in the environment measures ours without the C kernels (kernels/cpu/).

Each side runs in its own worker process (the package flips global torch settings when
imported), loaded once; the parent asks them in turn, one at a time, so they never compete for
the CPU with each other: for every repeat and thread count, both sides' decode, then both
sides' prefill, the side that goes first alternating between repeats. Medians over the
repeats, with every sample kept. Other load on the machine is recorded (os.getloadavg) before
and after, because it moves both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import comma_list, package_versions, print_table, save_result  # noqa: E402

MARK = "@@bench "  # the package prints its own lines on stdout; ours start with this


# ---- the workers -------------------------------------------------------------------------------

def _ours(path: str, device: str):
    import torch

    from rwkv_tui.trainer.chat import load_chat_model

    model = load_chat_model(path, device=device)

    def forward(tokens: list[int], state):  # next-token logits only, as generate() asks and the package gives
        return model(torch.tensor([tokens], device=device), state, last_only=True)

    return forward


def _package(path: str, device: str):
    os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="1", RWKV_CUDA_ON="0")
    from rwkv.model import RWKV

    model = RWKV(model=path.removesuffix(".pth"), strategy=f"{device} {'fp32' if device == 'cpu' else 'bf16'}")

    def forward(tokens: list[int], state):
        return model.forward(tokens, state)

    return forward


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _worker(side: str, path: str, device: str) -> None:
    """Answer `{"threads", "decode", "prefill"}` requests on stdin with tokens/s on stdout."""
    import torch

    forward = (_ours if side == "ours" else _package)(path, device)
    tokens = [(i * 7919) % 251 + 1 for i in range(4096)]  # fixed, varied ids (any vocab; speed ignores them)
    print(MARK + json.dumps({"ready": side}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        with torch.no_grad():
            if request["what"] == "decode":
                _, state = forward(tokens[:8], None)
                for t in tokens[8:11]:  # warm-up steps, not timed
                    _, state = forward([t], state)
                _sync(device)
                n = request["tokens"]
                start = time.perf_counter()
                for t in tokens[11: 11 + n]:
                    _, state = forward([t], state)
                _sync(device)
            else:
                n = request["tokens"]
                forward(tokens[:16], None)  # warm-up
                _sync(device)
                start = time.perf_counter()
                forward(tokens[:n], None)
                _sync(device)
        seconds = time.perf_counter() - start
        print(MARK + json.dumps({"tokens_per_s": n / seconds, "seconds": seconds,
                                 "threads": torch.get_num_threads()}), flush=True)


# ---- the parent --------------------------------------------------------------------------------

class Worker:
    def __init__(self, side: str, path: str, device: str) -> None:
        self.side = side
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", side, "--model", path,
                                         "--device", device],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # loaded

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"the {self.side} worker stopped (exit code {self.process.wait()})")

    def ask(self, what: str, tokens: int, threads: int) -> dict:
        self.process.stdin.write(json.dumps({"what": what, "tokens": tokens, "threads": threads}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def random_checkpoint(layers: int, embd: int, folder: Path) -> Path:
    import torch

    from rwkv_tui.trainer.checkpoint import save_state_dict
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec

    spec = rwkv7_spec(layers, embd)
    return save_state_dict(random_state_dict(spec, seed=0), folder / f"random-L{layers}-C{embd}.pth",
                           dtype=torch.float32)


def measure(path: str, args) -> tuple[list[dict], list[dict]]:
    workers = {side: Worker(side, path, args.device) for side in ("ours", "rwkv")}
    samples: list[dict] = []
    try:
        for threads in args.threads:
            for repeat in range(args.repeats):
                for what, n in (("decode", args.decode_tokens), ("prefill", args.prefill_tokens)):
                    # Interleaved, and in turn first (ABBA): the same load, and its drift, moves both.
                    for side in ("ours", "rwkv") if repeat % 2 == 0 else ("rwkv", "ours"):
                        result = workers[side].ask(what, n, threads)
                        samples.append({"threads": threads, "repeat": repeat + 1, "what": what, "side": side,
                                        "tokens": n, **result})
                        print(f"  threads={threads} repeat={repeat + 1} {what:7s} {side:4s} "
                              f"{result['tokens_per_s']:8.2f} tok/s", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    rows = []
    for threads in args.threads:
        row: dict = {"device": args.device, "threads": threads}
        for what in ("decode", "prefill"):
            for side in ("ours", "rwkv"):
                row[f"{what}_{side}_tok_s"] = statistics.median(
                    s["tokens_per_s"] for s in samples if (s["threads"], s["what"], s["side"]) == (threads, what, side))
            row[f"{what}_ratio"] = row[f"{what}_ours_tok_s"] / row[f"{what}_rwkv_tok_s"]
        rows.append(row)
    return rows, samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--model", help="a checkpoint to use instead of a random-init one")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (ours in bf16, the package 'cuda bf16')")
    parser.add_argument("--threads", type=lambda s: [int(x) for x in comma_list(s)], default=[1, 2],
                        help="torch.set_num_threads for both sides, each in turn (default 1,2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--out", help="folder for the JSON (default bench/results/)")
    parser.add_argument("--worker", choices=["ours", "rwkv"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.model, args.device)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = args.model or str(random_checkpoint(args.layers, args.embd, Path(folder)))
        rows, samples = measure(path, args)
    load_after = os.getloadavg()
    print_table(rows, ["device", "threads", "decode_ours_tok_s", "decode_rwkv_tok_s", "decode_ratio",
                       "prefill_ours_tok_s", "prefill_rwkv_tok_s", "prefill_ratio"])
    extra = {"model": args.model or f"random init, L{args.layers} C{args.embd}, World vocab, fp32 file",
             "decode_tokens": args.decode_tokens, "prefill_tokens": args.prefill_tokens,
             "repeats": args.repeats, "versions": package_versions("torch", "rwkv"),
             "cpu_kernels": os.environ.get("RWKV_TUI_CPU_KERNEL", "1") != "0",
             "loadavg_before": load_before, "loadavg_after": load_after, "samples": samples}
    saved = save_result("decode", rows, extra, directory=args.out)
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
