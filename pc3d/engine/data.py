"""Batches for the engine: a resumable sharded sampler, the default collate, device transfer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    """Per-epoch permutation from (seed, epoch), dealt round-robin to `world` ranks.

    Rank r takes positions r, r+world, ... of the permutation, so micro-batch i of every rank together
    is exactly block i of the permutation: N workers with batch b see the same samples per step as one
    worker with batch N*b. Training drops the tail that would not fill a whole step on every rank (equal
    step counts keep DDP collectives in lock-step); `start` skips micro-batches already done, which is
    how a mid-epoch resume continues with the very next sample. The sampler draws from its own generator
    only, never the global RNG.
    """

    def __init__(self, length: int, rank: int, world: int, seed: int, shuffle: bool,
                 local_batch: int = 1, batches_multiple: int = 1, drop_tail: bool = True) -> None:
        self.length = length
        self.rank = rank
        self.world = world
        self.seed = seed
        self.shuffle = shuffle
        self.local_batch = local_batch
        self.drop_tail = drop_tail
        if drop_tail:
            # whole optimiser steps only: micro-batches per epoch is a multiple of `batches_multiple`
            self.batches = (length // (local_batch * world)) // batches_multiple * batches_multiple
            self.used = self.batches * local_batch * world
        else:
            self.used = length
            self.batches = -(-len(range(rank, length, world)) // local_batch)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.length)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=generator)

    def __iter__(self) -> Iterator[int]:
        mine = self._order()[: self.used][self.rank:: self.world]
        return iter(mine[self.start_batch * self.local_batch:].tolist())

    def __len__(self) -> int:
        mine = len(range(self.rank, self.used, self.world))
        return max(mine - self.start_batch * self.local_batch, 0)


def default_collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack a list of dict samples key by key; numbers become tensors, anything else a list."""
    first = samples[0]
    if not isinstance(first, Mapping):
        raise TypeError(f"datasets for the engine yield dicts of tensors, got {type(first).__name__}")
    batch: dict[str, Any] = {}
    for key in first:
        values = [sample[key] for sample in samples]
        if isinstance(values[0], Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack '{key}': samples have shapes {sorted(shapes)[:3]}; "
                                 "give TrainingSetup a collate_fn for variable-size samples")
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, float, bool)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`; other values pass through."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy and random follow the worker's torch seed (set from our generator)."""
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
