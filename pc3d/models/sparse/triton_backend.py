"""spconv-triton (PyPI `spconv-triton`, import name `spconv_triton`): spconv 2.x's API in Triton kernels.

It keeps spconv's module API and KRSC weights, so the spconv adapter drives it unchanged. Its kernels are GPU
kernels: the GEMM asserts CUDA tensors and its autotuner benchmarks on the GPU driver, so on a CPU it does
not run even under TRITON_INTERPRET=1 (version 1.0.0); pc3d offers it on CPU only under the interpreter, so
that a future CPU-capable release is picked up by the tests.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import Tensor

from pc3d.models.sparse.core import ConvSpec, SparseConvTensor
from pc3d.models.sparse.spconv_backend import SpconvAdapter

NAME = "spconv-triton"


def _import() -> tuple[ModuleType, Any]:
    import spconv_triton.pytorch as library
    from spconv_triton.core import ConvAlgo

    return library, ConvAlgo


ADAPTER = SpconvAdapter(NAME, _import)


def load() -> None:
    """Import spconv-triton (ImportError when it is not installed)."""
    ADAPTER.load()


def conv(spec: ConvSpec, x: SparseConvTensor, weight: Tensor, bias: Tensor | None,
         training: bool) -> SparseConvTensor:
    return ADAPTER.conv(spec, x, weight, bias, training)
