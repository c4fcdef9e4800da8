"""The one tokenize-and-mask pipeline: training texts -> World token ids + SFT loss masks.

Every document becomes `encode(text) + [0]` (as RWKV-LM's make_data.py writes it) and, when
asked, its mask from `sft.token_mask` (1 where the token is a trained target). The in-memory
corpus runs it over a whole file, `rwkv-tui data prepare` over one span per worker process,
so both give the same ids and masks for the same lines.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.data.records import Span, training_texts
from rwkv_tui.trainer.data.sft import token_mask
from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import VOCAB_SIZE, WorldTokenizer, get_tokenizer

BATCH_DOCUMENTS = 1024  # texts held at once while reading: bounded memory, batches big enough to encode fast


@dataclass
class TokenizedDocuments:
    tokens: np.ndarray  # uint16: every document's ids and its end-of-text 0, back to back
    sizes: np.ndarray  # int64: tokens per document, its 0 included
    masks: np.ndarray | None  # uint8, one per token (1 = trained target); None when not asked for

    @classmethod
    def concatenate(cls, parts: list[TokenizedDocuments], with_masks: bool) -> TokenizedDocuments:
        if not parts:
            return cls(np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8) if with_masks else None)
        masks = np.concatenate([p.masks for p in parts]) if with_masks else None
        return cls(np.concatenate([p.tokens for p in parts]), np.concatenate([p.sizes for p in parts]), masks)


def tokenize_documents(texts: list[str], *, with_masks: bool = True, threads: bool = True) -> TokenizedDocuments:
    """Ids (and masks) of `texts`. `threads=False` in forked workers: see `encode_batch`."""
    tokenizer = get_tokenizer()
    token_lists = tokenizer.encode_batch(texts, threads=threads)
    sizes = np.fromiter((len(ids) + 1 for ids in token_lists), dtype=np.int64, count=len(texts))
    flat: list[int] = []
    for ids in token_lists:  # one list, one conversion: far cheaper than an array per document
        flat.extend(ids)
        flat.append(0)
    masks = _masks(texts, token_lists, tokenizer) if with_masks else None
    return TokenizedDocuments(np.array(flat, dtype=np.uint16), sizes, masks)


def _masks(texts: list[str], token_lists: list[list[int]], tokenizer: WorldTokenizer) -> np.ndarray:
    """Every document's `token_mask`, back to back (its end-of-text token included)."""
    if not texts:
        return np.zeros(0, np.uint8)
    lengths = token_byte_lengths(tokenizer)
    return np.concatenate([token_mask(text, lengths[np.asarray(ids, dtype=np.int64)])
                           for text, ids in zip(texts, token_lists)])


def tokenize_file(path: str | Path, span: Span = Span(), *, with_masks: bool = True,
                  threads: bool = True) -> TokenizedDocuments:
    """Every sample of `span` of a records file, tokenized; the first bad line raises its DataError."""
    parts, batch = [], []
    for text in training_texts(path, span):
        batch.append(text)
        if len(batch) >= BATCH_DOCUMENTS:
            parts.append(tokenize_documents(batch, with_masks=with_masks, threads=threads))
            batch = []
    if batch:
        parts.append(tokenize_documents(batch, with_masks=with_masks, threads=threads))
    return TokenizedDocuments.concatenate(parts, with_masks)


@functools.cache
def token_byte_lengths(tokenizer: WorldTokenizer) -> np.ndarray:
    """int64[VOCAB_SIZE]: the UTF-8 byte length of every token id (0 for ids without text),
    so a document's lengths are one indexing instead of a call per token."""
    table = np.zeros(VOCAB_SIZE, dtype=np.int64)
    for idx in range(1, VOCAB_SIZE):
        try:
            table[idx] = len(tokenizer.token_bytes(idx))
        except DataError:  # an id the vocabulary leaves unused: encode never yields it
            pass
    return table
