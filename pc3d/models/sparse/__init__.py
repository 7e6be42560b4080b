"""Sparse 3D convolution behind one small interface, with three backends chosen at run time.

    from pc3d.models.sparse import SparseConvTensor, SubMConv3d, SparseConv3d, SparseInverseConv3d

Backends: `torch` (plain torch gather-GEMM-scatter; CPU and CUDA), `spconv` (spconv 2.x; its Native
algorithm on CPU, its default on CUDA), `spconv-triton` (the `spconv-triton` package; CUDA). Set
PC3D_SPARSE_BACKEND to one of them to force it; by default a conv uses the fastest one available for its
input's device (CUDA: spconv, else spconv-triton, else torch; CPU: spconv, else torch). Weights are
Parameters in spconv 2.x's KRSC layout (out, kx, ky, kz, in) under the state-dict keys spconv modules use,
so checkpoints move freely between backends.
"""

from pc3d.models.sparse.core import (
    BACKENDS,
    ENV_VAR,
    ConvSpec,
    SparseConv3d,
    SparseConvolution,
    SparseConvTensor,
    SparseInverseConv3d,
    SparseModule,
    SparseSequential,
    SubMConv3d,
    available_backends,
    backend_name,
)

__all__ = ["BACKENDS", "ENV_VAR", "ConvSpec", "SparseConv3d", "SparseConvTensor", "SparseConvolution",
           "SparseInverseConv3d", "SparseModule", "SparseSequential", "SubMConv3d", "available_backends",
           "backend_name"]
