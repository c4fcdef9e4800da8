"""Peak memory and time of building a training dataset straight from a jsonl (what a run with
`data.path = X.jsonl` does before its first step), on a generated chat-style jsonl.

The dataset is built in a fresh child process, so its memory (children included: the
tokenizing workers) is that of the data path alone, and the cache starts empty. Reported: each
process's own peak RSS (ru_maxrss: the child, and the largest of its workers) and the whole
tree's peak PSS, sampled (`bench.dataprep.TreeMemory`: pages the workers share with it, such as
the World tokenizer, counted once). The cache goes to a fresh folder (the trainer's
`cache_dir`), so every run tokenizes.

    python -m bench.jsonl_rss [--mb 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dataprep import WORK, TreeMemory, make_jsonl  # noqa: E402

_CHILD = """
import inspect, json, resource, sys, time
from rwkv_tui.trainer.data.datasets import build_dataset
source, cache_dir = sys.argv[1], sys.argv[2]
start = time.perf_counter()
extra = {"cache_dir": cache_dir} if "cache_dir" in inspect.signature(build_dataset).parameters else {}
dataset = build_dataset(source, ctx_len=1024, loading="pad", loss_mask="sft", **extra)
first = dataset[0]["input_ids"].sum().item()
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"samples": len(dataset), "seconds": round(seconds, 1), "peak_rss_mb": round(own),
                  "peak_child_rss_mb": round(children)}))
"""


def measure(source: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="rwkv-jsonl-rss-") as cache_dir:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(source), cache_dir], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        with TreeMemory(child.pid) as memory:
            stdout, stderr = child.communicate()
    if child.returncode:
        raise RuntimeError(f"building the dataset failed:\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), **memory.peaks()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    source = WORK / f"bench-{args.mb}mb.jsonl"
    if not source.exists() or source.stat().st_size < args.mb * 1024 * 1024:
        make_jsonl(source, args.mb)
    for stale in source.parent.glob(f".{source.name}.*"):  # the old in-place cache: measure a cold start
        stale.unlink()
    result = {"jsonl_mb": round(source.stat().st_size / 2**20), **measure(source)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
