"""A tokenized corpus: every document's tokens (ending with 0) and its SFT loss mask.

Built from a binidx prefix (masks from its `.sftmask` sidecar, else everything trained) or
from a jsonl file. A jsonl is tokenized once, streaming, by `prepare_binidx` (as `rwkv-tui
data prepare` does) into a binidx token cache with its SFT masks, named by the file's content
hash (an edited file is tokenized again), beside the file or, where that folder is read-only,
in a fallback folder; the corpus then memory-maps that cache, so memory stays flat whatever
the file's size.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.data.binidx import mask_path
from rwkv_tui.trainer.errors import DataError

CACHE_VERSION = 2  # 1 was an in-memory .npz beside the jsonl


@dataclass
class Corpus:
    tokens: np.ndarray    # all documents back to back, each ending with 0
    masks: np.ndarray     # uint8, same length: 1 where the token is a trained target
    offsets: np.ndarray   # int64[n_docs + 1]: document i is tokens[offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[lo:hi], self.masks[lo:hi]

    def check_vocab(self, vocab_size: int, source) -> None:
        if not len(self.tokens) or vocab_size > np.iinfo(self.tokens.dtype).max:
            return  # no id of this dtype can be outside (uint16 and the World vocab): don't map every token in
        bad = int(self.tokens.max())
        if bad >= vocab_size:
            raise DataError(f"token id {bad} is outside the model's vocabulary (size {vocab_size})", path=source,
                            hint="the data was tokenized for another model; re-create it with `rwkv-tui data "
                                 "prepare` from the jsonl")


def file_digest(path: Path) -> str:
    """The content hash of a records file, or of a `datasets` folder (its files' names and bytes)."""
    digest = hashlib.sha256()
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# Errors that say "not this folder" (try the fallback) rather than "no room" or a broken disk.
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def cache_prefix(jsonl: Path, cache_dir: Path, digest: str) -> Path:
    """The binidx prefix of a jsonl's token cache. Dots become underscores: the binidx files are
    named by replacing the prefix's suffix."""
    return Path(cache_dir) / f".{jsonl.name.replace('.', '_')}-{digest}-v{CACHE_VERSION}"


def prepare_token_cache(jsonl: str | Path, cache_dir: str | Path | None = None,
                        fallback_dir: str | Path | None = None, progress=None) -> Path:
    """The prefix of `jsonl`'s binidx cache, tokenized now unless it exists: in `cache_dir`
    (default: beside the file), or in `fallback_dir` when that folder cannot be written.
    `progress(phase, done, total, tokens)` as `prepare_binidx` reports it."""
    jsonl = Path(jsonl)
    if not jsonl.exists():  # a file, or a datasets folder
        raise DataError("data file not found", path=jsonl)
    digest = file_digest(jsonl)
    folders = [Path(cache_dir) if cache_dir is not None else jsonl.parent]
    folders += [Path(fallback_dir)] if fallback_dir is not None else []
    prefixes = [cache_prefix(jsonl, folder, digest) for folder in folders]
    done = next((p for p in prefixes if all(f.exists() for f in _cache_files(p))), None)
    return done if done is not None else _tokenize_into_first_writable(jsonl, prefixes, progress)


def _tokenize_into_first_writable(jsonl: Path, prefixes: list[Path], progress=None) -> Path:
    *earlier, last = prefixes
    for prefix in earlier:
        try:
            return _tokenize_into(jsonl, prefix, progress)
        except OSError as exc:
            if exc.errno not in _UNWRITABLE:
                raise _cache_error(jsonl, prefix, exc) from None
    try:
        return _tokenize_into(jsonl, last, progress)
    except OSError as exc:
        raise _cache_error(jsonl, last, exc) from None


def _tokenize_into(jsonl: Path, prefix: Path, progress=None) -> Path:
    from rwkv_tui.trainer.data.prepare import prepare_binidx

    prepare_binidx(jsonl, prefix, sft_mask=True, shuffle=False, force=True, progress=progress)
    return prefix


def _cache_error(jsonl: Path, prefix: Path, exc: OSError) -> DataError:
    return DataError(f"cannot write the token cache of {jsonl} in {prefix.parent}: {exc.strerror or exc}",
                     path=prefix.parent, hint="free disk space there, or make the folder writable "
                                              "(or set output.proj_dir to a writable folder)")


def _cache_files(prefix: Path) -> list[Path]:
    return [prefix.with_suffix(".bin"), prefix.with_suffix(".idx"), mask_path(prefix)]


def load_jsonl_corpus(path: str | Path, cache_dir: str | Path | None = None,
                      fallback_dir: str | Path | None = None) -> Corpus:
    """A jsonl's corpus, memory-mapped from its token cache (made on first use)."""
    return load_binidx_corpus(prepare_token_cache(path, cache_dir, fallback_dir))


def load_binidx_corpus(prefix: str | Path) -> Corpus:
    from rwkv_tui.trainer.data.binidx import BinIdx

    data = BinIdx(prefix)
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(data.sizes, dtype=np.int64)
    tokens = np.asarray(data.tokens[: int(offsets[-1])])
    sidecar = mask_path(data.prefix)
    if sidecar.exists():  # written by `rwkv-tui data prepare --sft-mask`
        masks = _mapped_bytes(sidecar)
        if len(masks) != len(tokens):
            raise DataError(f"the SFT mask has {len(masks)} entries for {len(tokens)} tokens", path=sidecar,
                            hint="re-create the data with `rwkv-tui data prepare --sft-mask`")
    else:
        masks = all_trained(len(tokens))
    return Corpus(tokens, masks, offsets)


def _mapped_bytes(path: Path) -> np.ndarray:
    """A file's bytes as uint8, memory-mapped (numpy cannot map an empty file)."""
    return np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)


def all_trained(n: int) -> np.ndarray:
    """A read-only mask of n ones that takes no memory (a view of one byte)."""
    return np.broadcast_to(np.ones(1, dtype=np.uint8), (n,))
