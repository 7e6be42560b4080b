"""ShapeNetPart (`shapenetcore_partanno_segmentation_benchmark_v0_normal`).

`<root>/synsetoffset2category.txt` (category name, synset id), `<root>/train_test_split/
shuffled_{train,val,test}_file_list.json` (entries `shape_data/<synset>/<id>`), and
`<root>/<synset>/<id>.txt` rows x y z nx ny nz part_label. Part labels are global (0..49).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.labels import SHAPENETPART_PART_IDS, SHAPENETPART_SYNSETS
from pc3d.data.readers._common import choose_points, require_file, unit_sphere
from pc3d.errors import InputError

# the benchmark's category ids 0..15 (alphabetical names = synset order), whatever subset a folder lists
CATEGORY_IDS: dict[str, int] = {name: i for i, name in enumerate(sorted(SHAPENETPART_SYNSETS))}

def read_categories(root: Path) -> list[tuple[str, str]]:
    path = require_file(root / "synsetoffset2category.txt", "ShapeNetPart")
    pairs = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            pairs.append((parts[0], parts[1]))
        elif parts:
            raise InputError(f"ShapeNetPart: {path}: expected 'Name synset' per line, got '{line.strip()}'")
    return sorted(pairs)


class ShapeNetPart(Dataset):
    """Yields {"points": (num_points,3), "category": int64, "part_label": (num_points,) int64}."""

    def __init__(self, root: str | os.PathLike, split: str = "train", num_points: int = 2048,
                 random_subset: bool | None = None) -> None:
        self.root = Path(root)
        self.categories = read_categories(self.root)
        for name, _ in self.categories:
            if name not in CATEGORY_IDS:
                raise InputError(f"ShapeNetPart: unknown category '{name}' in synsetoffset2category.txt")
        self.category_index = {synset: CATEGORY_IDS[name] for name, synset in self.categories}
        self.category_names = sorted(CATEGORY_IDS, key=CATEGORY_IDS.get)
        split_file = self.root / "train_test_split" / f"shuffled_{split}_file_list.json"
        require_file(split_file, "ShapeNetPart")
        try:
            entries = json.loads(split_file.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"ShapeNetPart: {split_file} is not valid JSON ({exc.msg})") from None
        self.items: list[tuple[Path, int]] = []
        for entry in entries:
            synset, shape_id = entry.split("/")[-2:]
            if synset not in self.category_index:
                continue  # a category left out of synsetoffset2category.txt
            self.items.append((self.root / synset / f"{shape_id}.txt", self.category_index[synset]))
        if self.items:
            require_file(self.items[0][0], "ShapeNetPart")
        self.num_points = num_points
        self.random_subset = split == "train" if random_subset is None else random_subset

    def __len__(self) -> int:
        return len(self.items)

    def parts_of(self, category: int) -> list[int]:
        return list(SHAPENETPART_PART_IDS[self.category_names[category]])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, category = self.items[index]
        require_file(path, "ShapeNetPart")
        try:
            data = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as exc:
            raise InputError(f"ShapeNetPart: cannot parse {path} ({exc})") from None
        if data.shape[1] < 7:
            raise InputError(f"ShapeNetPart: {path} has {data.shape[1]} columns, expected 7")
        rng = np.random.default_rng(torch.randint(1 << 30, ()).item()) if self.random_subset else None
        keep = choose_points(len(data), self.num_points, rng)
        points = unit_sphere(data[keep, :3]).astype(np.float32)
        return {"points": torch.from_numpy(points), "category": torch.tensor(category),
                "part_label": torch.from_numpy(data[keep, 6].astype(np.int64))}
