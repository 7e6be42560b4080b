"""Images through PIL: (H, W, 3) uint8 in memory, atomic writes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pc3d.errors import InputError
from pc3d.io import read_image, write_image


def test_png_round_trip_is_exact(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint8 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)  # PIL agrees


def test_grey_alpha_and_float_inputs(tmp_path):
    Image.fromarray(np.array([[0, 128], [255, 7]], dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[..., 1], [[0, 128], [255, 7]])
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (2, 2, 3)
    write_image(tmp_path / "f.bmp", np.full((3, 3, 3), 0.5))
    np.testing.assert_array_equal(read_image(tmp_path / "f.bmp"), np.full((3, 3, 3), 128))
    write_image(tmp_path / "j.jpg", np.full((8, 8, 3), 90, np.uint8))
    assert np.abs(read_image(tmp_path / "j.jpg").astype(int) - 90).max() <= 2  # lossy, but close


def test_image_errors(tmp_path):
    with pytest.raises(InputError, match=r"none\.png: file not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=r"junk\.png: not a readable image"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(InputError, match=r"x\.qqq: unknown image suffix"):
        write_image(tmp_path / "x.qqq", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "bad.png", np.zeros((2, 2, 2), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.png"]
