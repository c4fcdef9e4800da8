"""Training datasets. Every sample is a dict of tensors of length T = ctx_len:

    input_ids  int64[T]    tokens fed to the model
    targets    int64[T]    the next token at each position
    loss_mask  float32[T]  1 where the target is trained (SFT answers, not padding)

- `PaddedDocuments` ("pad"): one document per sample, cut or zero-padded to ctx_len
  (padding is masked out), so micro batches > 1 work with documents of any length.
- `PackedDocuments` ("pack"): documents back to back (each ends with 0), cut into
  consecutive ctx_len+1 windows: no padding wasted.
- `RandomWindows` ("random"): RWKV-LM's sampling, a window at a random offset of the token
  stream; the offset is a pure function of (seed, index), so a resumed run reads the same data.

Indices may exceed len(dataset): the sampler counts on across passes over the data
(trainer/training/sampling.py). Documents repeat modulo the length; random windows are new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rwkv_tui.trainer.config import DataSource, is_records_path
from rwkv_tui.trainer.data.binidx import mask_path
from rwkv_tui.trainer.data.corpus import (CACHE_VERSION, Corpus, all_trained, file_digest, load_binidx_corpus,
                                          load_jsonl_corpus)
from rwkv_tui.trainer.data.corpus import prepare_token_cache as prepare_jsonl_cache
from rwkv_tui.trainer.errors import DataError

LOADINGS = ("pad", "pack", "random")
DATA_TYPES = ("auto", "jsonl", "binidx")
# Inside the runs root (output.proj_dir), beside the run folders: where a run tokenizes a jsonl whose
# own folder is read-only.
TOKEN_CACHE_FOLDER = ".token-cache"


def _sample(window: np.ndarray, mask: np.ndarray, ctx_len: int) -> dict[str, torch.Tensor]:
    """From ctx_len+1 tokens (and their target masks) to one training sample, zero-padded."""
    tokens = np.zeros(ctx_len + 1, dtype=np.int64)
    trained = np.zeros(ctx_len + 1, dtype=np.float32)
    n = min(len(window), ctx_len + 1)
    tokens[:n] = window[:n]
    trained[:n] = mask[:n]
    return {
        "input_ids": torch.from_numpy(tokens[:-1].copy()),
        "targets": torch.from_numpy(tokens[1:].copy()),
        "loss_mask": torch.from_numpy(trained[1:].copy()),
    }


class PaddedDocuments(Dataset):
    def __init__(self, corpus: Corpus, ctx_len: int) -> None:
        self.corpus, self.ctx_len = corpus, ctx_len

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens, mask = self.corpus.document(i % len(self.corpus))
        return _sample(tokens, mask, self.ctx_len)


class PackedDocuments(Dataset):
    def __init__(self, corpus: Corpus, ctx_len: int) -> None:
        self.corpus, self.ctx_len = corpus, ctx_len
        self._count = max(1, (len(corpus.tokens) - 1) // ctx_len)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = (i % self._count) * self.ctx_len
        end = start + self.ctx_len + 1
        return _sample(self.corpus.tokens[start:end], self.corpus.masks[start:end], self.ctx_len)


class RandomWindows(Dataset):
    def __init__(self, corpus: Corpus, ctx_len: int, seed: int = 0) -> None:
        if len(corpus.tokens) <= ctx_len + 1:
            raise DataError(f"the data has {len(corpus.tokens)} tokens, not more than ctx_len+1 = {ctx_len + 1}",
                            hint="lower ctx_len, add data, or use loading=pad")
        self.corpus, self.ctx_len, self.seed = corpus, ctx_len, seed
        self._starts = len(corpus.tokens) - ctx_len - 1

    def __len__(self) -> int:
        return max(1, len(self.corpus.tokens) // self.ctx_len)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        start = int(rng.integers(0, self._starts + 1))
        end = start + self.ctx_len + 1
        return _sample(self.corpus.tokens[start:end], self.corpus.masks[start:end], self.ctx_len)


def run_cache_dir(run_dir: str | Path) -> Path:
    """Where a run tokenizes a jsonl: beside the run, in its runs root, so the runs there share
    one cache per data file (named by content) and the user's data folder stays untouched."""
    return Path(run_dir).expanduser().parent / TOKEN_CACHE_FOLDER


def is_jsonl(path: str | Path, data_type: str = "auto") -> bool:
    """Whether the path holds records (read and tokenized) rather than a binidx prefix: data.data_type
    decides; `auto` goes by the name (.jsonl, .json, .parquet, .csv, .tsv, .arrow, a `datasets` folder)."""
    if data_type not in DATA_TYPES:
        raise DataError(f"unknown data type {data_type!r}", field="data.data_type",
                        hint=f"choose one of: {', '.join(DATA_TYPES)}")
    return data_type == "jsonl" or (data_type == "auto" and is_records_path(path))


