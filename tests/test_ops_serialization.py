"""Serialization codes are bit-identical to Point Transformer V3's (Pointcept) z / hilbert (+ "-trans") orders.

PTv3's conventions (pointcept/models/utils/serialization/{default,z_order,hilbert}.py):
- z-order: bit i of x / y / z goes to bit 3i+2 / 3i+1 / 3i of the code (their 256-entry lookup tables hold exactly
  this interleave of 8 bits; the upper 8 bits are shifted by 24).
- hilbert: Skilling (2004) transposed index with axis 0 (x) first, the transposed bits read level by level from the
  most significant, axis 0 first, then Gray-decoded as one bit string (a port of PrincetonLIPS numpy-hilbert-curve).
- "-trans": both curves applied to grid_coord[:, [1, 0, 2]].
- batch: code | batch << 3*depth.
The references below are written independently, per point and per bit, and are themselves pinned by hand-computed
codes.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops.serialization import ORDERS, decode, encode

# ----------------------------------------------------------------------------- independent references


def bits_msb_first(value: int, depth: int) -> list[int]:
    return [(value >> level) & 1 for level in reversed(range(depth))]


def morton_reference(point: tuple[int, int, int], depth: int) -> int:
    code = 0
    for level in reversed(range(depth)):  # coarsest level first; x, then y, then z inside a level
        for axis in range(3):
            code = (code << 1) | ((point[axis] >> level) & 1)
    return code


def hilbert_reference(point: tuple[int, int, int], depth: int) -> int:
    """Skilling's AxestoTranspose on bit lists, then the interleaved bit string is Gray-decoded (prefix XOR)."""
    b = [bits_msb_first(v, depth) for v in point]  # b[axis][k]: k = 0 is the most significant bit
    for k in range(depth - 1):  # each level's bit decides what happens to all finer bits
        for axis in range(3):
            for j in range(k + 1, depth):
                if b[axis][k]:  # invert axis 0 below this level
                    b[0][j] ^= 1
                elif b[0][j] != b[axis][j]:  # exchange axis 0 and this axis below this level
                    b[0][j], b[axis][j] = b[axis][j], b[0][j]
    gray = [b[axis][k] for k in range(depth) for axis in range(3)]
    code, running = 0, 0
    for g in gray:
        running ^= g
        code = (code << 1) | running
    return code


def reference(point: tuple[int, int, int], depth: int, order: str, batch: int = 0) -> int:
    if order.endswith("-trans"):
        point = (point[1], point[0], point[2])
    curve = morton_reference if order.startswith("z") else hilbert_reference
    return (batch << (3 * depth)) | curve(point, depth)


def all_cells(depth: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(1 << depth), repeat=3)), dtype=torch.long)


