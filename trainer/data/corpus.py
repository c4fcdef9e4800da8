"""A tokenized corpus: every document's tokens (ending with 0) and its SFT loss mask.

Built from a jsonl file (tokenized once, then cached next to it under a name that holds
the file's content hash, so an edited file is re-tokenized) or from a binidx prefix
(masks: everything trained, the layout carries no roles).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.atomic import atomic_output
from rwkv_tui.trainer.data.tokenize import TokenizedDocuments, tokenize_file
from rwkv_tui.trainer.errors import DataError

CACHE_VERSION = 1


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
        if len(self.tokens) and int(self.tokens.max()) >= vocab_size:
            bad = int(self.tokens.max())
            raise DataError(f"token id {bad} is outside the model's vocabulary (size {vocab_size})", path=source,
                            hint="the data was tokenized for another model; re-create it with `rwkv-tui data "
                                 "prepare` from the jsonl")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cache_path(jsonl: Path) -> Path:
    return jsonl.with_name(f".{jsonl.name}.{file_digest(jsonl)}.tokens.npz")


def from_tokenized(documents: TokenizedDocuments) -> Corpus:
    offsets = np.zeros(len(documents.sizes) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(documents.sizes)
    return Corpus(documents.tokens, documents.masks, offsets)


def load_jsonl_corpus(path: str | Path) -> Corpus:
    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", path=path)
    cached = cache_path(path)
    if cached.exists():
        with np.load(cached, allow_pickle=False) as data:
            if int(data["version"]) == CACHE_VERSION:
                return Corpus(data["tokens"], data["masks"], data["offsets"])
    documents = tokenize_file(path)
    if not len(documents.sizes):
        raise DataError("the file has no samples", path=path)
    corpus = from_tokenized(documents)
    buffer = io.BytesIO()
    np.savez(buffer, version=CACHE_VERSION, tokens=corpus.tokens, masks=corpus.masks, offsets=corpus.offsets)
    try:
        with atomic_output(cached) as out:
            out.write(buffer.getvalue())
    except OSError:
        pass  # a read-only data folder only costs re-tokenizing next time
    return corpus


def load_binidx_corpus(prefix: str | Path) -> Corpus:
    from rwkv_tui.trainer.data.binidx import BinIdx, mask_path

    data = BinIdx(prefix)
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(data.sizes, dtype=np.int64)
    tokens = np.asarray(data.tokens[: int(offsets[-1])])
    sidecar = mask_path(data.prefix)
    if sidecar.exists():  # written by `rwkv-tui data prepare --sft-mask`
        masks = np.fromfile(sidecar, dtype=np.uint8)
        if len(masks) != len(tokens):
            raise DataError(f"the SFT mask has {len(masks)} entries for {len(tokens)} tokens", path=sidecar,
                            hint="re-create the data with `rwkv-tui data prepare --sft-mask`")
    else:
        masks = np.ones(len(tokens), dtype=np.uint8)
    return Corpus(tokens, masks, offsets)
