"""PLY reader and writer on numpy structured dtypes (ascii, binary little- and big-endian).

Scalar-only elements (the vertex element of nearly every file) are read with one `np.frombuffer`;
list properties (faces) take a vectorised path when every list has the same length, and a
per-record loop only for truly ragged binary polygons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pc3d.io._common import decode_text, input_error, read_bytes, write_text_rows
from pc3d.io.atomic import atomic_write
from pc3d.io.cloud import PointCloud, cloud_from_columns, cloud_to_columns

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
                "i4": "int", "u4": "uint", "f4": "float", "f8": "double"}
FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class PlyProperty:
    name: str
    dtype: str  # numpy code without byte order, e.g. "f4"
    count_dtype: str | None = None  # set for list properties


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty] = field(default_factory=list)


@dataclass
class PlyList:
    """A ragged list property (e.g. face vertex indices) in CSR form."""

    counts: np.ndarray  # (M,) length of each list
    values: np.ndarray  # (sum(counts),) all entries, concatenated


@dataclass
class PlyHeader:
    format: str
    elements: list[PlyElement]
    comments: list[str]
    data_start: int  # byte offset of the body


def parse_header(path: str | os.PathLike, data: bytes) -> PlyHeader:
    if not data.startswith(b"ply"):
        raise input_error(path, "not a PLY file (missing 'ply' magic)")
    end = data.find(b"end_header")
    if end < 0:
        raise input_error(path, "malformed PLY header: no 'end_header' line")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise input_error(path, "malformed PLY header: nothing after 'end_header'")
    fmt, elements, comments = None, [], []
    for number, line in enumerate(decode_text(path, data[:end]).splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ("obj_info",):
            continue
        keyword = words[0]
        if keyword == "comment":
            comments.append(line.strip()[len("comment"):].strip())
        elif keyword == "format":
            if len(words) < 2 or words[1] not in FORMATS:
                raise input_error(path, f"malformed PLY header line {number}: unknown format {line.strip()!r}")
            fmt = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise input_error(path, f"malformed PLY header line {number}: {line.strip()!r}")
            elements.append(PlyElement(words[1], int(words[2])))
        elif keyword == "property":
            if not elements:
                raise input_error(path, f"malformed PLY header line {number}: property before any element")
            elements[-1].properties.append(_parse_property(path, number, words))
        else:
            raise input_error(path, f"malformed PLY header line {number}: unknown keyword {keyword!r}")
    if fmt is None:
        raise input_error(path, "malformed PLY header: no 'format' line")
    return PlyHeader(fmt, elements, comments, newline + 1)


def _parse_property(path: str | os.PathLike, number: int, words: list[str]) -> PlyProperty:
    if len(words) == 5 and words[1] == "list" and words[2] in PLY_TYPES and words[3] in PLY_TYPES:
        return PlyProperty(words[4], PLY_TYPES[words[3]], PLY_TYPES[words[2]])
    if len(words) == 3 and words[1] in PLY_TYPES:
        return PlyProperty(words[2], PLY_TYPES[words[1]])
    raise input_error(path, f"malformed PLY header line {number}: bad property {' '.join(words)!r}")


def read_ply(path: str | os.PathLike, *, stop_after: str | None = None) -> tuple[PlyHeader, dict]:
    """Read a PLY file into {element: {property: array or PlyList}}, in native byte order.

    `stop_after` names an element after which parsing stops (later elements are not needed).
    """
    data = read_bytes(path)
    header = parse_header(path, data)
    elements: dict[str, dict] = {}
    if header.format == "ascii":
        lines = decode_text(path, data[header.data_start:]).splitlines()
        cursor = 0
        for element in header.elements:
            elements[element.name], cursor = _read_ascii_element(path, element, lines, cursor)
            if element.name == stop_after:
                break
    else:
        order = FORMATS[header.format]
        offset = header.data_start
        for element in header.elements:
            elements[element.name], offset = _read_binary_element(path, element, data, offset, order)
            if element.name == stop_after:
                break
    return header, elements


def _truncated(path, element: PlyElement, found: int) -> Exception:
    return input_error(
        path, f"truncated PLY: header says {element.count} {element.name} records but the data holds {found}"
    )


def _read_binary_element(path, element: PlyElement, data: bytes, offset: int, order: str):
    scalar_dtype = np.dtype([(p.name, order + p.dtype) for p in element.properties if p.count_dtype is None])
    if all(p.count_dtype is None for p in element.properties):
        available = (len(data) - offset) // max(scalar_dtype.itemsize, 1)
        if available < element.count:
            raise _truncated(path, element, available)
        records = np.frombuffer(data, scalar_dtype, element.count, offset)
        columns = {name: records[name].astype(records[name].dtype.newbyteorder("=")) for name in records.dtype.names}
        return columns, offset + element.count * scalar_dtype.itemsize
    if element.count == 0:
        return {p.name: (np.zeros(0, p.dtype) if p.count_dtype is None
                         else PlyList(np.zeros(0, np.int64), np.zeros(0, p.dtype)))
                for p in element.properties}, offset
    fixed = _read_binary_fixed_lists(data, offset, element, order)
    if fixed is not None:
        return fixed
    return _read_binary_ragged(path, element, data, offset, order)


def _read_binary_fixed_lists(data: bytes, offset: int, element: PlyElement, order: str):
    """Assume every list has the length of the first record's; verify it; None if the guess is wrong."""
    fields, cursor = [], offset
    lengths = {}
    for prop in element.properties:
        if prop.count_dtype is None:
            fields.append((prop.name, order + prop.dtype))
            cursor += np.dtype(prop.dtype).itemsize
            continue
        count_type = np.dtype(order + prop.count_dtype)
        if cursor + count_type.itemsize > len(data):
            return None
        length = int(np.frombuffer(data, count_type, 1, cursor)[0])
        lengths[prop.name] = length
        fields.append((f"{prop.name}__count", count_type))
        fields.append((prop.name, order + prop.dtype, (length,)))
        cursor += count_type.itemsize + length * np.dtype(prop.dtype).itemsize
    dtype = np.dtype(fields)
    if len(data) - offset < element.count * dtype.itemsize:
        return None  # either ragged or truncated; the exact path tells which
    records = np.frombuffer(data, dtype, element.count, offset)
    columns = {}
    for prop in element.properties:
        values = records[prop.name]
        values = values.astype(values.dtype.newbyteorder("="))
        if prop.count_dtype is None:
            columns[prop.name] = values
            continue
        if not (records[f"{prop.name}__count"] == lengths[prop.name]).all():
            return None
        counts = np.full(element.count, lengths[prop.name], dtype=np.int64)
        columns[prop.name] = PlyList(counts, values.reshape(-1))
    return columns, offset + element.count * dtype.itemsize


