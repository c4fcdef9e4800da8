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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.config import is_records_path
from rwkv_tui.trainer.data.binidx import BinIdxWriter, mask_path, prefix_of
from rwkv_tui.trainer.data.records import Span, line_spans
from rwkv_tui.trainer.data.split import (DocumentSplit, document_keys, held_out_mask, texts_of, val_jsonl_path,
                                         write_texts_jsonl)
from rwkv_tui.trainer.data.tokenize import TokenizedDocuments, token_byte_lengths, tokenize_file
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import get_tokenizer

SPAN_LINES = 2048  # lines per worker job
WRITE_BATCH_DOCS = 4096  # documents gathered per write: bounded memory, few Python calls per document


@dataclass
class PrepareResult:
    prefix: Path
    documents: int
    tokens: int
    magic_prime: int | None
    ctx_len: int
    val_documents: int = 0  # held out by val_fraction, written to val_path
    val_path: Path | None = None

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


class _Staging:
    """The staging files, read back by document with plain positioned reads.

    Not a memmap: a shuffled gather through one faulted in a whole page-cache folio per document,
    so one batch mapped most of the file, all of it counted as this process's memory (RSS: 165 MB
    of a 300 MB input), and dropping the pages after each batch made the next one fault them in
    again (more CPU than these reads). Read, the pages stay in the page cache, not in the process."""

    def __init__(self, stage: Path, with_masks: bool) -> None:
        self.tokens = open(stage / "tokens.u16", "rb", buffering=0)
        self.masks = open(stage / "masks.u8", "rb", buffering=0) if with_masks else None

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc) -> None:
        self.tokens.close()
        if self.masks is not None:
            self.masks.close()

    def documents(self, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The tokens (and masks) of the documents at token offsets `starts`, back to back."""
        runs = _runs(starts, sizes)
        tokens = _read_runs(self.tokens, np.uint16, *runs)
        return tokens, (_read_runs(self.masks, np.uint8, *runs) if self.masks is not None else None)


def _runs(starts: np.ndarray, sizes: np.ndarray) -> tuple[list[int], list[int]]:
    """(offsets, lengths) in tokens of the runs of documents that lie back to back in the staging
    file: one read each (an unshuffled copy is a few long runs, a shuffled one a run per document)."""
    if not len(sizes):
        return [], []
    firsts = np.concatenate([[0], np.flatnonzero(starts[1:] != starts[:-1] + sizes[:-1]) + 1])
    return starts[firsts].tolist(), np.add.reduceat(sizes, firsts).tolist()


def _read_runs(handle, dtype, offsets: list[int], lengths: list[int]) -> np.ndarray:
    out = np.empty(sum(lengths), dtype)
    view, item, position = memoryview(out).cast("B"), out.itemsize, 0
    for offset, length in zip(offsets, lengths):
        end = position + length * item
        handle.seek(offset * item)
        while position < end:  # a regular file reads whole, but a short read must not leave a gap
            got = handle.readinto(view[position:end])
            if not got:
                raise DataError("a staging file ended early (was the disk full?)", path=handle.name,
                                hint="free some disk space next to the output and run again")
            position += got
    return out


@dataclass(frozen=True)
class SourceFile:
    """One input of several: its path and how many copies of its documents each repeat holds."""

    path: Path
    repeat: int = 1


Sources = str | Path | Sequence[str | Path | tuple[str | Path, int] | SourceFile]


def source_files(source: Sources) -> list[SourceFile]:
    """The inputs as SourceFiles: one path, or a list of paths and (path, repeat) pairs."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    files = []
    for item in items:
        if isinstance(item, SourceFile):
            files.append(item)
        elif isinstance(item, tuple):
            files.append(SourceFile(Path(item[0]), int(item[1])))
        else:
            files.append(SourceFile(Path(item)))
    return files


def _check_source(source: SourceFile) -> None:
    if not source.path.exists():
        raise DataError("data file not found", path=source.path)
    if source.path.is_dir() and not is_records_path(source.path):
        raise DataError("a folder is not a data file", path=source.path,
                        hint="give a record file, or a folder saved by datasets' save_to_disk")
    if source.repeat < 1:
        raise DataError(f"repeat must be at least 1, got {source.repeat}", path=source.path,
                        hint="repeat = 1 reads the file once")


def _spans_of(path: Path) -> list[Span]:
    """The parts of one input that worker processes tokenize side by side."""
    return line_spans(path, SPAN_LINES)


def prepare_binidx(
    source: Sources,
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
    val_fraction: float = 0.0,
) -> PrepareResult:
    """Tokenize `source` (one file, or several, each with its own repeat: paths, (path, repeat) pairs
    or SourceFiles) into `out_prefix.bin/.idx` (+ `.sftmask`). `progress(phase, done, total, tokens)`.
    Each of the `repeat` copies holds every file's documents `SourceFile.repeat` times, shuffled
    together; `shuffle=False` keeps the files' order (the trainer's token cache: its sampler shuffles).
    `val_fraction` holds that share of the documents out of every copy (`split.held_out_mask`, by
    `seed`) and writes them to PREFIX.val.jsonl."""
    sources = source_files(source)
    prefix = prefix_of(out_prefix)
    if not sources:
        raise DataError("no data files given", hint="give at least one record file")
    for item in sources:
        _check_source(item)
    if repeat < 1 or ctx_len < 1:
        raise DataError("repeat and ctx_len must be at least 1", hint="e.g. --repeat 3 --ctx-len 512")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}", hint="e.g. --val-fraction 0.05")
    outputs = [prefix.with_suffix(".bin"), prefix.with_suffix(".idx")] + ([mask_path(prefix)] if sft_mask else [])
    outputs += [val_jsonl_path(prefix)] if val_fraction > 0 else []
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise DataError("output exists", path=existing[0], hint="choose another --out or pass --force")

    jobs = [_SpanJob(str(item.path), span, sft_mask) for item in sources for span in _spans_of(item.path)]
    workers = workers or os.cpu_count() or 1
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rwkv-prepare-", dir=prefix.parent) as staging:
        stage = Path(staging)
        doc_sizes, per_job, _ = _tokenize_to_staging(jobs, sft_mask, workers, stage, progress)
        documents = _documents_per_source(sources, jobs, per_job)
        starts = np.concatenate([[0], np.cumsum(doc_sizes)[:-1]])
        copy = _one_copy(sources, documents)
        held_out = _held_out(sources, len(doc_sizes), val_fraction, seed)
        copy = copy[~held_out[copy]]  # before the repeats: a held-out document is in no copy
        n = len(copy)
        written = 0
        with BinIdxWriter(prefix, with_mask=sft_mask) as writer, _Staging(stage, sft_mask) as staged:
            for r in range(repeat):
                # An independent shuffle per repeat, as make_data.py does (seeded here).
                order = copy[np.random.default_rng([seed, r]).permutation(n)] if shuffle else copy
                for batch in np.array_split(order, max(1, n // WRITE_BATCH_DOCS)):
                    tokens, masks = staged.documents(starts[batch], doc_sizes[batch])
                    writer.add_many(tokens, doc_sizes[batch], masks)
                    written += len(tokens)
                if progress:
                    progress("write", r + 1, repeat, written)
        val_path = _write_held_out(sources, held_out, stage, prefix) if held_out.any() else None
    return PrepareResult(prefix, n * repeat, written, magic_prime(written, ctx_len), ctx_len,
                         int(held_out.sum()), val_path)


def _held_out(sources: list[SourceFile], documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """The documents (in staging order: file after file) that `val_fraction` holds out."""
    if val_fraction <= 0:
        return np.zeros(documents, dtype=bool)
    keys = document_keys(texts_of(item.path for item in sources), seed)
    if len(keys) != documents:
        raise DataError("the data changed while it was being prepared", path=sources[-1].path,
                        hint="let whatever writes the file finish, then run again")
    return held_out_mask(keys, val_fraction, sources[0].path)


def _write_held_out(sources: list[SourceFile], held_out: np.ndarray, stage: Path, prefix: Path) -> Path:
    """PREFIX.val.jsonl with the held-out documents' texts, in file order; it appears whole or not at all."""
    split = DocumentSplit(tuple(item.path for item in sources), held_out)
    staged = stage / "val.jsonl"
    with staged.open("w", encoding="utf-8") as out:
        write_texts_jsonl(split.val_texts(), out)
    target = val_jsonl_path(prefix)
    os.replace(staged, target)
    return target


def _documents_per_source(sources: list[SourceFile], jobs: list[_SpanJob], per_job: list[int]) -> list[int]:
    """How many documents each input gave; an input with none is an error naming it."""
    counts = dict.fromkeys((str(item.path) for item in sources), 0)
    for job, count in zip(jobs, per_job):
        counts[job.path] += count
    for path, count in counts.items():
        if not count:
            raise DataError("the file has no samples", path=path)
    return [counts[str(item.path)] for item in sources]


def _one_copy(sources: list[SourceFile], documents: list[int]) -> np.ndarray:
    """The document indices of one repeat: each input's documents, `repeat` times, in file order
    (one input read once: 0..n-1, exactly the single-file order)."""
    firsts = np.concatenate([[0], np.cumsum(documents)[:-1]]).astype(np.int64)
    return np.concatenate([np.tile(np.arange(first, first + count), item.repeat)
                           for item, first, count in zip(sources, firsts, documents)])


def _tokenize_to_staging(jobs: list[_SpanJob], sft_mask: bool, workers: int, stage: Path, progress):
    """Every job's documents into the staging files, in job order: (sizes, documents per job, tokens)."""
    sizes: list[np.ndarray] = []
    total = 0
    with open(stage / "tokens.u16", "wb") as token_file, open(stage / "masks.u8", "wb") as mask_file:
        get_tokenizer()  # load the vocabulary once; forked workers share it
        if sft_mask:
            token_byte_lengths(get_tokenizer())  # likewise the table the masks are computed from
        pool = get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.imap(_tokenize_span, jobs) if pool else map(_tokenize_span, jobs)
            for done, (job, result) in enumerate(zip(jobs, results), start=1):
                if isinstance(result, _BadLine):
                    raise DataError(result.message, path=job.path, line=result.line, hint=result.hint)
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
    return (np.concatenate(sizes) if sizes else np.zeros(0, np.int64)), [len(s) for s in sizes], total
