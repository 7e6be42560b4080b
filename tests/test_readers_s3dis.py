"""S3DIS (Pointcept layout) reader with the Area-5 protocol, on tiny hand-written folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pc3d.data.readers.s3dis import S3DISPointcept
from pc3d.errors import InputError


def write_room(root: Path, area: int, room: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"coord": rng.random((n, 3)).astype(np.float32), "color": rng.integers(0, 255, (n, 3)).astype(np.uint8),
              "normal": rng.random((n, 3)).astype(np.float32), "segment": rng.integers(-1, 13, n).astype(np.int16),
              "instance": rng.integers(-1, 5, n).astype(np.int16)}
    folder = root / "s3dis" / f"Area_{area}" / room
    folder.mkdir(parents=True)
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value)
    return arrays


def test_area5_protocol(tmp_path: Path) -> None:
    rooms = {(a, r): write_room(tmp_path, a, r, 20 + a, a) for a, r in
             [(1, "office_1"), (2, "hallway_1"), (5, "office_3"), (5, "conferenceRoom_1"), (6, "lounge_1")]}
    train, test = S3DISPointcept(tmp_path, "train"), S3DISPointcept(tmp_path / "s3dis", "val")
    assert sorted(train[i]["name"] for i in range(len(train))) == ["Area_1/office_1", "Area_2/hallway_1",
                                                                   "Area_6/lounge_1"]
    assert sorted(test[i]["name"] for i in range(len(test))) == ["Area_5/conferenceRoom_1", "Area_5/office_3"]
    sample = test[[test[i]["name"] for i in range(2)].index("Area_5/office_3")]
    expected = rooms[(5, "office_3")]
    np.testing.assert_array_equal(sample["coord"], expected["coord"])
    np.testing.assert_array_equal(sample["segment"], expected["segment"].astype(np.int64))
    np.testing.assert_array_equal(sample["instance"], expected["instance"].astype(np.int64))
    assert sample["segment"].dtype == np.int64 and sample["color"].dtype == np.float32


def test_missing_areas_fail(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Area_"):
        S3DISPointcept(tmp_path, "train")
    write_room(tmp_path, 1, "office_1", 10, 0)
    with pytest.raises(InputError, match="no rooms"):
        S3DISPointcept(tmp_path, "test")