def _read_binary_ragged(path, element: PlyElement, data: bytes, offset: int, order: str):
    scalars: dict[str, list] = {p.name: [] for p in element.properties if p.count_dtype is None}
    lists: dict[str, tuple[list, list]] = {p.name: ([], []) for p in element.properties if p.count_dtype}
    for record in range(element.count):
        for prop in element.properties:
            if prop.count_dtype is None:
                item = np.dtype(order + prop.dtype)
                if offset + item.itemsize > len(data):
                    raise _truncated(path, element, record)
                scalars[prop.name].append(np.frombuffer(data, item, 1, offset)[0])
                offset += item.itemsize
                continue
            count_type, item = np.dtype(order + prop.count_dtype), np.dtype(order + prop.dtype)
            if offset + count_type.itemsize > len(data):
                raise _truncated(path, element, record)
            length = int(np.frombuffer(data, count_type, 1, offset)[0])
            offset += count_type.itemsize
            if offset + length * item.itemsize > len(data):
                raise _truncated(path, element, record)
            lists[prop.name][0].append(length)
            lists[prop.name][1].append(np.frombuffer(data, item, length, offset))
            offset += length * item.itemsize
    columns: dict = {}
    for prop in element.properties:
        if prop.count_dtype is None:
            columns[prop.name] = np.array(scalars[prop.name], dtype=prop.dtype)
        else:
            counts, chunks = lists[prop.name]
            columns[prop.name] = PlyList(np.array(counts, np.int64), np.concatenate(chunks).astype(prop.dtype))
    return columns, offset


