"""Slow, obviously-correct references shared by several test files."""

from __future__ import annotations

from collections import deque

import numpy as np


def knn_radius_components(points: np.ndarray, k: int, radius: float) -> list[set[int]]:
    """Components of the graph joining each point to its k+1 nearest (itself included) closer than `radius`,
    found by breadth-first search over a dense distance matrix."""
    n = len(points)
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    adjacency: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        for j in np.argsort(dist[i], kind="stable")[: k + 1]:
            if dist[i, j] < radius:
                adjacency[i].add(int(j))
                adjacency[int(j)].add(i)
    seen: set[int] = set()
    components = []
    for start in range(n):
        if start in seen:
            continue
        queue, comp = deque([start]), {start}
        seen.add(start)
        while queue:
            for j in adjacency[queue.popleft()]:
                if j not in seen:
                    seen.add(j)
                    comp.add(j)
                    queue.append(j)
        components.append(comp)
    return components
