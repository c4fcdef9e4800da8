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

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.data.binidx import BinIdxWriter, mask_path, prefix_of
from rwkv_tui.trainer.data.records import Span, line_spans
from rwkv_tui.trainer.data.tokenize import TokenizedDocuments, token_byte_lengths, tokenize_file
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import get_tokenizer

SPAN_LINES = 2048  # lines per worker job
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


@dataclass(frozen=True)
class _SpanJob:
    path: str
    span: Span
    with_masks: bool


@dataclass(frozen=True)
class _BadLine:
    """A worker's DataError, carried back as plain fields (a DataError loses them in pickling)."""

    line: int | None
    message: str
    hint: str | None


def _tokenize_span(job: _SpanJob) -> TokenizedDocuments | _BadLine:
    """Worker: tokenize one span of lines with the one pipeline."""
    import gc

    # Millions of small int lists would trigger the cyclic GC over and over for nothing.
    gc.disable()
    try:
        return tokenize_file(job.path, job.span, with_masks=job.with_masks, threads=False)  # forked: no threads
    except DataError as exc:
        return _BadLine(exc.line, exc.message, exc.hint)


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
    shuffle: bool = True,
    workers: int | None = None,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> PrepareResult:
    """Tokenize `source` into `out_prefix.bin/.idx` (+ `.sftmask`). `progress(phase, done, total, tokens)`.
    `shuffle=False` keeps the file's order (the trainer's token cache: its sampler shuffles)."""
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

    spans = line_spans(source, SPAN_LINES)
    workers = workers or os.cpu_count() or 1
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rwkv-prepare-", dir=prefix.parent) as staging:
        stage = Path(staging)
        doc_sizes, total = _tokenize_to_staging(source, spans, sft_mask, workers, stage, progress)
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
                order = np.random.default_rng([seed, r]).permutation(n) if shuffle else np.arange(n)
                for batch in np.array_split(order, max(1, n // WRITE_BATCH_DOCS)):
                    index = _gather_index(starts[batch], doc_sizes[batch])
                    writer.add_many(tokens[index], doc_sizes[batch], masks[index] if masks is not None else None)
                    written += len(index)
                if progress:
                    progress("write", r + 1, repeat, written)
        del tokens, masks
    return PrepareResult(prefix, n * repeat, written, magic_prime(written, ctx_len), ctx_len)


def _tokenize_to_staging(source: Path, spans: list[Span], sft_mask: bool, workers: int, stage: Path, progress):
    jobs = [_SpanJob(str(source), span, sft_mask) for span in spans]
    sizes: list[np.ndarray] = []
    total = 0
    with open(stage / "tokens.u16", "wb") as token_file, open(stage / "masks.u8", "wb") as mask_file:
        get_tokenizer()  # load the vocabulary once; forked workers share it
        if sft_mask:
            token_byte_lengths(get_tokenizer())  # likewise the table the masks are computed from
        pool = get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.imap(_tokenize_span, jobs) if pool else map(_tokenize_span, jobs)
            for done, result in enumerate(results, start=1):
                if isinstance(result, _BadLine):
                    raise DataError(result.message, path=source, line=result.line, hint=result.hint)
                token_file.write(result.tokens.tobytes())
                if result.masks is not None:
                    mask_file.write(result.masks.tobytes())
                sizes.append(result.sizes)
                total += int(result.sizes.sum())
                if progress:
                    progress("tokenize", done, len(jobs), total)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    return (np.concatenate(sizes) if sizes else np.zeros(0, np.int64)), total
