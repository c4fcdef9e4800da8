"""`rwkv-tui data prepare` against a make_data.py-style baseline (the `rwkv` package's TRIE
tokenizer, one process), on a generated jsonl of at least 50 MB.

The baseline is timed on the first `--baseline-mb` MB of the same file (it runs at well
under 1 MB/s); tokens/s are comparable because the text mix is uniform. Peak memory is
the max RSS of our process tree during `prepare` (children included).

    python bench/dataprep.py [--mb 50] [--baseline-mb 4]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402

WORK = Path(__file__).resolve().parent / "work"
WORDS = ("the of and to in is was for on that with as by it at from his an were are which this be has or had "
         "water river model train state token learn data answer question").split()
CJK = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"


def make_jsonl(path: Path, megabytes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20)))
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
            chinese = "".join(rng.choice(CJK) for _ in range(rng.randint(10, 60)))
            text = f"User: {question}?\n\nAssistant: {answer.capitalize()}. {chinese}。"
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--baseline-mb", type=float, default=4.0)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    source = WORK / f"bench-{args.mb}mb.jsonl"
    if not source.exists() or source.stat().st_size < args.mb * 1024 * 1024:
        make_jsonl(source, args.mb)

    from rwkv_tui.trainer.data.prepare import prepare_binidx

    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    get_tokenizer()  # like the baseline's TRIE construction, loading the vocabulary is not timed
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    result = prepare_binidx(source, WORK / "bench", repeat=1, ctx_len=1024, force=True)
    ours_seconds = time.perf_counter() - start
    ours_rate = result.tokens / ours_seconds
    ours_peak = peak_rss_mb()

    base_rate, base_tokens, base_seconds = baseline_tokens_per_s(source, args.baseline_mb)
    rows = [
        {"tool": "rwkv-tui data prepare", "input_mb": round(source.stat().st_size / 2**20, 1),
         "tokens": result.tokens, "seconds": ours_seconds, "tokens_per_s": ours_rate, "peak_rss_mb": ours_peak},
        {"tool": "baseline: rwkv TRIE_TOKENIZER, 1 process", "input_mb": args.baseline_mb, "tokens": base_tokens,
         "seconds": base_seconds, "tokens_per_s": base_rate, "peak_rss_mb": None},
    ]
    print_table(rows, ["tool", "input_mb", "tokens", "seconds", "tokens_per_s", "peak_rss_mb"])
    ratio = ours_rate / base_rate
    print(f"speed-up: {ratio:.1f}x   peak RSS (ours): {ours_peak:.0f} MB (before prepare: {rss_before:.0f} MB)")
    path = save_result("dataprep", rows, {"speedup": ratio, "target_speedup": 10, "target_peak_rss_mb": 500,
                                          "note": "baseline timed on the first baseline-mb MB of the same file"})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
