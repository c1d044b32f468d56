"""Data order that survives a restart: a resumable ``DistributedSampler``, per-sample seeding, eval shards.

* :class:`ResumableDistributedSampler` is PyTorch's ``DistributedSampler`` (shuffle seeded by
  ``seed + epoch``, ``drop_last`` so no rank sees a padding duplicate) that can start an epoch at a
  given position and yields ``(epoch, index)`` keys.
* :class:`SeededSamples` wraps a dataset so the random augmentation of a sample is a function of
  ``(seed, epoch, index)`` only: the same in a resumed run, with any number of data-loader workers,
  and on whichever rank loads it (so a 2-process run sees the same crops as a 1-process run).
* :class:`InfiniteLoader` walks epochs forever (``set_epoch`` each time) and reports its position.
* :class:`ShardSampler` splits evaluation indices over ranks without padding, so no image counts twice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(epoch, index)``; ``set_epoch(epoch, start)`` skips ``start`` indices."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        if self.num_samples == 0:
            raise ValueError(
                f"dataset has {len(dataset)} samples, fewer than the {num_replicas} processes that share it"
            )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start :]
        return iter([(self.epoch, int(i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch, index)`` (numpy ``SeedSequence``)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class SeededSamples(Dataset):
    """``dataset[index]`` computed with python/numpy/torch RNGs seeded from ``(seed, epoch, index)``.

    Keys are ``(epoch, index)`` pairs (from :class:`ResumableDistributedSampler`); items are
    ``(sample, epoch, index)``. The global RNG states are restored afterwards, so loading data does
    not disturb the training process's RNGs.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(s)
                np.random.seed(s % 2**32)
                torch.manual_seed(s)
                return self.dataset[index], epoch, index
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class InfiniteLoader:
    """Micro-batches of :class:`SeededSamples` over endless epochs of a :class:`ResumableDistributedSampler`.

    ``batches_per_epoch`` micro-batches are taken per epoch (the rest of the epoch is dropped).
    ``state_dict()`` gives ``{"epoch", "position"}`` (micro-batches taken in that epoch); after
    ``load_state_dict`` the next batch is the one that followed in the original run. ``last_keys``
    holds the ``(epochs, indices)`` tensors of the latest batch.
    """

    def __init__(
        self,
        dataset: SeededSamples,
        sampler: ResumableDistributedSampler,
        batch_size: int,
        batches_per_epoch: int,
        **loader_kw: Any,
    ) -> None:
        if not 1 <= batches_per_epoch * batch_size <= sampler.num_samples:
            raise ValueError(
                f"batches_per_epoch * batch_size must be in [1, {sampler.num_samples}] (samples per process and "
                f"epoch), got {batches_per_epoch} * {batch_size}"
            )
        self.sampler = sampler
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_kw)
        self.epoch = 0
        self.position = 0
        self.last_keys: tuple[torch.Tensor, torch.Tensor] | None = None
        self._it: Iterator[Any] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if not 0 <= self.position <= self.batches_per_epoch:
            raise ValueError(f"position must be in [0, {self.batches_per_epoch}], got {self.position}")
        self._it = None

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> Any:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self.sampler.set_epoch(self.epoch, start=self.position * self.batch_size)
            self._it = iter(self.loader)
        sample, epochs, indices = next(self._it)
        self.position += 1
        self.last_keys = (epochs, indices)
        return sample


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(n)``: every index on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
