"""Affinity3D's instance queue (paper section 3.4): superpoint instances of consecutive frames are refined together.

The queue holds up to `capacity` instances (rows of crop features F and initial scores Y), frame by frame in
arrival order. A frame's instances wait in the queue while later frames arrive; when the next frame would overflow
it, the oldest frame leaves, and its rows are refined against everything in the queue at that moment: the frames
before it that are still queued and the later frames that have arrived since. A frame therefore gets its final
labels exactly once, when it leaves (or when the sequence ends and the queue is flushed), and the graph of one
refinement never holds more than `capacity` instances - except a single frame larger than the whole queue, which is
refined on its own as soon as it arrives.

The queue only keeps rows and says which frame leaves with which neighbours; the walk itself (Eqs. 6-8) is the
method's (`pc3d.methods.affinity3d.refine_scores`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

K = TypeVar("K")


@dataclass
class Departure(Generic[K]):
    """A frame leaving the queue: its own rows and the rows of every other frame queued with it."""

    key: K  # the caller's handle of the frame (what its labels are written from)
    features: Tensor  # (S, D) this frame's instance features
    scores: Tensor  # (S, C) this frame's initial scores Y
    other_features: Tensor  # (M, D) the other queued frames' instances (earlier and later frames)
    other_scores: Tensor  # (M, C)


class InstanceQueue(Generic[K]):
    """FIFO of frames bounded by the number of instances they hold (not by the number of frames)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"queue capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._frames: deque[tuple[K, Tensor, Tensor]] = deque()
        self.size = 0  # instances queued now

    def __len__(self) -> int:
        return self.size

    @property
    def frames(self) -> int:
        return len(self._frames)

    def push(self, key: K, features: Tensor, scores: Tensor) -> list[Departure[K]]:
        """Queue one frame's instances; returns the frames that left to make room for them, oldest first."""
        if features.shape[0] != scores.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows but {scores.shape[0]} score rows")
        left = []
        while self._frames and self.size + features.shape[0] > self.capacity:
            left.append(self._pop())
        self._frames.append((key, features, scores))
        self.size += features.shape[0]
        if self.size > self.capacity:  # larger than the whole queue: nothing can join it, refine it alone now
            left.append(self._pop())
        return left

    def flush(self) -> list[Departure[K]]:
        """Every queued frame, oldest first (end of a sequence): each refined with the frames still behind it."""
        return [self._pop() for _ in range(len(self._frames))]

    def _pop(self) -> Departure[K]:
        key, features, scores = self._frames.popleft()
        self.size -= features.shape[0]
        if self._frames:
            other_f = torch.cat([f for _, f, _ in self._frames])
            other_y = torch.cat([y for _, _, y in self._frames])
        else:
            other_f, other_y = features[:0], scores[:0]
        return Departure(key, features, scores, other_f, other_y)
