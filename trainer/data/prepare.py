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

from rwkv_tui.trainer.data.binidx import BinIdxWriter, mask_path, prefix_of
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import get_tokenizer

CHUNK_LINES = 2048
WRITE_BATCH_DOCS = 4096  # documents gathered per write: bounded memory, no per-document Python work


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
    """RWKV-LM's sampler stride: the largest prime p ≤ tokens // ctx_len − 1 with p % 3 == 2
    (make_data.py gives none for less than 3 × ctx_len tokens)."""
    if tokens < 3 * ctx_len:
        return None
    for p in range(tokens // ctx_len - 1, 1, -1):
        if p % 3 == 2 and is_prime(p):
            return p
    return None


def _chunks(path: Path, lines_per_chunk: int = CHUNK_LINES) -> list[tuple[int, int, int]]:
    """(start byte, end byte, first line number) of consecutive blocks of about
    `lines_per_chunk` lines: workers read whole blocks, the main process never holds the data."""
    chunks, start, line_no, position, first = [], 0, 0, 0, 1
    with path.open("rb") as handle:
        for raw in handle:
            line_no += 1
            position += len(raw)
            if line_no - first + 1 >= lines_per_chunk:
                chunks.append((start, position, first))
                start, first = position, line_no + 1
    if position > start:
        chunks.append((start, position, first))
    return chunks


def _tokenize_chunk(job: tuple[str, int, int, int, bool]):
    """Worker: tokenize one block of lines; returns ("ok", tokens, sizes, masks) or ("error", line)."""
    import gc

    from rwkv_tui.trainer.data.sft import token_mask
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    # Millions of small int lists would trigger the cyclic GC over and over for nothing.
    gc.disable()
    path, start, end, first_line, with_mask = job
    tokenizer = get_tokenizer()
    with open(path, "rb") as handle:
        handle.seek(start)
        block = handle.read(end - start)
    texts = []
    for line_no, raw in enumerate(block.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = json.loads(raw.decode("utf-8"))["text"]
            if not isinstance(text, str) or not text:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return ("error", line_no)
        texts.append(text)
    if not texts:
        return ("ok", np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8) if with_mask else None)
    token_lists = tokenizer.encode_batch(texts, threads=False)  # a forked worker: see encode_batch
    sizes = np.fromiter((len(ids) + 1 for ids in token_lists), dtype=np.int64, count=len(texts))
    flat: list[int] = []
    for ids in token_lists:  # one list, one conversion: far cheaper than an array per document
        flat.extend(ids)
        flat.append(0)
    tokens = np.array(flat, dtype=np.uint16)
    masks = None
    if with_mask:
        masks = np.concatenate([
            token_mask(text, np.fromiter((len(tokenizer.token_bytes(i)) for i in ids), np.int64, len(ids)))
            for text, ids in zip(texts, token_lists)])
    return ("ok", tokens, sizes, masks)


def _gather_index(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Token positions of the given documents, in order: concatenated aranges, vectorised."""
    ends = np.cumsum(sizes)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - sizes), sizes)


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

    chunks = _chunks(source)
    workers = workers or os.cpu_count() or 1
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rwkv-prepare-", dir=prefix.parent) as staging:
        stage = Path(staging)
        doc_sizes, total = _tokenize_to_staging(source, chunks, sft_mask, workers, stage, progress)
        if not len(doc_sizes):
            raise DataError("the file has no samples", path=source)
        tokens = np.memmap(stage / "tokens.u16", dtype=np.uint16, mode="r") if total else np.zeros(0, np.uint16)
        masks = (np.memmap(stage / "masks.u8", dtype=np.uint8, mode="r") if sft_mask and total else None)
        starts = np.concatenate([[0], np.cumsum(doc_sizes)[:-1]])
        n = len(doc_sizes)
        written = 0
        with BinIdxWriter(prefix, with_mask=sft_mask) as writer:
            for r in range(repeat):
                # An independent shuffle per repeat, as make_data.py does (seeded here).
                order = np.random.default_rng([seed, r]).permutation(n)
                for batch in np.array_split(order, max(1, n // WRITE_BATCH_DOCS)):
                    index = _gather_index(starts[batch], doc_sizes[batch])
                    writer.add_many(tokens[index], doc_sizes[batch], masks[index] if masks is not None else None)
                    written += len(index)
                if progress:
                    progress("write", r + 1, repeat, written)
        del tokens, masks
    return PrepareResult(prefix, n * repeat, written, magic_prime(written, ctx_len), ctx_len)


def _tokenize_to_staging(source, chunks, sft_mask, workers, stage: Path, progress):
    jobs = [(str(source), start, end, first_line, sft_mask) for start, end, first_line in chunks]
    sizes: list[np.ndarray] = []
    total = 0
    with open(stage / "tokens.u16", "wb") as token_file, open(stage / "masks.u8", "wb") as mask_file:
        get_tokenizer()  # load the vocabulary once; forked workers share it
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
    return (np.concatenate(sizes) if sizes else np.zeros(0, np.int64)), total
