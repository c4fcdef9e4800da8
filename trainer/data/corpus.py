"""A tokenized corpus: every document's tokens (ending with 0) and its SFT loss mask.

Built from a jsonl file (tokenized once, then cached next to it under a name that holds
the file's content hash, so an edited file is re-tokenized) or from a binidx prefix
(masks: everything trained, the layout carries no roles).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.atomic import atomic_output
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


def read_texts(path: Path) -> list[str]:
    """The "text" of every non-blank line; the first bad line is a DataError naming it."""
    texts = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise DataError(f"line is not valid JSON ({exc})", path=path, line=line_no,
                                hint="run `rwkv-tui data check` for a full report") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text:
                raise DataError('missing or empty "text" string', path=path, line=line_no,
                                hint='each line must look like {"text": "User: …\\n\\nAssistant: …"}')
            texts.append(text)
    if not texts:
        raise DataError("the file has no samples", path=path)
    return texts


def tokenize_texts(texts: list[str]) -> Corpus:
    from rwkv_tui.trainer.data.sft import token_mask
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    token_lists, mask_lists = [], []
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        lengths = np.fromiter((len(tokenizer.token_bytes(i)) for i in ids), dtype=np.int64, count=len(ids))
        token_lists.append(np.asarray(ids + [0], dtype=np.uint16))
        mask_lists.append(token_mask(text, lengths))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in token_lists])
    return Corpus(np.concatenate(token_lists), np.concatenate(mask_lists), offsets)


def load_jsonl_corpus(path: str | Path) -> Corpus:
    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", path=path)
    cached = cache_path(path)
    if cached.exists():
        with np.load(cached, allow_pickle=False) as data:
            if int(data["version"]) == CACHE_VERSION:
                return Corpus(data["tokens"], data["masks"], data["offsets"])
    corpus = tokenize_texts(read_texts(path))
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