def random_cells(depth: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 1 << depth, (n, 3), generator=g)
    cells[: n // 8] = (1 << depth) - 1 - cells[: n // 8] % 3  # the upper faces, where every bit is set
    return cells


# ----------------------------------------------------------------------------- hand-computed codes

# depth 1, corners in itertools.product order (x, y, z) = 000, 001, 010, 011, 100, 101, 110, 111.
# z: 4x + 2y + z.  hilbert: Skilling with one level is just the Gray decode: 4x + 2(x^y) + (x^y^z).
HAND_DEPTH1 = {
    "z": [0, 1, 2, 3, 4, 5, 6, 7],
    "z-trans": [0, 1, 4, 5, 2, 3, 6, 7],
    "hilbert": [0, 1, 3, 2, 7, 6, 4, 5],
    "hilbert-trans": [0, 1, 7, 6, 3, 2, 4, 5],
}

# depth 2, worked through Skilling's steps by hand (see the comments for the transposed words before interleave).
HAND_DEPTH2 = [
    # point, order, code
    ((1, 2, 3), "z", 0b011_101),  # levels: (x1 y1 z1)=011, (x0 y0 z0)=101
    ((1, 2, 3), "z-trans", 0b101_011),
    ((1, 0, 0), "hilbert", 3),  # the swaps at level 1 give (0,1,0); Gray -> (0,1,1) -> 000 011
    ((0, 0, 1), "hilbert", 7),  # last cell of the first octant ...
    ((0, 0, 2), "hilbert", 8),  # ... next to the first cell of the second one
    ((3, 0, 0), "hilbert", 63),  # the curve ends at the far x corner
    ((1, 2, 3), "hilbert", 22),  # (1,2,3) -> (1,2,3) -> Gray (1,3,0) -> 010 110
    ((1, 0, 0), "hilbert-trans", 1),  # hilbert of (0,1,0): -> (0,0,1) -> 000 001
    ((3, 0, 0), "hilbert-trans", 29),  # hilbert of (0,3,0): -> (0,3,1) -> Gray (1,2,3) -> 011 101
]


@pytest.mark.parametrize("order", ORDERS)
def test_depth1_corners_match_hand_computed_codes(order: str) -> None:
    cells = all_cells(1)
    assert encode(cells, depth=1, order=order).tolist() == HAND_DEPTH1[order]
    assert [reference(tuple(c), 1, order) for c in cells.tolist()] == HAND_DEPTH1[order]


def test_depth2_codes_match_hand_computed_codes() -> None:
    for point, order, code in HAND_DEPTH2:
        assert reference(point, 2, order) == code, (point, order)
        assert int(encode(torch.tensor([point]), depth=2, order=order)) == code, (point, order)
    # the batch index sits above the 3*depth curve bits: PTv3's `batch << depth * 3 | code`
    coded = encode(torch.tensor([[1, 2, 3], [3, 0, 0]]), torch.tensor([5, 2]), depth=2, order="hilbert")
    assert coded.tolist() == [5 * 64 + 22, 2 * 64 + 63]


# ----------------------------------------------------------------------------- against the references


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_every_cell_matches_reference(order: str, depth: int) -> None:
    cells = all_cells(depth)
    expect = [reference(tuple(c), depth, order) for c in cells.tolist()]
    assert encode(cells, depth=depth, order=order).tolist() == expect


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("depth", [5, 8, 9, 16])  # 8 / 9 straddle PTv3's two 8-bit lookup tables
def test_random_cells_with_batch_match_reference(order: str, depth: int) -> None:
    cells = random_cells(depth, 300, seed=depth)
    batch = torch.arange(cells.shape[0]) % 7
    expect = [reference(tuple(c), depth, order, b) for c, b in zip(cells.tolist(), batch.tolist(), strict=True)]
    assert encode(cells, batch, depth=depth, order=order).tolist() == expect


def test_hilbert_matches_the_hilbertcurve_package() -> None:
    """A third, unrelated implementation of Skilling's curve (galtay's `hilbertcurve`), axis 0 most significant."""
    hilbertcurve = pytest.importorskip("hilbertcurve.hilbertcurve")
    for depth in (1, 3, 16):
        cells = random_cells(depth, 200, seed=100 + depth)
        expect = hilbertcurve.HilbertCurve(depth, 3).distances_from_points(cells.tolist())
        assert encode(cells, depth=depth, order="hilbert").tolist() == [int(e) for e in expect]


# ----------------------------------------------------------------------------- decode and depth


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("depth", [1, 2, 7, 16, 20])
def test_decode_inverts_encode(order: str, depth: int) -> None:
    cells = all_cells(depth) if depth <= 2 else random_cells(depth, 500, seed=depth)
    batch = torch.arange(cells.shape[0]) % 5
    back, back_batch = decode(encode(cells, batch, depth, order), depth, order)
    assert torch.equal(back, cells) and torch.equal(back_batch, batch)


@pytest.mark.parametrize("order", ORDERS)
def test_one_level_coarser_is_the_code_shifted_by_three_bits(order: str) -> None:
    """PTv3's stride-2 SerializedPooling keeps `code >> 3` with serialized_depth - 1: re-encoding the pooled cells
    at depth - 1 must give the same codes (and so the same order)."""
    cells = random_cells(6, 400, seed=3)
    batch = torch.arange(cells.shape[0]) % 3
    assert torch.equal(encode(cells, batch, 6, order) >> 3, encode(cells >> 1, batch, 5, order))


def test_hilbert_order_depends_on_depth_but_z_order_does_not() -> None:
    """Why the caller must use PTv3's depth: one level too many rotates the Hilbert axes (x,y,z) -> (z,x,y)."""
    cells = random_cells(3, 300, seed=4)
    assert torch.equal(encode(cells, depth=4, order="z"), encode(cells, depth=3, order="z"))
    assert torch.equal(encode(cells, depth=4, order="hilbert"), encode(cells[:, [2, 0, 1]], depth=3, order="hilbert"))
    assert not torch.equal(encode(cells, depth=4, order="hilbert").argsort(),
                           encode(cells, depth=3, order="hilbert").argsort())


def test_bad_arguments_raise_input_error() -> None:
    cell = torch.tensor([[0, 0, 0]])
    with pytest.raises(InputError):
        decode(torch.tensor([0]), order="peano")
    with pytest.raises(InputError):
        decode(torch.tensor([0]), depth=0)
    with pytest.raises(InputError):
        encode(cell, depth=21)
    with pytest.raises(InputError):
        encode(cell, torch.tensor([-1]), depth=2)
    with pytest.raises(InputError):
        encode(torch.tensor([[-1, 0, 0]]), depth=2)
    with pytest.raises(InputError):
        encode(cell.float(), depth=2)
