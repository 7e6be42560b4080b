"""Helpers shared by the `pc3d data prepare` converters: atomic npy writes, completeness checks,
and running one job per scene/room/shape in worker processes with a progress bar."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.io.atomic import atomic_write


def save_npy(path: Path, array: np.ndarray) -> None:
    """One .npy, written atomically (never pickled)."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:  # would need pickle to read back
            raise ValueError(f"{name}: object arrays are not written")
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def npy_rows(path: Path) -> int | None:
    """Rows of an .npy read from its header only (None when missing or unreadable), so resuming a
    prepare run costs a stat and a header per file rather than a full read."""
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, EOFError, IndexError):
        return None


def complete(paths: Sequence[Path], same_rows: Sequence[Sequence[Path]] = ()) -> bool:
    """Outputs are complete when every file exists, every .npy header reads, and the .npy files of each
    group in `same_rows` (per-point arrays of one scene) hold the same number of rows. Each file is
    written atomically, so a file that exists is whole; an interrupted scene lacks some file and is redone."""
    rows: dict[Path, int] = {}
    for path in paths:
        if not path.is_file():
            return False
        if path.suffix == ".npy":
            count = npy_rows(path)
            if count is None:
                return False
            rows[path] = count
    return all(len({rows.get(path, -1) for path in group}) <= 1 for group in same_rows)


def stable_seed(*parts: str) -> int:
    """A seed from names (not Python's salted hash), so a rerun samples the same points."""
    return zlib.crc32("/".join(parts).encode())


def run_jobs(func: Callable[..., dict[str, Any]], jobs: Sequence[tuple], workers: int,
             description: str) -> list[dict[str, Any]]:
    """func(*job) for every job, in `workers` processes (1 = in this process), with a progress bar.

    Results come back in job order whatever order the workers finish in."""
    from pc3d.console import track

    if workers <= 1 or len(jobs) <= 1:
        return [func(*job) for job in track(jobs, total=len(jobs), description=description)]
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs), os.cpu_count() or 1)) as pool:
        futures = {pool.submit(func, *job): index for index, job in enumerate(jobs)}
        for future in track(as_completed(futures), total=len(futures), description=description):
            results[futures[future]] = future.result()  # an InputError in a worker is re-raised here
    return [r for r in results if r is not None]


def count_by(results: Iterable[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result[key]] = counts.get(result[key], 0) + 1
    return dict(sorted(counts.items()))
