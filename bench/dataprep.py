"""`rwkv-tui data prepare` against a make_data.py-style baseline (the `rwkv` package's TRIE
tokenizer, one process), on a generated jsonl of at least 50 MB; and prepare from the record
formats users hold (OpenAI messages jsonl, Alpaca parquet) against prepare on the equivalent
{"text"} jsonl: the same documents, so the same token count (target: at least 0.8x as fast).

The baseline is timed on the first `--baseline-mb` MB of the same file (it runs at well
under 1 MB/s); tokens/s are comparable because the text mix is uniform. Each of our rows runs
`prepare` in its own process, so its memory is that of its process tree alone (pool workers
included), reported three ways:

  peak_rss_mb           the largest single process's peak RSS (ru_maxrss, exact);
  peak_tree_pss_mb      the tree's peak total PSS, sampled every 0.2 s (/proc/PID/smaps_rollup):
                        the memory the tree really holds, a page shared by n processes counted 1/n
                        (the ~240 MB World tokenizer is loaded once and shared by the forked
                        workers); this is the figure the 500 MB target is judged on;
  peak_tree_rss_sum_mb  the tree's peak sum of RSS, sampled: counts the shared tokenizer once per
                        process, so an upper bound, not memory used.

The machine may be shared: `--repeats N` runs the rows N times, interleaved, and reports each
row's median time; a converted/text ratio is the median of the ratios of the runs done side by side.

    python bench/dataprep.py [--mb 50] [--baseline-mb 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402

WORK = Path(__file__).resolve().parent / "work"
WORDS = ("the of and to in is was for on that with as by it at from his an were are which this be has or had "
         "water river model train state token learn data answer question").split()
CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"


PARQUET_ROW_GROUP = 16384  # rows per row group, as a streamed reader meets them


def conversations(seed: int = 0) -> Iterator[tuple[str, str]]:
    """Endless (question, answer) pairs, the same for a seed: every input is built from them."""
    rng = random.Random(seed)
    while True:
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
        chinese = "".join(rng.choice(CJK) for _ in range(rng.randint(10, 60)))
        yield f"{question}?", f"{answer.capitalize()}. {chinese}。"


def jsonl_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def make_jsonl(path: Path, megabytes: int, seed: int = 0) -> int:
    """The chat {"text"} jsonl of at least `megabytes` MB; the number of documents written."""
    target = megabytes * 1024 * 1024
    written = documents = 0
    with path.open("w", encoding="utf-8") as out:
        for question, answer in conversations(seed):
            if written >= target:
                break
            line = jsonl_line({"text": f"User: {question}\n\nAssistant: {answer}"})
            out.write(line)
            written += len(line.encode("utf-8"))
            documents += 1
    return documents


def make_messages_jsonl(path: Path, documents: int, seed: int = 0) -> None:
    """The same documents as `make_jsonl`, as OpenAI messages (they convert to the same text)."""
    with path.open("w", encoding="utf-8") as out:
        for _, (question, answer) in zip(range(documents), conversations(seed)):
            out.write(jsonl_line({"messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}]}))


def make_alpaca_inputs(parquet: Path, text_jsonl: Path, documents: int, seed: int = 0) -> None:
    """The same conversations as Alpaca records in a parquet file, and the {"text"} jsonl they
    convert to (Instruction/Response), to compare against."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())])
    rows: list[tuple[str, str]] = []
    with pq.ParquetWriter(parquet, schema) as writer, text_jsonl.open("w", encoding="utf-8") as out:
        for _, (question, answer) in zip(range(documents), conversations(seed)):
            out.write(jsonl_line({"text": f"Instruction: {question}\n\nResponse: {answer}"}))
            rows.append((question, answer))
            if len(rows) == PARQUET_ROW_GROUP:
                writer.write_table(_alpaca_table(rows, schema))
                rows.clear()
        if rows:
            writer.write_table(_alpaca_table(rows, schema))


def _alpaca_table(rows: list[tuple[str, str]], schema):
    import pyarrow as pa

    return pa.table({"instruction": [q for q, _ in rows], "input": [""] * len(rows),
                     "output": [a for _, a in rows]}, schema=schema)


