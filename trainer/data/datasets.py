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

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rwkv_tui.trainer.data.corpus import Corpus, all_trained, load_binidx_corpus, load_jsonl_corpus
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
    """data.data_type decides; `auto` goes by the .jsonl suffix (anything else is a binidx prefix)."""
    if data_type not in DATA_TYPES:
        raise DataError(f"unknown data type {data_type!r}", field="data.data_type",
                        hint=f"choose one of: {', '.join(DATA_TYPES)}")
    return data_type == "jsonl" or (data_type == "auto" and Path(path).suffix == ".jsonl")


def prepare_token_cache(path: str | Path, data_type: str, cache_dir: str | Path | None = None) -> None:
    """Tokenize a jsonl into its cache now (binidx data needs none)."""
    if is_jsonl(path, data_type):
        prepare_jsonl_cache(path, cache_dir=cache_dir)


def load_corpus(path: str | Path, data_type: str = "auto", loss_mask: str = "sft",
                cache_dir: str | Path | None = None, fallback_dir: str | Path | None = None) -> Corpus:
    """The corpus of a jsonl (tokenized into `cache_dir`, default beside it, else into
    `fallback_dir`) or of a binidx prefix."""
    if is_jsonl(path, data_type):
        corpus = load_jsonl_corpus(path, cache_dir, fallback_dir)
    else:
        corpus = load_binidx_corpus(path)
    if loss_mask == "none":
        corpus = Corpus(corpus.tokens, all_trained(len(corpus.tokens)), corpus.offsets)
    return corpus


def build_dataset(path, ctx_len: int, loading: str = "pad", loss_mask: str = "sft", seed: int = 0,
                  vocab_size: int = 65536, data_type: str = "auto", cache_dir: str | Path | None = None,
                  fallback_dir: str | Path | None = None) -> Dataset:
    """The dataset a run trains on (see the module docstring for the sample layout)."""
    if loading not in LOADINGS:
        raise DataError(f"unknown loading mode {loading!r}", field="data.loading",
                        hint=f"choose one of: {', '.join(LOADINGS)}")
    corpus = load_corpus(path, data_type, loss_mask, cache_dir, fallback_dir)
    corpus.check_vocab(vocab_size, path)
    if loading == "pad":
        return PaddedDocuments(corpus, ctx_len)
    if loading == "pack":
        return PackedDocuments(corpus, ctx_len)
    return RandomWindows(corpus, ctx_len, seed)
