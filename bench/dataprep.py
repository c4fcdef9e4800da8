"""`rwkv-tui data prepare` against a make_data.py-style baseline (the `rwkv` package's TRIE
tokenizer, one process), on a generated jsonl of at least 50 MB; and prepare from the record
formats users hold (OpenAI messages jsonl, Alpaca parquet) against prepare on the equivalent
{"text"} jsonl: the same documents, so the same token count (target: at least 0.8x as fast).

The baseline is timed on the first `--baseline-mb` MB of the same file (it runs at well
under 1 MB/s); tokens/s are comparable because the text mix is uniform. Each of our rows runs
`prepare` in its own process, so its peak memory is the max RSS of that process tree alone
(pool workers included).

    python bench/dataprep.py [--mb 50] [--baseline-mb 4]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
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


def prepare_row(source: Path) -> dict:
    """One `prepare` of `source`, timed in this process (run as a child: its own peak RSS)."""
    from rwkv_tui.trainer.data.prepare import prepare_binidx
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    get_tokenizer()  # like the baseline's TRIE construction, loading the vocabulary is not timed
    start = time.perf_counter()
    result = prepare_binidx(source, WORK / f"bench-{source.stem}", repeat=1, ctx_len=1024, force=True)
    seconds = time.perf_counter() - start
    return {"tokens": result.tokens, "documents": result.documents, "seconds": seconds,
            "tokens_per_s": result.tokens / seconds, "peak_rss_mb": peak_rss_mb()}


def timed_row(tool: str, source: Path) -> dict:
    """`prepare_row` in a fresh process, so no row's memory or caches weigh on another."""
    run = subprocess.run([sys.executable, __file__, "--row", str(source)], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"prepare of {source} failed:\n{run.stderr[-3000:]}")
    row = json.loads(run.stdout.strip().splitlines()[-1])
    return {"tool": tool, "input": source.name, "input_mb": round(source.stat().st_size / 2**20, 1), **row}


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
    parser.add_argument("--row", type=Path, help=argparse.SUPPRESS)  # internal: one timed prepare, as JSON
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.row:
        print(json.dumps(prepare_row(args.row)))
        return
    inputs = make_inputs(args.mb)
    text = timed_row("rwkv-tui data prepare", inputs["text"])
    messages = timed_row("prepare: OpenAI messages jsonl (converted)", inputs["messages"])
    alpaca_text = timed_row("prepare: Alpaca's {text} jsonl", inputs["alpaca_text"])
    alpaca = timed_row("prepare: Alpaca parquet (converted)", inputs["alpaca_parquet"])
    for converted, equivalent in ((messages, text), (alpaca, alpaca_text)):
        if converted["tokens"] != equivalent["tokens"]:
            raise RuntimeError(f"{converted['input']} gave {converted['tokens']} tokens, its {{text}} twin "
                               f"{equivalent['tokens']}: the conversion does not match the text")

    base_rate, base_tokens, base_seconds = baseline_tokens_per_s(inputs["text"], args.baseline_mb)
    rows = [text, messages, alpaca_text, alpaca,
            {"tool": "baseline: rwkv TRIE_TOKENIZER, 1 process", "input": inputs["text"].name,
             "input_mb": args.baseline_mb, "tokens": base_tokens, "documents": None, "seconds": base_seconds,
             "tokens_per_s": base_rate, "peak_rss_mb": None}]
    print_table(rows, ["tool", "input_mb", "tokens", "seconds", "tokens_per_s", "peak_rss_mb"])
    ratio = text["tokens_per_s"] / base_rate
    messages_ratio = messages["tokens_per_s"] / text["tokens_per_s"]
    alpaca_ratio = alpaca["tokens_per_s"] / alpaca_text["tokens_per_s"]
    peak = max(row["peak_rss_mb"] for row in rows[:4])
    print(f"speed-up: {ratio:.1f}x   messages/text: {messages_ratio:.2f}x   alpaca parquet/text: "
          f"{alpaca_ratio:.2f}x   peak RSS (ours, worst row): {peak:.0f} MB")
    path = save_result("dataprep", rows, {
        "speedup": ratio, "target_speedup": 10, "target_peak_rss_mb": 500,
        "messages_vs_text": messages_ratio, "alpaca_parquet_vs_text": alpaca_ratio, "target_converted_vs_text": 0.8,
        "peak_rss_mb": peak,
        "note": "baseline timed on the first baseline-mb MB of the same file; each converted input holds the same "
                "documents as the {text} jsonl it is compared with (equal token counts, checked)"})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
