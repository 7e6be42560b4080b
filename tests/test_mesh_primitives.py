"""The numpy mesh primitives equal open3d's create_* exactly, and the synthetic data does not depend on
which of the two built it, nor on open3d being importable at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pc3d.data.synthetic import mesh as mesh_module
from pc3d.data.synthetic import write_synthetic
from pc3d.data.synthetic.primitives import box_mesh, cone_mesh, cylinder_mesh, sphere_mesh, torus_mesh


@pytest.fixture(scope="module")
def o3d():
    return pytest.importorskip("open3d")


def assert_same(ours: tuple[np.ndarray, np.ndarray], theirs) -> None:
    vertices, triangles = ours
    expected_v = np.asarray(theirs.vertices, dtype=np.float64)
    expected_t = np.asarray(theirs.triangles, dtype=np.int64)
    assert vertices.dtype == np.float64 and triangles.dtype == np.int64
    assert vertices.shape == expected_v.shape
    np.testing.assert_allclose(vertices, expected_v, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(triangles, expected_t)


@pytest.mark.parametrize("size", [(1.0, 1.0, 1.0), (0.04, 0.75, 0.6), (2.5, 0.01, 13.0)])
def test_box(o3d, size):
    assert_same(box_mesh(*size), o3d.geometry.TriangleMesh.create_box(*size))


# mesh.py's resolutions (6, 10, 12, 16, 20, 24, 28, 32), with split 1 as mesh.py uses and a few others
@pytest.mark.parametrize("radius, height, resolution, split", [
    (1.0, 2.0, 16, 1), (0.025, 0.61, 6, 1), (0.1, 5.3, 10, 1), (0.45, 0.02, 24, 1), (0.3, 0.4, 28, 1),
    (0.6, 0.03, 32, 1), (0.2, 1.1, 3, 1), (1.0, 2.0, 20, 4), (0.7, 0.3, 12, 3),
])
def test_cylinder_and_cone(o3d, radius, height, resolution, split):
    factory = o3d.geometry.TriangleMesh
    assert_same(cylinder_mesh(radius, height, resolution, split),
                factory.create_cylinder(radius, height, resolution, split))
    assert_same(cone_mesh(radius, height, resolution, split), factory.create_cone(radius, height, resolution, split))


@pytest.mark.parametrize("radius, resolution", [(1.0, 8), (1.0, 10), (1.0, 12), (0.37, 20), (2.0, 2), (1.0, 3)])
def test_sphere(o3d, radius, resolution):
    assert_same(sphere_mesh(radius, resolution), o3d.geometry.TriangleMesh.create_sphere(radius, resolution))


@pytest.mark.parametrize("torus, tube, radial, tubular", [
    (0.33, 0.03, 16, 6), (0.12, 0.007, 20, 8), (1.0, 0.5, 30, 20), (2.0, 0.9, 3, 3),
])
def test_torus(o3d, torus, tube, radial, tubular):
    assert_same(torus_mesh(torus, tube, radial, tubular),
                o3d.geometry.TriangleMesh.create_torus(torus, tube, radial, tubular))


def test_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="radius"):
        cylinder_mesh(0.0, 1.0, 8, 1)


def _open3d_primitives(o3d, monkeypatch) -> None:
    """Make mesh.py build from open3d's tessellators, as it did before the numpy primitives."""
    factory = o3d.geometry.TriangleMesh

    def wrap(create):
        def build(*args):
            mesh = create(*args)
            return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)
        return build

    for name, create in [("box_mesh", factory.create_box), ("cylinder_mesh", factory.create_cylinder),
                         ("sphere_mesh", factory.create_sphere), ("cone_mesh", factory.create_cone),
                         ("torus_mesh", factory.create_torus)]:
        monkeypatch.setattr(mesh_module, name, wrap(create))


def _write_all(out: Path) -> dict[str, bytes]:
    write_synthetic("objects", out / "objects", count=3, seed=0, points=512, preview=False)
    write_synthetic("scenes", out / "scenes", count=1, seed=0, points=4000, preview=False)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_synthetic_data_identical_to_open3d_built(o3d, monkeypatch, tmp_path):
    """The digest of the data is not pinned (it could move with numpy's float code); instead, the data
    written with open3d's tessellation and with ours must be byte-identical, file by file."""
    ours = _write_all(tmp_path / "numpy")
    with monkeypatch.context() as patch:
        _open3d_primitives(o3d, patch)
        theirs = _write_all(tmp_path / "open3d")
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert [name for name in ours if ours[name] != theirs[name]] == []


def test_synthetic_data_without_open3d(tmp_path):
    """With open3d unimportable the same bytes come out (no open3d needed on the objects/scenes path)."""
    script = ("import sys; sys.modules['open3d'] = None\n"
              "from pathlib import Path\n"
              "from pc3d.data.synthetic import write_synthetic\n"
              "out = Path(sys.argv[1])\n"
              "write_synthetic('objects', out / 'objects', count=3, seed=0, points=512, preview=False)\n"
              "write_synthetic('scenes', out / 'scenes', count=1, seed=0, points=4000, preview=False)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "hidden")], check=True, timeout=300)
    hidden = {str(p.relative_to(tmp_path / "hidden")): p.read_bytes()
              for p in sorted((tmp_path / "hidden").rglob("*")) if p.is_file()}
    here = _write_all(tmp_path / "here")
    assert hidden.keys() == here.keys()
    assert [name for name in here if here[name] != hidden[name]] == []
