"""INPUT... of the batch commands (`pc3d predict`, `pc3d detect`, `pc3d segment`): files, folders and globs.

Kept free of numpy/torch at import time so a missing input fails before anything heavy loads.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from pc3d.errors import InputError


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, folders (their readable point-cloud files, not recursive) and globs -> sorted unique files."""
    from pc3d.io.pointcloud import MESH_SUFFIXES, POINT_SUFFIXES

    readable = POINT_SUFFIXES + MESH_SUFFIXES
    files: list[Path] = []
    for spec in specs:
        spec = str(spec)
        path = Path(spec).expanduser()
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in readable)
            if not found:
                raise InputError(f"{spec}: a folder without point-cloud files ({' '.join(readable)})")
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in readable)
            if not found:
                raise InputError(f"{spec}: the pattern matches no point-cloud file")
        else:
            raise InputError(f"input not found: {spec}")
        files += found
    unique: dict[Path, Path] = {}
    for f in files:  # a file named twice (a folder and a glob over it) is processed once
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def output_stems(files: list[Path], run_dir: Path) -> list[Path]:
    """Per input, its outputs' path without suffix: the input's place below the inputs' common folder, mirrored
    in the run folder, so same-named scans of different folders (KITTI sequences) never overwrite each other."""
    resolved = [f.resolve() for f in files]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [run_dir / p.relative_to(root).parent / p.stem for p in resolved]
