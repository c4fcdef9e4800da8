"""Megatron MMIDIDX files (`PREFIX.bin` + `PREFIX.idx`), as json2binidx and RWKV-LM's make_data.py write them.

`.idx`, little-endian: magic `MMIDIDX\\x00\\x00`, u64 version (1), u8 dtype code, u64 number
of documents n, u64 number of doc_idx entries m, then `sizes` int32[n], `pointers` int64[n]
(byte offsets into `.bin`), `doc_idx` int64[m]. `.bin` holds the raw tokens.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from rwkv_tui.trainer.atomic import atomic_outputs
from rwkv_tui.trainer.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float64,
               8: np.uint16}
_CODE_OF = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4, np.dtype(np.int64): 5}


def prefix_of(path: str | Path) -> Path:
    """`data/x`, `data/x.bin` and `data/x.idx` all name the pair `data/x`."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".bin", ".idx") else path


class BinIdx:
    """Memory-mapped reader: `len(d)` documents, `d[i]` tokens of document i, `d.tokens` all of them."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = prefix_of(prefix)
        idx_path, bin_path = self.prefix.with_suffix(".idx"), self.prefix.with_suffix(".bin")
        for p in (idx_path, bin_path):
            if not p.exists():
                raise DataError("binidx file not found", path=p,
                                hint="give the prefix of a .bin/.idx pair, e.g. data/sample_text_document")
        raw = idx_path.read_bytes()
        header = 9 + 8 + 1 + 8 + 8
        if len(raw) < header or raw[:9] != MAGIC:
            raise DataError("not an MMIDIDX index (bad magic)", path=idx_path,
                            hint="the .idx must come from json2binidx, make_data.py or `rwkv-tui data prepare`")
        version, code, n, m = struct.unpack("<QBQQ", raw[9:header])
        if version != 1 or code not in DTYPE_CODES:
            raise DataError(f"unsupported index version {version} / dtype code {code}", path=idx_path)
        if len(raw) < header + n * 12 + m * 8:
            raise DataError("index is truncated", path=idx_path, hint="re-create the binidx files")
        self.dtype = np.dtype(DTYPE_CODES[code])
        self.sizes = np.frombuffer(raw, np.int32, n, header)
        self.pointers = np.frombuffer(raw, np.int64, n, header + n * 4)
        self.doc_idx = np.frombuffer(raw, np.int64, m, header + n * 12)
        size = bin_path.stat().st_size
        self.tokens = (np.memmap(bin_path, dtype=self.dtype, mode="r") if size
                       else np.zeros(0, dtype=self.dtype))
        if n and int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize > size:
            raise DataError("the .bin file is shorter than its index says", path=bin_path,
                            hint="the conversion was interrupted; re-create the binidx files")

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start: start + int(self.sizes[i])])

    @property
    def n_tokens(self) -> int:
        return int(self.sizes.sum())


class BinIdxWriter:
    """Streams documents into `.bin` (and optionally an SFT mask sidecar), then writes `.idx`.
    Use as a context manager: the files appear together, only if the block succeeds."""

    def __init__(self, prefix: str | Path, dtype=np.uint16, with_mask: bool = False) -> None:
        self.prefix = prefix_of(prefix)
        self.dtype = np.dtype(dtype)
        self.with_mask = with_mask
        self.sizes: list[int] = []
        self._context = None

    @property
    def paths(self) -> list[Path]:
        paths = [self.prefix.with_suffix(".bin"), self.prefix.with_suffix(".idx")]
        return paths + ([mask_path(self.prefix)] if self.with_mask else [])

    def __enter__(self) -> "BinIdxWriter":
        self._context = atomic_outputs(self.paths)
        handles = self._context.__enter__()
        self._bin, self._idx = handles[0], handles[1]
        self._mask = handles[2] if self.with_mask else None
        return self

    def add(self, tokens, mask=None) -> None:
        array = np.asarray(tokens, dtype=self.dtype)
        self._bin.write(array.tobytes())
        if self._mask is not None:
            self._mask.write(np.asarray(mask, dtype=np.uint8).tobytes())
        self.sizes.append(len(array))

    def add_many(self, tokens: np.ndarray, sizes: np.ndarray, masks: np.ndarray | None = None) -> None:
        """Several documents at once: `tokens` back to back, `sizes` their lengths."""
        self._bin.write(np.asarray(tokens, dtype=self.dtype).tobytes())
        if self._mask is not None:
            self._mask.write(np.asarray(masks, dtype=np.uint8).tobytes())
        self.sizes.extend(int(s) for s in sizes)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            size_array = np.asarray(self.sizes, dtype=np.int32)
            pointers = np.zeros(len(self.sizes), dtype=np.int64)
            if self.sizes:
                pointers[1:] = np.cumsum(size_array[:-1], dtype=np.int64) * self.dtype.itemsize
            doc_idx = np.arange(len(self.sizes) + 1, dtype=np.int64)  # json2binidx's layout: n + 1 entries
            self._idx.write(MAGIC + struct.pack("<QBQQ", 1, _CODE_OF[self.dtype], len(self.sizes), len(doc_idx)))
            self._idx.write(size_array.tobytes() + pointers.tobytes() + doc_idx.tobytes())
        return self._context.__exit__(exc_type, exc, tb)


def mask_path(prefix: str | Path) -> Path:
    """The SFT mask sidecar: one uint8 per token of `.bin` (1 = the token is trained as a
    target: Assistant/Response content and its end of turn), same order as `.bin`."""
    return prefix_of(prefix).with_suffix(".sftmask")


def write_binidx(prefix: str | Path, documents, dtype=np.uint16) -> Path:
    """Write documents (iterables of token ids) atomically."""
    with BinIdxWriter(prefix, dtype) as writer:
        for doc in documents:
            writer.add(doc)
    return writer.prefix
