"""S3DIS in Pointcept's preprocessed layout, with the Area-5 protocol (train on areas 1-4 and 6, test on 5).

Layout: <root>/Area_<k>/<room>/{coord,color,normal,segment,instance}.npy (segment: 13 classes, -1 =
ignore; instance: -1 = none). `root` may also be the folder that holds `s3dis/`. Samples are the same
dicts as ScanNetPointcept's (coord, color, normal, segment, instance, name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pc3d.data.readers._common import require_dir
from pc3d.data.readers.scannet import read_pointcept_scene
from pc3d.errors import InputError

S3DIS_CLASSES: tuple[str, ...] = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table",
                                  "chair", "sofa", "bookcase", "board", "clutter")
# instance benchmarks on S3DIS score every class (ceiling/floor/wall included)
S3DIS_INSTANCE_CLASSES: tuple[int, ...] = tuple(range(len(S3DIS_CLASSES)))
TEST_AREA = 5
S3DIS_SPLITS = ("train", "val", "test")


class S3DISPointcept:
    """Rooms of a split: "train" = every area but the test area; "val"/"test" = the test area (Area 5)."""

    classes = S3DIS_CLASSES

    def __init__(self, root: str | Path, split: str = "train", test_area: int = TEST_AREA) -> None:
        if split not in S3DIS_SPLITS:
            raise InputError(f"S3DIS: split must be one of {', '.join(S3DIS_SPLITS)}, got {split!r}")
        base = Path(root)
        if not any(base.glob("Area_*")) and (base / "s3dis").is_dir():
            base = base / "s3dis"
        require_dir(base, "S3DIS (Pointcept layout)")
        areas = sorted(p for p in base.glob("Area_*") if p.is_dir())
        if not areas:
            raise InputError(f"S3DIS (Pointcept layout): no Area_<k> folders in {base}")
        wanted = [a for a in areas if (a.name == f"Area_{test_area}") == (split != "train")]
        self.rooms = sorted(r for a in wanted for r in a.iterdir() if r.is_dir())
        if not self.rooms:
            raise InputError(f"S3DIS (Pointcept layout): split '{split}' has no rooms under {base} "
                             f"(test area {test_area})")
        self.split = split

    def __len__(self) -> int:
        return len(self.rooms)

    def __getitem__(self, index: int) -> dict[str, Any]:
        room = self.rooms[index]
        sample = read_pointcept_scene(room, "segment", "S3DIS")
        sample["name"] = f"{room.parent.name}/{room.name}"
        return sample