def _read_ascii_element(path, element: PlyElement, lines: list[str], cursor: int):
    rows = lines[cursor:cursor + element.count]
    if len(rows) < element.count:
        raise _truncated(path, element, len(rows))
    end = cursor + element.count
    if element.count == 0:
        return {p.name: (np.zeros(0, p.dtype) if p.count_dtype is None
                         else PlyList(np.zeros(0, np.int64), np.zeros(0, p.dtype)))
                for p in element.properties}, end
    table = _ascii_table(rows)
    if table is not None:
        columns = _split_ascii_table(path, element, table, cursor)
        if columns is not None:
            return columns, end
    return _read_ascii_ragged(path, element, rows, cursor), end


def _ascii_table(rows: list[str]) -> np.ndarray | None:
    """All rows as one float64 table, or None when rows differ in length (ragged polygons)."""
    try:
        return np.loadtxt(rows, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None


def _split_ascii_table(path, element: PlyElement, table: np.ndarray, cursor: int) -> dict | None:
    columns, col = {}, 0
    for prop in element.properties:
        if col >= table.shape[1]:
            raise input_error(path, f"wrong column count in {element.name} data near line {cursor + 1} of the body")
        if prop.count_dtype is None:
            columns[prop.name] = table[:, col].astype(prop.dtype)
            col += 1
            continue
        lengths = table[:, col]
        length = int(lengths[0])
        if not (lengths == length).all() or col + 1 + length > table.shape[1]:
            return None
        values = table[:, col + 1:col + 1 + length].astype(prop.dtype).reshape(-1)
        columns[prop.name] = PlyList(np.full(len(table), length, np.int64), values)
        col += 1 + length
    if col != table.shape[1]:
        raise input_error(path, f"wrong column count in {element.name} data: {table.shape[1]} values per line, "
                                f"header declares {col}")
    return columns


def _read_ascii_ragged(path, element: PlyElement, rows: list[str], cursor: int) -> dict:
    scalars: dict[str, list] = {p.name: [] for p in element.properties if p.count_dtype is None}
    lists: dict[str, tuple[list, list]] = {p.name: ([], []) for p in element.properties if p.count_dtype}
    for number, row in enumerate(rows, start=cursor + 1):
        words, col = row.split(), 0
        try:
            for prop in element.properties:
                if prop.count_dtype is None:
                    scalars[prop.name].append(float(words[col]))
                    col += 1
                else:
                    length = int(words[col])
                    lists[prop.name][0].append(length)
                    lists[prop.name][1].extend(float(w) for w in words[col + 1:col + 1 + length])
                    if col + 1 + length > len(words):
                        raise IndexError
                    col += 1 + length
        except (IndexError, ValueError) as exc:
            raise input_error(path, f"malformed {element.name} record on body line {number}: {row.strip()!r}") from exc
        if col != len(words):
            raise input_error(path, f"wrong column count in {element.name} record on body line {number}")
    columns: dict = {}
    for prop in element.properties:
        if prop.count_dtype is None:
            columns[prop.name] = np.array(scalars[prop.name]).astype(prop.dtype)
        else:
            counts, values = lists[prop.name]
            columns[prop.name] = PlyList(np.array(counts, np.int64), np.array(values).astype(prop.dtype))
    return columns


def read_ply_cloud(path: str | os.PathLike, *, allow_empty: bool = False, keep_float64: bool = False) -> PointCloud:
    """The vertex element of a PLY as a cloud (faces, if any, are ignored; see mesh.read_mesh).

    keep_float64: `double` coordinates stay float64 (else float32, what the models consume)."""
    header, elements = read_ply(path, stop_after="vertex")
    if "vertex" not in elements:
        raise input_error(path, "PLY has no 'vertex' element")
    scalars = {name: values for name, values in elements["vertex"].items() if isinstance(values, np.ndarray)}
    return cloud_from_columns(path, scalars, allow_empty=allow_empty, keep_float64=keep_float64)


def _ply_dtype(name: str, values: np.ndarray) -> np.dtype:
    """The PLY-representable dtype for a column: int64/uint64/bool/float16 are narrowed when lossless."""
    dtype = values.dtype
    if dtype == np.bool_:
        return np.dtype("u1")
    if dtype.kind == "f":
        return np.dtype("f8" if dtype.itemsize > 4 else "f4")
    if dtype.kind in "iu":
        if dtype.itemsize <= 4:
            return np.dtype(dtype.str[1:])
        for candidate in ("i4", "u4"):
            info = np.iinfo(candidate)
            if len(values) == 0 or (values.min() >= info.min and values.max() <= info.max):
                return np.dtype(candidate)
        return np.dtype("f8")  # PLY has no 64-bit integers; doubles hold integers exactly up to 2**53
    raise ValueError(f"column {name!r} of dtype {dtype} cannot be stored in a PLY file")


def write_ply(
    path: str | os.PathLike,
    elements: dict[str, dict[str, np.ndarray | PlyList]],
    *,
    binary: bool = True,
    comments: tuple[str, ...] = (),
) -> None:
    """Write elements (e.g. {"vertex": {...}, "face": {"vertex_indices": PlyList}}) atomically."""
    lines = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    lines += [f"comment {comment}" for comment in comments]
    bodies = []
    for name, columns in elements.items():
        for label in (name, *columns):
            if not label or any(char.isspace() for char in label):
                raise ValueError(f"PLY element/property names need to be non-empty without spaces: {label!r}")
        counts = {len(v.counts) if isinstance(v, PlyList) else len(v) for v in columns.values()}
        if len(counts) != 1:
            raise ValueError(f"element {name!r} has columns of different lengths {sorted(counts)}")
        lines.append(f"element {name} {counts.pop()}")
        table = []  # (property name, dtype, 2-D values) in file order
        for prop, values in columns.items():
            if isinstance(values, PlyList):
                table.append(_list_column(name, prop, values, lines))
            else:
                values = np.asarray(values)
                dtype = _ply_dtype(prop, values)
                lines.append(f"property {NUMPY_TO_PLY[dtype.str[1:]]} {prop}")
                table.append((prop, dtype, values.astype(dtype).reshape(-1, 1)))
        bodies.append(table)
    lines.append("end_header")
    with atomic_write(path, "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode("ascii"))
        for table in bodies:
            if binary:
                _write_binary_table(handle, table)
            else:
                _write_ascii_table(handle, table)


def _list_column(element: str, prop: str, values: PlyList, lines: list[str]):
    lengths = np.unique(values.counts)
    if len(lengths) > 1:
        raise ValueError(f"{element}.{prop}: writing ragged lists is not supported; triangulate first")
    length = int(lengths[0]) if len(lengths) else 0
    index_dtype = _ply_dtype(prop, values.values)
    lines.append(f"property list uchar {NUMPY_TO_PLY[index_dtype.str[1:]]} {prop}")
    flat = values.values.astype(index_dtype).reshape(len(values.counts), length)
    return (prop, (np.dtype("u1"), index_dtype), np.concatenate(
        [np.full((len(flat), 1), length), flat], axis=1) if len(flat) else np.zeros((0, length + 1)))


def _write_binary_table(handle, table) -> None:
    fields, arrays = [], []
    for prop, dtype, values in table:
        if isinstance(dtype, tuple):  # a list column: count byte then the entries
            fields.append((f"{prop}__count", "<u1"))
            fields.append((prop, "<" + dtype[1].str[1:], (values.shape[1] - 1,)))
            arrays += [values[:, 0].astype("u1"), values[:, 1:].astype(dtype[1])]
        else:
            fields.append((prop, "<" + dtype.str[1:]))
            arrays.append(values[:, 0])
    records = np.empty(len(table[0][2]) if table else 0, dtype=np.dtype(fields))
    for (name, *_), values in zip(fields, arrays, strict=True):
        records[name] = values
    handle.write(records.tobytes())


def _write_ascii_table(handle, table) -> None:
    formats, columns = [], []
    for _prop, dtype, values in table:
        dtypes = [dtype[0]] + [dtype[1]] * (values.shape[1] - 1) if isinstance(dtype, tuple) else [dtype]
        for col, column_dtype in enumerate(dtypes):
            # 9 / 17 significant digits round-trip float32 / float64 exactly
            formats.append({"f4": "%.9g", "f8": "%.17g"}.get(column_dtype.str[1:], "%d"))
            columns.append(values[:, col].astype(column_dtype))
    write_text_rows(handle, columns, formats)


def write_ply_cloud(path: str | os.PathLike, cloud: PointCloud, *, binary: bool = True) -> None:
    write_ply(Path(path), {"vertex": cloud_to_columns(cloud)}, binary=binary, comments=("written by pc3d",))
