"""PCL's .pcd format: ascii, binary (packed records) and binary_compressed (LZF, field-major).

Fields x y z, colour as a packed `rgb`/`rgba` float (or separate r g b), normal_x/y/z, and any
other field becomes a per-point field (a field with COUNT k > 1 becomes `name_0` .. `name_{k-1}`).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from pc3d.io._common import decode_text, input_error, read_bytes, write_text_rows
from pc3d.io.atomic import atomic_write
from pc3d.io.cloud import PointCloud, cloud_from_columns, pack_rgb
from pc3d.io.lzf import LzfError, lzf_compress, lzf_decompress

DATA_KINDS = ("ascii", "binary", "binary_compressed")
HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


def _parse_header(path: str | os.PathLike, data: bytes) -> tuple[dict[str, list[str]], int]:
    """Header keys -> their words, and the byte offset where the body starts (after the DATA line)."""
    header: dict[str, list[str]] = {}
    offset = 0
    while True:
        newline = data.find(b"\n", offset)
        if newline < 0:
            raise input_error(path, "malformed PCD header: no DATA line")
        line = decode_text(path, data[offset:newline]).strip()
        offset = newline + 1
        if not line or line.startswith("#"):
            continue
        key, *words = line.split()
        if key.upper() not in HEADER_KEYS:
            raise input_error(path, f"malformed PCD header: unknown line {line[:60]!r}")
        header[key.upper()] = words
        if key.upper() == "DATA":
            return header, offset


def _field_layout(path, header: dict[str, list[str]]) -> tuple[list[str], np.dtype, list[int], int]:
    """(names, packed record dtype, per-field COUNT, number of points) from the header."""
    for key in ("FIELDS", "SIZE", "TYPE", "DATA"):
        if key not in header:
            raise input_error(path, f"malformed PCD header: missing {key}")
    names = header["FIELDS"]
    sizes, types = header["SIZE"], header["TYPE"]
    counts = header.get("COUNT", ["1"] * len(names))
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise input_error(path, "malformed PCD header: FIELDS, SIZE, TYPE and COUNT differ in length")
    try:
        sizes_i, counts_i = [int(s) for s in sizes], [int(c) for c in counts]
        if "POINTS" in header:
            n = int(header["POINTS"][0])
        else:
            n = int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
    except (ValueError, KeyError, IndexError) as exc:
        raise input_error(path, "malformed PCD header: SIZE/COUNT/POINTS must be integers") from exc
    fields, unique = [], []
    for index, (name, size, kind, count) in enumerate(zip(names, sizes_i, types, counts_i, strict=True)):
        code = {"F": "f", "I": "i", "U": "u"}.get(kind.upper())
        if code is None or size not in (1, 2, 4, 8) or (code == "f" and size not in (4, 8)) or count < 1:
            raise input_error(path, f"malformed PCD header: field {name!r} has TYPE {kind} SIZE {size} COUNT {count}")
        unique_name = f"_pad{index}" if name == "_" else name  # PCL pads with fields named "_"
        unique.append(unique_name)
        fields.append((unique_name, f"<{code}{size}", (count,)) if count > 1 else (unique_name, f"<{code}{size}"))
    return unique, np.dtype(fields), counts_i, n


def read_pcd(path: str | os.PathLike, *, allow_empty: bool = False, keep_float64: bool = False) -> PointCloud:
    data = read_bytes(path)
    header, offset = _parse_header(path, data)
    names, dtype, counts, n = _field_layout(path, header)
    kind = header["DATA"][0].lower() if header["DATA"] else ""
    if kind == "ascii":
        records = _read_ascii(path, data[offset:], dtype, n)
    elif kind == "binary":
        available = (len(data) - offset) // dtype.itemsize
        if available < n:
            raise input_error(path, f"truncated PCD: header says {n} points but the data holds {available}")
        records = np.frombuffer(data, dtype, n, offset)
    elif kind == "binary_compressed":
        records = _read_compressed(path, data, offset, dtype, n)
    else:
        raise input_error(path, f"unknown PCD DATA kind {kind!r}; expected one of {', '.join(DATA_KINDS)}")
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if name.startswith("_pad"):
            continue
        values = records[name]
        if values.ndim == 2:
            columns.update({f"{name}_{i}": values[:, i] for i in range(values.shape[1])})
        else:
            columns[name] = values
    return cloud_from_columns(path, columns, allow_empty=allow_empty, keep_float64=keep_float64)


def _read_ascii(path, body: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    width = sum(int(np.prod(dtype[name].shape or (1,))) for name in dtype.names)
    lines = [line for line in decode_text(path, body).splitlines() if line.strip()]
    if len(lines) < n:
        raise input_error(path, f"truncated PCD: header says {n} points but the data holds {len(lines)}")
    try:
        table = np.loadtxt(lines[:n], dtype=np.float64, ndmin=2, comments=None)
    except ValueError as exc:
        raise input_error(path, f"wrong column count or bad number in PCD data ({exc})") from exc
    if n and table.shape[1] != width:
        raise input_error(path, f"wrong column count: PCD data has {table.shape[1]} values per line, "
                                f"the header declares {width}")
    records = np.zeros(n, dtype)
    col = 0
    for name in dtype.names:
        field_dtype = dtype[name]
        count = int(np.prod(field_dtype.shape or (1,)))
        base = field_dtype.base
        values = table[:, col:col + count]
        if name in ("rgb", "rgba") and base.itemsize == 4:
            # ascii PCD holds a packed colour either as the float itself (always < 1e-37, as the top byte
            # is 0) or, as PCL writes it, as the integer bit pattern; integers >= 1 can only be the latter
            as_bits = (values == np.round(values)) & (values >= 1)
            if (values[as_bits] >= 2**32).any():
                raise input_error(path, f"a packed {name} value does not fit in 32 bits")
            floats = np.where(as_bits, 0, values).astype(np.float32)
            values = np.where(as_bits, np.where(as_bits, values, 0).astype(np.uint32), floats.view(np.uint32))
            values = values.astype(np.uint32).view(base)
        records[name] = values.reshape(records[name].shape).astype(base)
        col += count
    return records


def _read_compressed(path, data: bytes, offset: int, dtype: np.dtype, n: int) -> np.ndarray:
    if len(data) < offset + 8:
        raise input_error(path, "truncated PCD: binary_compressed sizes missing")
    compressed_size, raw_size = struct.unpack_from("<II", data, offset)
    payload = data[offset + 8:offset + 8 + compressed_size]
    if len(payload) < compressed_size:
        raise input_error(path, f"truncated PCD: {compressed_size} compressed bytes declared, {len(payload)} present")
    if raw_size != n * dtype.itemsize:
        raise input_error(path, f"PCD binary_compressed holds {raw_size} bytes, {n} points need {n * dtype.itemsize}")
    try:
        raw = lzf_decompress(payload, raw_size) if raw_size else b""
    except LzfError as exc:
        raise input_error(path, f"corrupt binary_compressed PCD data: {exc}") from exc
    # compressed data is stored field by field (all x, then all y, ...), not point by point
    records = np.zeros(n, dtype)
    start = 0
    for name in dtype.names:
        field_dtype = dtype[name]
        nbytes = n * field_dtype.itemsize
        values = np.frombuffer(raw, field_dtype.base, n * int(np.prod(field_dtype.shape or (1,))), start)
        records[name] = values.reshape(records[name].shape)
        start += nbytes
    return records


def _pcd_type(values: np.ndarray) -> tuple[str, np.dtype]:
    """PCD TYPE letter and little-endian dtype for a column (bool -> U1, 64-bit ints kept as 8 bytes)."""
    dtype = values.dtype
    if dtype == np.bool_:
        return "U", np.dtype("<u1")
    if dtype.kind in "iuf":
        size = max(dtype.itemsize, 4) if dtype.kind == "f" else dtype.itemsize  # PCD has no float16
        return {"i": "I", "u": "U", "f": "F"}[dtype.kind], np.dtype(f"<{dtype.kind}{size}")
    raise ValueError(f"dtype {dtype} cannot be stored in a PCD file")


def write_pcd(path: str | os.PathLike, cloud: PointCloud, *, data: str = "binary") -> None:
    """Write `cloud` atomically; `data` is "binary" (default), "ascii" or "binary_compressed"."""
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
    columns: dict[str, np.ndarray] = {axis: cloud.points[:, i] for i, axis in enumerate("xyz")}
    if cloud.colors is not None:
        # PCL's convention is a float holding the 0x00RRGGBB bits; in ascii the bits are written as an
        # unsigned integer (TYPE U) so that no reader has to guess how a denormal float was printed
        packed = pack_rgb(cloud.colors)
        columns["rgb"] = packed.view(np.uint32) if data == "ascii" else packed
    if cloud.normals is not None:
        columns.update({f"normal_{axis}": cloud.normals[:, i] for i, axis in enumerate("xyz")})
    for name, values in cloud.fields.items():
        if name in columns or not name.replace("_", "").isalnum():
            raise ValueError(f"field name {name!r} cannot be written to a PCD file")
        columns[name] = values
    types = {name: _pcd_type(values) for name, values in columns.items()}
    n = len(cloud)
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format (written by pc3d)",
        "VERSION 0.7",
        "FIELDS " + " ".join(columns),
        "SIZE " + " ".join(str(dtype.itemsize) for _, dtype in types.values()),
        "TYPE " + " ".join(letter for letter, _ in types.values()),
        "COUNT " + " ".join("1" for _ in columns),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {data}",
    ]) + "\n"
    with atomic_write(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        if data == "binary_compressed":
            raw = b"".join(np.ascontiguousarray(values, dtype=types[name][1]).tobytes()
                           for name, values in columns.items())
            packed = lzf_compress(raw) if raw else b""
            handle.write(struct.pack("<II", len(packed), len(raw)) + packed)
            return
        records = np.empty(n, np.dtype([(name, dtype) for name, (_, dtype) in types.items()]))
        for name, values in columns.items():
            records[name] = values
        if data == "binary":
            handle.write(records.tobytes())
            return
        formats = [{"F": "%.9g" if dtype.itemsize == 4 else "%.17g"}.get(letter, "%d")
                   for letter, dtype in types.values()]
        write_text_rows(handle, [records[name] for name in columns], formats)
