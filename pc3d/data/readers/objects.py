"""Object datasets from a preset's `data` section: the embedded synthetic shapes or a public folder."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.errors import ConfigError

# the test and validation objects of the synthetic benchmark come from their own index ranges (train: 0..),
# so no generated shape is in two splits (object_rng(seed, index) gives each index its own stream)
SYNTHETIC_TEST_OFFSET = 1_000_000
SYNTHETIC_VAL_OFFSET = 2_000_000


class SyntheticObjects(Dataset):
    """In-memory procedural objects (category i % C for item i), generated once, deterministic per seed.

    Samples: points (N,3), label (category index), and with `with_parts` (ShapeNetPart categories
    only) `category` (benchmark id 0..15) and `part_label` (global part ids 0..49)."""

    def __init__(self, count: int, seed: int, num_points: int, categories: list[str] | None = None,
                 index_offset: int = 0, with_parts: bool = False) -> None:
        from pc3d.data.synthetic.objects import CATEGORIES

        names = tuple(categories or [c.name for c in CATEGORIES])
        self.classes = list(names)
        self.samples = _generate(count, seed, num_points, names, index_offset, with_parts)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


@functools.lru_cache(maxsize=8)
def _generate(count: int, seed: int, num_points: int, names: tuple[str, ...], index_offset: int,
              with_parts: bool) -> list[dict[str, torch.Tensor]]:
    """The samples, cached: few-shot folds and the post-training test rebuild ask for the same objects."""
    from pc3d.data.synthetic.objects import generate_object, object_rng

    samples = []
    for i in range(count):
        cls = i % len(names)
        obj = generate_object(names[cls], object_rng(seed, index_offset + i), num_points)
        sample = {"points": torch.from_numpy(obj.points), "label": torch.tensor(cls)}
        if with_parts:
            shapenet_id = shapenetpart_category(names[cls])
            if shapenet_id is None:
                raise ValueError(f"'{names[cls]}' has no ShapeNetPart category")
            sample["category"] = torch.tensor(shapenet_id)
            sample["part_label"] = torch.from_numpy(obj.part)
        samples.append(sample)
    return samples


def shapenetpart_category(name: str) -> int | None:
    from pc3d.data.readers.shapenetpart import CATEGORY_IDS
    from pc3d.data.synthetic.objects import CATEGORY_BY_NAME

    official = CATEGORY_BY_NAME[name].shapenetpart
    return None if official is None else CATEGORY_IDS[official]


def synthetic_partseg_categories() -> list[str]:
    from pc3d.data.synthetic.objects import CATEGORIES

    return [c.name for c in CATEGORIES if c.shapenetpart is not None]


class WithProbeSplit(Dataset):
    """Two labelled sets as one, each sample tagged `probe_split` 0 (SVM train) or 1 (SVM test)."""

    def __init__(self, train: Dataset, test: Dataset) -> None:
        self.parts = (train, test)

    def __len__(self) -> int:
        return len(self.parts[0]) + len(self.parts[1])  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        first = len(self.parts[0])  # type: ignore[arg-type]
        split = int(index >= first)
        sample = dict(self.parts[split][index - split * first])
        sample["probe_split"] = torch.tensor(split)
        return {k: v for k, v in sample.items() if k in ("points", "label", "probe_split")}


class Subset(Dataset):
    def __init__(self, base: Dataset, indices: list[int], relabel: dict[int, int] | None = None) -> None:
        self.base = base
        self.indices = indices
        self.relabel = relabel

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.base[self.indices[index]])
        if self.relabel is not None:
            sample["label"] = torch.tensor(self.relabel[int(sample["label"])])
        return sample


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Class label of every item (cheap for the readers that keep labels in memory)."""
    for attr in ("labels",):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr))
    return np.array([int(dataset[i]["label"]) for i in range(len(dataset))])  # type: ignore[arg-type]


def classification_sets(data: Any, seed: int) -> tuple[Dataset, Dataset, int]:
    """(train, test, number of classes) for ModelNet40, ScanObjectNN or the synthetic objects."""
    if data.source == "synthetic":
        train = SyntheticObjects(data.synthetic_count, seed, data.num_points)
        test = SyntheticObjects(data.synthetic_test_count, seed, data.num_points,
                                index_offset=SYNTHETIC_TEST_OFFSET)
        return train, test, len(train.classes)
    if data.dataset == "modelnet40":
        from pc3d.data.readers.modelnet40 import ModelNet40

        train = ModelNet40(data.root, "train", data.num_points)
        return train, ModelNet40(data.root, "test", data.num_points), len(train.classes)
    if data.dataset == "scanobjectnn":
        from pc3d.data.readers.scanobjectnn import ScanObjectNN

        train = ScanObjectNN(data.root, data.scan_variant, "train", data.num_points)
        return train, ScanObjectNN(data.root, data.scan_variant, "test", data.num_points), 15
    raise ConfigError(f"data.dataset '{data.dataset}' is not a classification dataset "
                      "(modelnet40, scanobjectnn)")


