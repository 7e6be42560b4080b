"""Every Triton kernel under TRITON_INTERPRET=1 on the CPU, against its plain-torch twin.

Triton fixes interpreter-or-compiler when it is imported and when each kernel is decorated, so the kernel
tests run in a child pytest process that sets TRITON_INTERPRET=1 before anything imports triton; this
keeps the parent session's triton (real GPU kernels elsewhere in the suite) untouched. The parent has one
test that runs the child and fails with its output. Sizes are tiny and include non-multiples of the
block sizes: the interpreter is slow.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

CHILD = os.environ.get("PC3D_KERNEL_TEST_CHILD") == "1"
child_only = pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")


def test_kernels_under_interpreter_match_torch():
    if CHILD:
        pytest.skip("this is the child")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PC3D_KERNEL_TEST_CHILD": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           str(Path(__file__))], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


@pytest.fixture(scope="module")
def kern():
    modules = {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in
               ("pc3d_kernels.fps", "pc3d_kernels.knn", "pc3d_kernels.chamfer", "pc3d_kernels.raster")}
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(modules["fps"]._fps_kernel, InterpretedFunction)  # really running in the interpreter
    return modules


@child_only
@pytest.mark.parametrize("batch,n,samples,start,block", [(1, 1, 1, 0, 16), (2, 37, 9, 3, 16), (3, 130, 20, 129, 32)])
def test_fps_kernel(kern, batch, n, samples, start, block):
    from pc3d.ops.sampling import _fps_batched

    pts = torch.rand(batch, n, 3, generator=torch.Generator().manual_seed(n))
    got = kern["fps"].fps_triton(pts, samples, start, block=block)
    assert torch.equal(got, _fps_batched(pts.double(), samples, start))


@child_only
@pytest.mark.parametrize("batch,m,n,k", [(1, 5, 7, 1), (2, 19, 70, 4), (1, 33, 150, 10)])
def test_knn_kernel(kern, batch, m, n, k):
    from pc3d.ops.neighbors import knn_indices

    g = torch.Generator().manual_seed(m * n)
    q, r = torch.rand(batch, m, 3, generator=g), torch.rand(batch, n, 3, generator=g)
    got = kern["knn"].knn_triton(q, r, k, block_m=16, block_n=32)
    assert torch.equal(got, knn_indices(q.double(), r.double(), k))


@child_only
@pytest.mark.parametrize("batch,n,m", [(1, 1, 1), (2, 21, 50), (3, 70, 33)])
def test_chamfer_nearest_kernel(kern, batch, n, m):
    from pc3d.ops.chamfer import nearest_indices_torch

    g = torch.Generator().manual_seed(n + m)
    a, b = torch.rand(batch, n, 3, generator=g), torch.rand(batch, m, 3, generator=g)
    ab, ba = nearest_indices_torch(a.double(), b.double())
    assert torch.equal(kern["chamfer"].nearest_triton(a, b, block_m=16, block_n=16), ab)
    assert torch.equal(kern["chamfer"].nearest_triton(b, a, block_m=16, block_n=16), ba)


@child_only
@pytest.mark.parametrize("n,h,w,radius", [(1, 4, 5, 0), (45, 9, 13, 1), (100, 17, 15, 2)])
def test_zbuffer_kernel(kern, n, h, w, radius):
    from pc3d.ops.raster import zbuffer_torch

    g = torch.Generator().manual_seed(n)
    pixel = torch.randint(-3, max(h, w) + 3, (n, 2), generator=g)
    depth = torch.rand(n, generator=g) * 2 - 0.2  # some behind the camera
    depth[::5] = depth[0]  # equal depths: the lowest index must win
    got = kern["raster"].zbuffer_triton(pixel, depth, h, w, radius, block=32)
    assert torch.equal(got, zbuffer_torch(pixel, depth, h, w, radius))
