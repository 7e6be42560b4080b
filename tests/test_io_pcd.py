"""PCD (ascii / binary / binary_compressed) and the LZF codec behind the compressed form."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import PointCloud, read_point_cloud, write_point_cloud
from pc3d.io.lzf import LzfError, lzf_compress, lzf_decompress
from pc3d.io.pcd import write_pcd


def random_cloud(n: int = 40, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        points=rng.normal(size=(n, 3)),
        colors=rng.integers(0, 256, (n, 3)),
        normals=rng.normal(size=(n, 3)),
        fields={"label": rng.integers(0, 13, n).astype(np.int32), "intensity": rng.random(n).astype(np.float32),
                "curvature": rng.random(n)},
    )


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_round_trip(tmp_path, data):
    cloud = random_cloud()
    path = tmp_path / "c.pcd"
    write_pcd(path, cloud, data=data)
    assert f"DATA {data}\n".encode() in path.read_bytes()
    back = read_point_cloud(path)
    np.testing.assert_array_equal(back.points, cloud.points)
    np.testing.assert_array_equal(back.colors, cloud.colors)
    np.testing.assert_array_equal(back.normals, cloud.normals)
    for name, values in cloud.fields.items():
        np.testing.assert_array_equal(back.fields[name], values)
        assert back.fields[name].dtype == values.dtype


def test_write_point_cloud_binary_flag(tmp_path):
    write_point_cloud(tmp_path / "a.pcd", random_cloud(), binary=False)
    write_point_cloud(tmp_path / "b.pcd", random_cloud())
    assert b"DATA ascii" in (tmp_path / "a.pcd").read_bytes()
    assert b"DATA binary\n" in (tmp_path / "b.pcd").read_bytes()


def test_hand_written_ascii_packed_float_rgb(tmp_path):
    # rgb stored as a float whose bits are 0x00RRGGBB; (255, 128, 1) -> 0x00FF8001
    packed = struct.unpack("<f", struct.pack("<I", 0x00FF8001))[0]
    text = (
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb label\nSIZE 4 4 4 4 4\nTYPE F F F F U\nCOUNT 1 1 1 1 1\n"
        "WIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        f"1 2 3 {packed!r} 7\n4 5 6 {0x00010203} 9\n"  # second colour written as its integer bits, as PCL does
    )
    (tmp_path / "h.pcd").write_text(text)
    cloud = read_point_cloud(tmp_path / "h.pcd")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.colors, [[255, 128, 1], [1, 2, 3]])
    np.testing.assert_array_equal(cloud.fields["label"], [7, 9])


def test_hand_built_binary_with_padding_and_count(tmp_path):
    # fields: x y z, a padding field "_" (PCL alignment), a COUNT 2 descriptor, separate r g b bytes
    header = ("VERSION 0.7\nFIELDS x y z _ desc r g b\nSIZE 4 4 4 4 2 1 1 1\nTYPE F F F U I U U U\n"
              "COUNT 1 1 1 1 2 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA binary\n")
    record = "<fffIhhBBB"
    body = struct.pack(record, 1, 2, 3, 0, -5, 6, 10, 20, 30) + struct.pack(record, 4, 5, 6, 0, 7, 8, 1, 2, 3)
    (tmp_path / "b.pcd").write_bytes(header.encode() + body)
    cloud = read_point_cloud(tmp_path / "b.pcd")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.colors, [[10, 20, 30], [1, 2, 3]])
    np.testing.assert_array_equal(cloud.fields["desc_0"], [-5, 7])
    np.testing.assert_array_equal(cloud.fields["desc_1"], [6, 8])
    assert "_" not in "".join(name[0] for name in cloud.fields)


def test_lzf_hand_assembled_stream():
    # literal run "abc" (ctrl 2), then a back reference of length 7 at distance 3 (overlapping copy)
    stream = bytes([2]) + b"abc" + bytes([(5 << 5) | 0, 2])
    assert lzf_decompress(stream, 10) == b"abcabcabca"
    # long match: length code 7 plus an extra length byte (7 + 10 + 2 = 19 bytes)
    stream = bytes([0]) + b"z" + bytes([7 << 5, 10, 0])
    assert lzf_decompress(stream, 20) == b"z" * 20


@pytest.mark.parametrize("payload", [
    b"",
    b"x",
    bytes(range(256)) * 3,
    np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    np.repeat(np.arange(50, dtype=np.float32), 40).tobytes() + bytes(20000),
])
def test_lzf_round_trip(payload):
    packed = lzf_compress(payload)
    assert lzf_decompress(packed, len(payload)) == payload


def test_lzf_compresses_repetitive_data():
    payload = np.tile(np.arange(16, dtype=np.float32), 1000).tobytes()
    assert len(lzf_compress(payload)) < len(payload) / 10


def test_lzf_corrupt_streams():
    with pytest.raises(LzfError):
        lzf_decompress(bytes([(1 << 5), 5]), 3)  # back reference before the start
    with pytest.raises(LzfError):
        lzf_decompress(bytes([5]) + b"ab", 6)  # literal run past the end
    with pytest.raises(LzfError):
        lzf_decompress(bytes([1]) + b"ab", 5)  # wrong size


def test_corrupt_compressed_pcd_is_input_error(tmp_path):
    path = tmp_path / "c.pcd"
    write_pcd(path, random_cloud(), data="binary_compressed")
    data = bytearray(path.read_bytes())
    body = data.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n")
    data[body + 8] = 0xE0  # first control byte: a back reference with nothing before it
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"c\.pcd: corrupt binary_compressed"):
        read_point_cloud(path)


def test_bad_pcd_files(tmp_path):
    good = tmp_path / "g.pcd"
    write_pcd(good, random_cloud(10), data="binary")
    data = good.read_bytes()
    (tmp_path / "cut.pcd").write_bytes(data[:-5])
    with pytest.raises(InputError, match=r"cut\.pcd: truncated PCD: header says 10 points but the data holds 9"):
        read_point_cloud(tmp_path / "cut.pcd")
    (tmp_path / "nodata.pcd").write_bytes(b"VERSION 0.7\nFIELDS x y z\n")
    with pytest.raises(InputError, match=r"nodata\.pcd: malformed PCD header"):
        read_point_cloud(tmp_path / "nodata.pcd")
    (tmp_path / "sizes.pcd").write_bytes(b"FIELDS x y z\nSIZE 4 4\nTYPE F F F\nPOINTS 1\nDATA ascii\n1 2 3\n")
    with pytest.raises(InputError, match="differ in length"):
        read_point_cloud(tmp_path / "sizes.pcd")
    head = b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 2\nDATA ascii\n"
    (tmp_path / "cols.pcd").write_bytes(head + b"1 2 3 4\n5 6 7 8\n")
    with pytest.raises(InputError, match="wrong column count"):
        read_point_cloud(tmp_path / "cols.pcd")
    (tmp_path / "kind.pcd").write_bytes(b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 0\nDATA zipped\n")
    with pytest.raises(InputError, match="unknown PCD DATA kind"):
        read_point_cloud(tmp_path / "kind.pcd")


def test_organized_cloud_with_nan_points_is_rejected_with_count(tmp_path):
    points = np.ones((6, 3), np.float32)
    points[[0, 4]] = np.nan  # PCL marks invalid pixels of organized clouds with NaN
    write_pcd(tmp_path / "o.pcd", PointCloud(points), data="binary")
    with pytest.raises(InputError, match=r"o\.pcd: 2 of 6 points have NaN or inf coordinates"):
        read_point_cloud(tmp_path / "o.pcd")