def baseline_tokens_per_s(path: Path, megabytes: float) -> tuple[float, int, float]:
    """make_data.py's per-document work, in one process: the rwkv package's pure-Python TRIE
    tokenizer, its decode round-trip check, `+ [0]`, and a uint16 write (its shuffle and
    temp-file pass are left out, which only flatters the baseline)."""
    import tempfile

    import numpy as np
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from rwkv_tui.trainer.world_tokenizer import find_vocab_file

    tokenizer = TRIE_TOKENIZER(str(find_vocab_file()))
    limit = int(megabytes * 1024 * 1024)
    tokens = read = 0
    start = time.perf_counter()
    with path.open("rb") as handle, tempfile.TemporaryFile() as out:
        for raw in handle:
            read += len(raw)
            if read > limit:
                break
            text = json.loads(raw)["text"]
            ids = tokenizer.encode(text)
            if tokenizer.decode(ids) != text:
                raise RuntimeError("round trip failed")
            ids.append(0)
            out.write(np.array(ids, dtype=np.uint16).tobytes(order="C"))
            tokens += len(ids)
    seconds = time.perf_counter() - start
    return tokens / seconds, tokens, seconds


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its ended children (the pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def prepare_row(source: Path) -> dict:
    """One `prepare` of `source`, timed in this process (run as a child: its own peak RSS)."""
    from rwkv_tui.trainer.data.prepare import prepare_binidx
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    get_tokenizer()  # like the baseline's TRIE construction, loading the vocabulary is not timed
    cpu, start = cpu_seconds(), time.perf_counter()
    result = prepare_binidx(source, WORK / f"bench-{source.stem}", repeat=1, ctx_len=1024, force=True)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"tokens": result.tokens, "documents": result.documents, "seconds": seconds,
            "tokens_per_s": result.tokens / seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task ended meanwhile
                pass
    return pids


def _rollup_mb(pid: int) -> tuple[float, float]:
    """(Rss, Pss) of one process in MB; zeros once it has ended."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        return 0.0, 0.0
    return fields.get("Rss", 0.0), fields.get("Pss", 0.0)


class TreeMemory:
    """Samples a process tree's total RSS and PSS until stopped; the peaks (None without /proc)."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_rss_sum = self.peak_pss = 0.0
        self.available = Path(f"/proc/{pid}/smaps_rollup").exists()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            sizes = [_rollup_mb(pid) for pid in _tree(self.pid)]
            self.peak_rss_sum = max(self.peak_rss_sum, sum(rss for rss, _ in sizes))
            self.peak_pss = max(self.peak_pss, sum(pss for _, pss in sizes))

    def __enter__(self) -> "TreeMemory":
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def peaks(self) -> dict:
        if not self.available:
            return {"peak_tree_pss_mb": None, "peak_tree_rss_sum_mb": None}
        return {"peak_tree_pss_mb": round(self.peak_pss, 1), "peak_tree_rss_sum_mb": round(self.peak_rss_sum, 1)}


def timed_row(tool: str, source: Path) -> dict:
    """`prepare_row` in a fresh process, so no row's memory or caches weigh on another."""
    child = subprocess.Popen([sys.executable, __file__, "--row", str(source)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    with TreeMemory(child.pid) as memory:
        stdout, stderr = child.communicate()
    if child.returncode:
        raise RuntimeError(f"prepare of {source} failed:\n{stderr[-3000:]}")
    row = json.loads(stdout.strip().splitlines()[-1])
    return {"tool": tool, "input": source.name, "input_mb": round(source.stat().st_size / 2**20, 1), **row,
            **memory.peaks()}


ROWS = (("text", "rwkv-tui data prepare"), ("messages", "prepare: OpenAI messages jsonl (converted)"),
        ("alpaca_text", "prepare: Alpaca's {text} jsonl"), ("alpaca_parquet", "prepare: Alpaca parquet (converted)"))


def median_row(runs: list[dict]) -> dict:
    """One row from its repeated runs: the median time and rate, the worst memory, every run's time."""
    seconds = statistics.median(run["seconds"] for run in runs)
    cpu = statistics.median(run["cpu_seconds"] for run in runs)
    worst = {key: max(run[key] for run in runs) if runs[0][key] is not None else None
             for key in ("peak_rss_mb", "peak_tree_pss_mb", "peak_tree_rss_sum_mb")}
    return {**runs[0], "seconds": seconds, "tokens_per_s": runs[0]["tokens"] / seconds, "cpu_seconds": cpu,
            "tokens_per_cpu_s": runs[0]["tokens"] / cpu, **worst,
            "runs_seconds": [round(run["seconds"], 2) for run in runs],
            "runs_cpu_seconds": [round(run["cpu_seconds"], 2) for run in runs]}


def paired_ratio(converted: list[dict], text: list[dict], time_key: str = "seconds") -> float:
    """Median over rounds of converted speed / text speed (same tokens: text time / converted
    time), each pair run one after the other; `time_key` "cpu_seconds" compares the work done,
    which a loaded machine disturbs far less than the wall-clock time."""
    return statistics.median(t[time_key] / c[time_key] for c, t in zip(converted, text))


def make_inputs(megabytes: int) -> dict[str, Path]:
    """The chat {"text"} jsonl, its messages twin, and Alpaca parquet with its {"text"} twin."""
    paths = {"text": WORK / f"bench-{megabytes}mb.jsonl", "messages": WORK / f"bench-{megabytes}mb-messages.jsonl",
             "alpaca_text": WORK / f"bench-{megabytes}mb-alpaca-text.jsonl",
             "alpaca_parquet": WORK / f"bench-{megabytes}mb-alpaca.parquet"}
    if not paths["text"].exists() or paths["text"].stat().st_size < megabytes * 1024 * 1024:
        make_jsonl(paths["text"], megabytes)
    documents = sum(1 for _ in paths["text"].open("rb"))
    if not paths["messages"].exists():
        make_messages_jsonl(paths["messages"], documents)
    if not paths["alpaca_parquet"].exists() or not paths["alpaca_text"].exists():
        make_alpaca_inputs(paths["alpaca_parquet"], paths["alpaca_text"], documents)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--baseline-mb", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of every row (medians)")
    parser.add_argument("--row", type=Path, help=argparse.SUPPRESS)  # internal: one timed prepare, as JSON
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.row:
        print(json.dumps(prepare_row(args.row)))
        return
    inputs = make_inputs(args.mb)
    runs: dict[str, list[dict]] = {key: [] for key, _ in ROWS}
    for _ in range(args.repeats):
        for key, tool in ROWS:
            runs[key].append(timed_row(tool, inputs[key]))
    text, messages, alpaca_text, alpaca = (median_row(runs[key]) for key, _ in ROWS)
    for converted, equivalent in ((messages, text), (alpaca, alpaca_text)):
        if converted["tokens"] != equivalent["tokens"]:
            raise RuntimeError(f"{converted['input']} gave {converted['tokens']} tokens, its {{text}} twin "
                               f"{equivalent['tokens']}: the conversion does not match the text")

    base_rate, base_tokens, base_seconds = baseline_tokens_per_s(inputs["text"], args.baseline_mb)
    rows = [text, messages, alpaca_text, alpaca,
            {"tool": "baseline: rwkv TRIE_TOKENIZER, 1 process", "input": inputs["text"].name,
             "input_mb": args.baseline_mb, "tokens": base_tokens, "documents": None, "seconds": base_seconds,
             "tokens_per_s": base_rate, "cpu_seconds": None, "peak_rss_mb": None, "peak_tree_pss_mb": None,
             "peak_tree_rss_sum_mb": None}]
    print_table(rows, ["tool", "input_mb", "tokens", "seconds", "tokens_per_s", "cpu_seconds", "peak_rss_mb",
                       "peak_tree_pss_mb", "peak_tree_rss_sum_mb"])
    ratio = text["tokens_per_s"] / base_rate
    messages_ratio = paired_ratio(runs["messages"], runs["text"])
    alpaca_ratio = paired_ratio(runs["alpaca_parquet"], runs["alpaca_text"])
    messages_cpu = paired_ratio(runs["messages"], runs["text"], "cpu_seconds")
    alpaca_cpu = paired_ratio(runs["alpaca_parquet"], runs["alpaca_text"], "cpu_seconds")
    peak = max(row["peak_rss_mb"] for row in rows[:4])
    pss = max((row["peak_tree_pss_mb"] or 0) for row in rows[:4]) or None
    print(f"speed-up: {ratio:.1f}x   messages/text: {messages_ratio:.2f}x   alpaca parquet/text: "
          f"{alpaca_ratio:.2f}x   (by CPU time: {messages_cpu:.2f}x, {alpaca_cpu:.2f}x)   peak (worst row): tree PSS {pss} MB, largest process RSS {peak:.0f} MB")
    path = save_result("dataprep", rows, {
        "speedup": ratio, "target_speedup": 10, "target_peak_rss_mb": 500,
        "messages_vs_text": messages_ratio, "alpaca_parquet_vs_text": alpaca_ratio, "target_converted_vs_text": 0.8,
        "messages_vs_text_cpu": messages_cpu, "alpaca_parquet_vs_text_cpu": alpaca_cpu,
        "peak_rss_mb": peak, "peak_tree_pss_mb": pss, "repeats": args.repeats,
        "load_average_1_5_15": list(os.getloadavg()),
        "note": "baseline timed on the first baseline-mb MB of the same file; each converted input holds the same "
                "documents as the {text} jsonl it is compared with (equal token counts, checked); converted/text "
                "ratios are medians of side-by-side pairs; memory: see the module docstring (peak_rss_mb = largest "
                "single process, peak_tree_pss_mb = whole tree, shared pages split, sampled every 0.2 s)"})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
