"""RGB images in and out through PIL: always (H, W, 3) uint8 in memory, written atomically."""

from __future__ import annotations

import os

import numpy as np

from pc3d.io._common import existing_file, input_error, suffix_of
from pc3d.io.atomic import atomic_write


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any PIL-readable image as (H, W, 3) uint8 RGB (grey, palette and alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    path = existing_file(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise input_error(path, f"not a readable image ({exc})") from exc


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write (H, W, 3) or (H, W) uint8, or floats in 0..1, in the format named by the suffix."""
    from PIL import Image

    formats = Image.registered_extensions()
    suffix = suffix_of(path)
    if suffix not in formats:
        raise input_error(path, f"unknown image suffix {suffix or '(none)'!r}; use .png, .jpg, .bmp, .tif, ...")
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"image must have shape (H, W, 3) or (H, W), got {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError("float images must lie in 0..1")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("integer images must lie in 0..255")
        array = array.astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(array))
    with atomic_write(path, "wb") as handle:
        image.save(handle, format=formats[suffix])
