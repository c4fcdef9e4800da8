"""The RWKV World tokenizer: greedy longest match over UTF-8 bytes.

The vocabulary (`rwkv_vocab_v20230424.txt`: ids 1..65529, 0 = end of text, vocab_size
65536) ships inside the `pyrwkv_tokenizer` package (and the `rwkv` package). Encoding uses
that package's Rust encoder when it imports, because the tests prove it gives exactly the
ids of our own pure-Python greedy longest match (kept as the fallback and the oracle) and
of the `rwkv` package's tokenizer. Decoding is a byte join done here, so invalid UTF-8
(a token that splits a character) becomes U+FFFD for those bytes only.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

from rwkv_tui.trainer.errors import DataError

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
VOCAB_SIZE = 65536
END_OF_TEXT = 0


def find_vocab_file() -> Path:
    """The vocab file shipped by an installed package (no download, no copy in this repo)."""
    for package in ("pyrwkv_tokenizer", "rwkv"):
        try:
            module = __import__(package)
        except ImportError:
            continue
        candidate = Path(module.__file__).parent / VOCAB_FILE
        if candidate.exists():
            return candidate
    raise DataError(f"the World tokenizer vocabulary ({VOCAB_FILE}) was not found",
                    hint="install it with `pip install pyrwkv-tokenizer` (a dependency of rwkv-tui)")


def parse_vocab(path: Path) -> dict[int, bytes]:
    """id -> token bytes. Each line is `<id> <python literal> <byte length>`; the literal is
    read with `ast.literal_eval`, never `eval`."""
    table: dict[int, bytes] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            first, last = line.index(" "), line.rstrip().rindex(" ")
            token = ast.literal_eval(line[first:last].strip())
            data = token.encode("utf-8") if isinstance(token, str) else token
            if not isinstance(data, bytes) or len(data) != int(line[last:]):
                raise DataError("malformed vocabulary line", path=path, line=line_no)
            table[int(line[:first])] = data
    return table


class GreedyEncoder:
    """Pure-Python greedy longest match (the oracle, and the fallback without the Rust package)."""

    def __init__(self, table: dict[int, bytes]) -> None:
        self._ids = {data: idx for idx, data in table.items()}
        lengths: dict[int, set[int]] = {}
        for data in self._ids:
            lengths.setdefault(data[0], set()).add(len(data))
        # For each first byte, the token lengths that exist, longest first.
        self._lengths = {first: sorted(ls, reverse=True) for first, ls in lengths.items()}

    def encode_bytes(self, data: bytes) -> list[int]:
        ids, i, n = [], 0, len(data)
        lookup, lengths = self._ids, self._lengths
        while i < n:
            for length in lengths[data[i]]:
                token = lookup.get(data[i: i + length])
                if token is not None:
                    ids.append(token)
                    i += length
                    break
        return ids


class WorldTokenizer:
    """`encode(str) -> list[int]`, `decode(list[int]) -> str`, and batch/bytes helpers."""

    vocab_size = VOCAB_SIZE

    def __init__(self, vocab_path: Path | None = None, *, use_rust: bool = True) -> None:
        self.vocab_path = Path(vocab_path) if vocab_path else find_vocab_file()
        table = parse_vocab(self.vocab_path)
        self._bytes: list[bytes | None] = [None] * VOCAB_SIZE
        for idx, data in table.items():
            self._bytes[idx] = data
        self._table = table
        self._python_encoder: GreedyEncoder | None = None  # built on first use: only needed without Rust
        self._rust = _rust_encoder(self.vocab_path) if use_rust else None

    @property
    def _python(self) -> GreedyEncoder:
        if self._python_encoder is None:
            self._python_encoder = GreedyEncoder(self._table)
        return self._python_encoder

    @property
    def backend(self) -> str:
        return "rust" if self._rust is not None else "python"

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str], threads: bool = True) -> list[list[int]]:
        """`threads=False` in forked worker processes: the Rust encoder's thread pool, once used
        in a parent, is copied by fork without its threads, and a child's batch call would wait
        on them forever. One text at a time never touches that pool (and is as fast per core)."""
        if self._rust is not None:
            try:
                if not threads:
                    return [self._rust.encode(text) for text in texts]
                return self._rust.encode_batch(list(texts))
            except UnicodeEncodeError:  # a lone surrogate: find it and say where
                for text in texts:
                    _utf8(text)
                raise
        return [self._python.encode_bytes(_utf8(t)) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        parts = []
        for idx in ids:
            data = self._bytes[idx] if 0 <= idx < VOCAB_SIZE else None
            if data is None:
                if idx == END_OF_TEXT:
                    continue  # the end-of-text separator has no text
                raise DataError(f"token id {idx} is not in the World vocabulary (valid ids: 1..65529)",
                                hint="the data or model does not use the RWKV World tokenizer")
            parts.append(data)
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, idx: int) -> bytes:
        return self.decode_bytes([idx])


def _utf8(text: str) -> bytes:
    # Lone surrogates cannot be UTF-8; "surrogatepass" would invent bytes no tokenizer
    # in the ecosystem produces, so say which character is wrong instead.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"text contains a lone surrogate code point at character {exc.start}, which is "
                        "not valid Unicode text", hint="fix the text where it was produced") from None


def _rust_encoder(vocab_path: Path):
    try:
        import pyrwkv_tokenizer
    except ImportError:
        return None
    return pyrwkv_tokenizer.WorldTokenizer(str(vocab_path))


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> WorldTokenizer:
    return WorldTokenizer()
