"""jsonl -> World-tokenized binidx, the way RWKV-LM's make_data.py does it, but fast and safe.

Like make_data.py: the data is repeated `repeat` times, each copy in its own random
order, every document is `encode(text) + [0]`, the output is MMIDIDX uint16, and the
values RWKV-LM's trainer needs are printed (`--my_exit_tokens` = total tokens,
`--magic_prime` = the largest prime p ≤ tokens // ctx_len − 1 with p % 3 == 2).

Unlike it: every document is tokenized once (by all cores, with the Rust encoder), then
copied in each repeat's order from a memory-mapped staging file, so memory stays flat on
multi-GB inputs; the outputs appear atomically (nothing partial on an error or Ctrl-C);
an existing output is never overwritten without `force`; an optional SFT mask sidecar
(`PREFIX.sftmask`, see `binidx.mask_path`) marks the trained tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from trainer.data.binidx import BinIdxWriter, mask_path, prefix_of
from trainer.errors import DataError

CHUNK_LINES = 2048


@dataclass
class PrepareResult:
    prefix: Path
    documents: int
    tokens: int
    magic_prime: int | None
    ctx_len: int

    @property
    def rwkv_lm_args(self) -> str:
        prime = f" --magic_prime {self.magic_prime}" if self.magic_prime else ""
        return f"--my_exit_tokens {self.tokens}{prime} --ctx_len {self.ctx_len}"


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def magic_prime(tokens: int, ctx_len: int) -> int | None:
    """RWKV-LM's sampler stride: the largest prime p ≤ tokens // ctx_len − 1 with p % 3 == 2."""
    for p in range(tokens // ctx_len - 1, 1, -1):
        if p % 3 == 2 and is_prime(p):
            return p
    return None


def _line_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and line number of every non-blank line (8+8 bytes a line: flat enough)."""
    offsets, numbers = [], []
    position = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                offsets.append(position)
                numbers.append(line_no)
            position += len(raw)
    return np.asarray(offsets, dtype=np.int64), np.asarray(numbers, dtype=np.int64)


def _tokenize_chunk(job: tuple[str, list[int], list[int], bool]):
    """Worker: read lines at the given offsets, return (tokens, sizes, masks) or an error."""
    from trainer.data.sft import token_mask
    from trainer.world_tokenizer import get_tokenizer

    path, offsets, line_numbers, with_mask = job
    tokenizer = get_tokenizer()
    texts = []
    with open(path, "rb") as handle:
        for offset, line_no in zip(offsets, line_numbers):
            handle.seek(offset)
            raw = handle.readline()
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = json.loads(raw.decode("utf-8"))["text"]
                if not isinstance(text, str) or not text:
                    raise ValueError
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                return ("error", line_no)
            texts.append(text)
    token_lists = tokenizer.encode_batch(texts)
    sizes = np.fromiter((len(ids) + 1 for ids in token_lists), dtype=np.int64, count=len(texts))
    tokens = np.fromiter((t for ids in token_lists for t in (*ids, 0)), dtype=np.uint16, count=int(sizes.sum()))
    masks = None
    if with_mask:
        masks = np.concatenate([
            token_mask(text, np.fromiter((len(tokenizer.token_bytes(i)) for i in ids), np.int64, len(ids)))
            for text, ids in zip(texts, token_lists)])
    return ("ok", tokens, sizes, masks)


def prepare_binidx(
    source: str | Path,
    out_prefix: str | Path,
    *,
    repeat: int = 1,
    ctx_len: int = 1024,
    seed: int = 0,
    sft_mask: bool = False,
    force: bool = False,
    workers: int | None = None,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> PrepareResult:
    """Tokenize `source` into `out_prefix.bin/.idx` (+ `.sftmask`). `progress(phase, done, total, tokens)`."""
    source = Path(source)
    prefix = prefix_of(out_prefix)
    if not source.is_file():
        raise DataError("data file not found", path=source)
    if repeat < 1 or ctx_len < 1:
        raise DataError("repeat and ctx_len must be at least 1", hint="e.g. --repeat 3 --ctx-len 512")
    outputs = [prefix.with_suffix(".bin"), prefix.with_suffix(".idx")] + ([mask_path(prefix)] if sft_mask else [])
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise DataError("output exists", path=existing[0], hint="choose another --out or pass --force")

    offsets, line_numbers = _line_offsets(source)
    if not len(offsets):
        raise DataError("the file has no samples", path=source)
    workers = workers or os.cpu_count() or 1
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rwkv-prepare-", dir=prefix.parent) as staging:
        stage = Path(staging)
        doc_sizes, total = _tokenize_to_staging(source, offsets, line_numbers, sft_mask, workers, stage, progress)
        tokens = np.memmap(stage / "tokens.u16", dtype=np.uint16, mode="r") if total else np.zeros(0, np.uint16)
        masks = (np.memmap(stage / "masks.u8", dtype=np.uint8, mode="r") if sft_mask and total else None)
        starts = np.concatenate([[0], np.cumsum(doc_sizes)[:-1]])
        n = len(doc_sizes)
        written = 0
        with BinIdxWriter(prefix, with_mask=sft_mask) as writer:
            for r in range(repeat):
                # An independent shuffle per repeat, as make_data.py does (seeded here).
                for i in np.random.default_rng([seed, r]).permutation(n):
                    lo, hi = int(starts[i]), int(starts[i] + doc_sizes[i])
                    writer.add(tokens[lo:hi], masks[lo:hi] if masks is not None else None)
                    written += hi - lo
                if progress:
                    progress("write", r + 1, repeat, written)
        del tokens, masks
    return PrepareResult(prefix, n * repeat, written, magic_prime(written, ctx_len), ctx_len)


def _tokenize_to_staging(source, offsets, line_numbers, sft_mask, workers, stage: Path, progress):
    jobs = [(str(source), offsets[i: i + CHUNK_LINES].tolist(), line_numbers[i: i + CHUNK_LINES].tolist(), sft_mask)
            for i in range(0, len(offsets), CHUNK_LINES)]
    sizes: list[np.ndarray] = []
    total = 0
    with open(stage / "tokens.u16", "wb") as token_file, open(stage / "masks.u8", "wb") as mask_file:
        pool = get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.imap(_tokenize_chunk, jobs) if pool else map(_tokenize_chunk, jobs)
            for done, result in enumerate(results, start=1):
                if result[0] == "error":
                    raise DataError('this line is not a JSON object with a non-empty "text" string', path=source,
                                    line=result[1], hint=f"run `rwkv-tui data check {source}` for every problem")
                _, tokens, chunk_sizes, masks = result
                token_file.write(tokens.tobytes())
                if masks is not None:
                    mask_file.write(masks.tobytes())
                sizes.append(chunk_sizes)
                total += int(chunk_sizes.sum())
                if progress:
                    progress("tokenize", done, len(jobs), total)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return np.concatenate(sizes), total
