"""Disk and time of `pc3d data prepare` on synthetic raw layouts at real per-item sizes (README "Real datasets").

    OMP_NUM_THREADS=1 python scripts/measure_prepare.py OUT scannet|s3dis|modelnet40

scannet: 3 scenes of 150 000 mesh vertices; s3dis: 6 rooms of 300 000 points; modelnet40: 39 shapes (three of
each synthetic category). Seed 0, one worker. Prints one JSON line: seconds to write the raw layout and to
prepare it, bytes of the raw layout and of each prepared layout; the README extrapolates per scene / point /
shape to the released datasets.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pc3d.data.prepare import prepare
from pc3d.data.synthetic.raw import write_raw

SIZES = {"scannet": (3, 150_000), "s3dis": (6, 300_000), "modelnet40": (39, 16)}


def disk(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(base: Path, dataset: str) -> dict:
    count, points = SIZES[dataset]
    start = time.perf_counter()
    write_raw(dataset, base / "raw", count, 0, points)
    written = time.perf_counter()
    summary = prepare(dataset, base / "raw", base / "out")
    done = time.perf_counter()
    return {"dataset": dataset, "items": count, "points_per_item": points if dataset != "modelnet40" else None,
            "write_raw_s": round(written - start, 2), "prepare_s": round(done - written, 2),
            "raw_bytes": disk(base / "raw"), "out_bytes": {k: disk(v) for k, v in summary["outputs"].items()}}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
