"""Which sample the trainer reads at each position: a pure function of (seed, position).

Resume is exact because nothing here has hidden state: after a restart at optimizer step
`s`, the loader starts at position `s * samples_per_step` and replays the same sequence
an uninterrupted run would have read. Each full pass over a dataset of documents uses
its own permutation (seeded by the pass number), like an epoch of shuffled data.

Indices count on across passes (pass p yields p·len + a permutation of 0..len-1): datasets of
documents take them modulo their length, and random windows draw fresh windows every pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

# Above this size a permutation table costs more than it is worth; such datasets (random
# windows over a token stream) already randomise inside __getitem__.
_MAX_PERMUTED = 1 << 24


class ResumableSampler(Sampler[int]):
    """Yields dataset indices for positions `start, start+stride, …` (stride = world size),
    `length` of them, so each rank reads a disjoint, reproducible slice."""

    def __init__(self, dataset_len: int, seed: int, start: int, length: int, rank: int = 0, world_size: int = 1):
        if dataset_len <= 0:
            raise ValueError("empty dataset")
        self.dataset_len, self.seed = dataset_len, seed
        self.start, self.length = start, length
        self.rank, self.world_size = rank, world_size
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        for i in range(self.length):
            yield self._index((self.start + i) * self.world_size + self.rank)

    def _index(self, position: int) -> int:
        if self.dataset_len > _MAX_PERMUTED:
            return position
        data_pass, offset = divmod(position, self.dataset_len)
        if self._perm_cache is None or self._perm_cache[0] != data_pass:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + data_pass)
            self._perm_cache = (data_pass, torch.randperm(self.dataset_len, generator=generator))
        return data_pass * self.dataset_len + int(self._perm_cache[1][offset])