def has_val_split(data: Any) -> bool:
    """Synthetic objects with `synthetic_val_count` > 0 have a val split of their own (index range
    SYNTHETIC_VAL_OFFSET.., disjoint from train and test); the public datasets ship none (Point-MAE's
    protocol validates on test)."""
    return data.source == "synthetic" and getattr(data, "synthetic_val_count", 0) > 0


def synthetic_val_set(data: Any, seed: int) -> SyntheticObjects:
    return SyntheticObjects(data.synthetic_val_count, seed, data.num_points, index_offset=SYNTHETIC_VAL_OFFSET)


def classification_train_val(data: Any, seed: int) -> tuple[Dataset, Dataset, int]:
    """(train, val, number of classes): what training fits and validates on (the best checkpoint is chosen
    on `val`). With a val split of its own the test split is not even generated here."""
    if has_val_split(data):
        train = SyntheticObjects(data.synthetic_count, seed, data.num_points)
        return train, synthetic_val_set(data, seed), len(train.classes)
    return classification_sets(data, seed)


def classification_splits(data: Any, seed: int) -> tuple[Dataset, Dataset, Dataset, int]:
    """(train, val, test, number of classes); `val` is `test` itself when there is no val split."""
    train, test, num_classes = classification_sets(data, seed)
    return train, synthetic_val_set(data, seed) if has_val_split(data) else test, test, num_classes


def pretrain_sets(config: Any) -> tuple[Dataset, Dataset | None]:
    """Unlabelled training clouds, and (synthetic only) a labelled probe set for the linear SVM."""
    data = config.data
    if data.source == "synthetic":
        train = SyntheticObjects(data.synthetic_count, config.run.seed, data.num_points)
        if not config.svm_probe:
            return train, None
        test = SyntheticObjects(data.synthetic_test_count, config.run.seed, data.num_points,
                                index_offset=SYNTHETIC_TEST_OFFSET)
        return train, WithProbeSplit(train, test)
    if data.dataset != "shapenet55":
        raise ConfigError(f"pretraining reads ShapeNet-55 (data.dataset: shapenet55), got '{data.dataset}'")
    from pc3d.data.readers.shapenet55 import ShapeNet55

    return ShapeNet55(data.root, "train", data.num_points, seed=config.run.seed), None


def partseg_sets(data: Any, seed: int) -> tuple[Dataset, Dataset]:
    if data.source == "synthetic":
        names = synthetic_partseg_categories()
        train = SyntheticObjects(data.synthetic_count, seed, data.num_points, names, with_parts=True)
        test = SyntheticObjects(data.synthetic_test_count, seed, data.num_points, names,
                                index_offset=SYNTHETIC_TEST_OFFSET, with_parts=True)
        return train, test
    if data.dataset != "shapenetpart":
        raise ConfigError(f"part segmentation reads ShapeNetPart (data.dataset: shapenetpart), "
                          f"got '{data.dataset}'")
    from pc3d.data.readers.shapenetpart import ShapeNetPart

    # Point-MAE trains on train+val ("trainval") and reports on test
    train = torch.utils.data.ConcatDataset([ShapeNetPart(data.root, "train", data.num_points),
                                            ShapeNetPart(data.root, "val", data.num_points)])
    return train, ShapeNetPart(data.root, "test", data.num_points)


def partseg_val_set(data: Any, seed: int) -> Dataset | None:
    """Synthetic part-segmentation objects of their own that pick the best checkpoint (SYNTHETIC_VAL_OFFSET..,
    disjoint from train and test) when `synthetic_val_count` > 0; None otherwise (ShapeNetPart keeps
    Point-MAE's protocol: train on trainval, validate and report on test)."""
    if not has_val_split(data):
        return None
    return SyntheticObjects(data.synthetic_val_count, seed, data.num_points, synthetic_partseg_categories(),
                            index_offset=SYNTHETIC_VAL_OFFSET, with_parts=True)