def _as_sources(data: str | Path | list) -> list[DataSource]:
    """A path, a list of paths or a list of DataSources (data.all_sources()) as DataSources."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    return [item if isinstance(item, DataSource) else DataSource(str(item), 1) for item in items]


def _single_path(sources: list[DataSource]) -> str | None:
    """The one file read once, which keeps its own token cache (exactly as before sources existed)."""
    return sources[0].path if len(sources) == 1 and sources[0].repeat == 1 else None


@dataclass(frozen=True)
class HeldOut:
    """data.val_fraction of the documents, chosen by seed (`split.held_out_mask`), kept out of training."""

    fraction: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.fraction > 0


def sources_cache_prefix(sources: list[DataSource], cache_dir: str | Path | None = None,
                         held_out: HeldOut = HeldOut()) -> Path:
    """The binidx prefix of several files' token cache, named by their contents and repeats (an edited
    file or a changed repeat is tokenized again) and by the held-out split, if any; `cache_dir`
    defaults to the first file's folder."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"{_content_digest(Path(source.path))}:{source.repeat};".encode())
    if held_out.active:
        digest.update(f"held-out:{held_out.fraction!r}:{held_out.seed};".encode())
    folder = Path(cache_dir) if cache_dir is not None else Path(sources[0].path).parent
    return folder / f".sources-{digest.hexdigest()[:16]}-v{CACHE_VERSION}"


def _content_digest(path: Path) -> str:
    """A file's content digest; a `datasets` folder's is that of its files, by name."""
    if not path.exists():
        raise DataError("data file not found", path=path)
    if not path.is_dir():
        return file_digest(path)
    return hashlib.sha256("".join(f"{f.name}={file_digest(f)};" for f in sorted(path.iterdir())
                                  if f.is_file()).encode()).hexdigest()[:16]


def prepare_sources_cache(sources: list[DataSource], cache_dir: str | Path | None = None,
                          held_out: HeldOut = HeldOut(), progress=None) -> Path:
    """Tokenize several files (each `repeat` times, in file order: the sampler shuffles) into one
    binidx cache with SFT masks, unless it exists; its prefix. The held-out documents are left out
    (and written to PREFIX.val.jsonl), so training never sees them."""
    from rwkv_tui.trainer.data.prepare import SourceFile, prepare_binidx

    prefix = sources_cache_prefix(sources, cache_dir, held_out)
    if not all(p.exists() for p in (prefix.with_suffix(".bin"), prefix.with_suffix(".idx"), mask_path(prefix))):
        files = [SourceFile(Path(s.path), s.repeat) for s in sources]
        prepare_binidx(files, prefix, sft_mask=True, shuffle=False, force=True, val_fraction=held_out.fraction,
                       seed=held_out.seed, progress=progress)
    return prefix


def _check_mixable(sources: list[DataSource], data_type: str) -> None:
    binidx = [s.path for s in sources if not is_jsonl(s.path, data_type)]
    if binidx:
        raise DataError("only record files can be mixed or repeated, not a binidx prefix", path=binidx[0],
                        hint="list the record files it was prepared from in data.path or [[data.sources]]")


def prepare_token_cache(path, data_type: str, cache_dir: str | Path | None = None,
                        held_out: HeldOut = HeldOut(), progress=None) -> None:
    """Tokenize the records into their cache now (binidx data needs none). `path`: one path, or
    several paths or DataSources (tokenized together into one cache, as is a file with a held-out split).
    `progress(phase, done, total, tokens)` as `prepare_binidx` reports it (the dashboard's startup line)."""
    sources = _as_sources(path)
    single = _single_path(sources)
    if single is not None and not held_out.active:
        if is_jsonl(single, data_type):
            prepare_jsonl_cache(single, cache_dir=cache_dir, progress=progress)
        return
    _check_mixable(sources, data_type)
    prepare_sources_cache(sources, cache_dir, held_out, progress)


def load_corpus(path, data_type: str = "auto", loss_mask: str = "sft",
                cache_dir: str | Path | None = None, fallback_dir: str | Path | None = None,
                held_out: HeldOut = HeldOut()) -> Corpus:
    """The corpus of a record file (tokenized into `cache_dir`, default beside it, else into
    `fallback_dir`), of a binidx prefix, or of several record files with their repeats; without
    the `held_out` documents."""
    sources = _as_sources(path)
    single = _single_path(sources)
    if single is None or held_out.active:
        _check_mixable(sources, data_type)
        corpus = load_binidx_corpus(prepare_sources_cache(sources, cache_dir, held_out))
    elif is_jsonl(single, data_type):
        corpus = load_jsonl_corpus(single, cache_dir, fallback_dir)
    else:
        corpus = load_binidx_corpus(single)
    if loss_mask == "none":
        corpus = Corpus(corpus.tokens, all_trained(len(corpus.tokens)), corpus.offsets)
    return corpus


def build_dataset(path, ctx_len: int, loading: str = "pad", loss_mask: str = "sft", seed: int = 0,
                  vocab_size: int = 65536, data_type: str = "auto", cache_dir: str | Path | None = None,
                  fallback_dir: str | Path | None = None, held_out: HeldOut = HeldOut()) -> Dataset:
    """The dataset a run trains on (see the module docstring for the sample layout)."""
    if loading not in LOADINGS:
        raise DataError(f"unknown loading mode {loading!r}", field="data.loading",
                        hint=f"choose one of: {', '.join(LOADINGS)}")
    corpus = load_corpus(path, data_type, loss_mask, cache_dir, fallback_dir, held_out)
    sources = _as_sources(path)
    corpus.check_vocab(vocab_size, ", ".join(s.path for s in sources) if len(sources) > 1 else sources[0].path)
    if loading == "pad":
        return PaddedDocuments(corpus, ctx_len)
    if loading == "pack":
        return PackedDocuments(corpus, ctx_len)
    return RandomWindows(corpus, ctx_len, seed)
