"""The validation split: which documents are held out from training, and their texts.

Two ways, chosen in the config's data section:

- `data.val_path`: a separate records file (any format the record reader accepts) is the
  validation set; every training document is trained on.
- `data.val_fraction`: that share of the training documents is held out, before any
  repeat, by whole documents. A document is held out by a key hashed from its text and the
  seed, the smallest keys first: the choice is deterministic for a seed, does not depend on
  the order or the file the documents come from, and identical texts always fall on the same
  side, so no held-out text is ever trained on.

`split_documents(config.data, seed)` gives both sides; `rwkv-tui data prepare --val-fraction`,
`data check` and the evaluation use it. No torch: `data check` imports this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.data.records import training_texts
from rwkv_tui.trainer.errors import DataError

MIN_DOCUMENTS_TO_SPLIT = 2  # one to train on, one to hold out
DIGEST_BYTES = 16  # as `data check` hashes texts to find duplicates


def text_digest(text: str) -> bytes:
    """A document's identity: equal texts, equal digests."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def split_key(digest: bytes, seed: int) -> int:
    """The document's place in the held-out order for `seed`: uniform, independent of position."""
    salted = hashlib.blake2b(digest, digest_size=8, salt=_seed_salt(seed)).digest()
    return int.from_bytes(salted, "little")


def _seed_salt(seed: int) -> bytes:
    return (seed % (1 << 64)).to_bytes(8, "little") + b"rwkv-val"  # blake2b's salt is 16 bytes


def document_keys(texts: Iterable[str], seed: int) -> np.ndarray:
    """`split_key` of every text, in order (uint64: 8 bytes a document, streaming)."""
    return np.fromiter((split_key(text_digest(t), seed) for t in texts), dtype=np.uint64)


def held_out_count(documents: int, fraction: float) -> int:
    """How many documents `fraction` holds out: rounded, at least one, never all."""
    if fraction <= 0 or documents < MIN_DOCUMENTS_TO_SPLIT:
        return 0
    return min(documents - 1, max(1, round(documents * fraction)))


def held_out_mask(keys: np.ndarray, fraction: float, source: str | Path | None = None) -> np.ndarray:
    """True for the held-out documents: the `held_out_count` smallest keys, and every copy of a
    held-out text (copies share a key), so no held-out text is also trained on."""
    keys = np.asarray(keys, dtype=np.uint64)
    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    if len(keys) < MIN_DOCUMENTS_TO_SPLIT:
        raise DataError(f"val_fraction={fraction} needs at least {MIN_DOCUMENTS_TO_SPLIT} documents, "
                        f"the data has {len(keys)}", path=source,
                        hint="add documents, or give a separate validation file as data.val_path")
    count = held_out_count(len(keys), fraction)
    threshold = np.partition(keys, count - 1)[count - 1]
    mask = keys <= threshold
    if mask.all():
        raise DataError(f"val_fraction={fraction} would hold out every document: they all have the same text",
                        path=source, hint="remove the duplicates (`rwkv-tui data check` lists them)")
    return mask


def val_jsonl_path(prefix: str | Path) -> Path:
    """Where `data prepare --val-fraction` writes the held-out documents: PREFIX.val.jsonl,
    named like PREFIX.bin beside it."""
    return Path(prefix).with_suffix(".val.jsonl")


def write_texts_jsonl(texts: Iterable[str], out) -> int:
    """One {"text": …} line per text to the open text file `out`; the number written."""
    written = 0
    for text in texts:
        out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        written += 1
    return written


def source_paths(data) -> list[Path]:
    """The training files of a DataConfig, in order, each once (repeats come after the split)."""
    paths = list(data.path) if isinstance(data.path, list) else [data.path]
    paths += [source.path for source in data.sources]  # trained together with data.path
    return [Path(p) for p in paths if p]


def texts_of(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every document's text, file after file (the first bad record raises, naming it)."""
    for path in paths:
        yield from training_texts(path)


@dataclass(frozen=True)
class DocumentSplit:
    """The training documents of `paths` and the validation documents: `held_out` marks, per
    document of `paths` in reading order, the ones held out by val_fraction; with a `val_path`
    nothing is held out and that file is the validation set."""

    paths: tuple[Path, ...]
    held_out: np.ndarray | None  # bool, one per document of `paths`; None: nothing held out
    val_path: Path | None = None

    def train_indices(self) -> np.ndarray | None:
        """Positions of the training documents among all documents of `paths` (None: all)."""
        return None if self.held_out is None else np.flatnonzero(~self.held_out)

    def train_texts(self) -> Iterator[str]:
        if self.held_out is None:
            yield from texts_of(self.paths)
        else:
            yield from self._pick(keep_held_out=False)

    def val_texts(self) -> Iterator[str]:
        if self.val_path is not None:
            yield from training_texts(self.val_path)
        elif self.held_out is not None:
            yield from self._pick(keep_held_out=True)

    def _pick(self, keep_held_out: bool) -> Iterator[str]:
        for index, text in enumerate(texts_of(self.paths)):
            if index >= len(self.held_out):
                raise DataError("the data changed while it was being read", path=self.paths[-1],
                                hint="let whatever writes the file finish, then run again")
            if bool(self.held_out[index]) == keep_held_out:
                yield text


def split_paths(paths: Iterable[str | Path], val_fraction: float = 0.0, seed: int = 0,
                val_path: str | Path | None = None) -> DocumentSplit:
    """The split of the documents in `paths` (one streaming pass over them)."""
    paths = tuple(Path(p) for p in paths)
    if val_path or val_fraction <= 0:
        return DocumentSplit(paths, None, Path(val_path) if val_path else None)
    keys = document_keys(texts_of(paths), seed)
    return DocumentSplit(paths, held_out_mask(keys, val_fraction, paths[0] if paths else None))


def split_documents(data, seed: int) -> DocumentSplit:
    """The split a DataConfig asks for (`data.val_path` or `data.val_fraction`; neither: no
    validation documents). `seed` is the run's seed (output.seed)."""
    return split_paths(source_paths(data), data.val_fraction, seed, data.val_path or None)
