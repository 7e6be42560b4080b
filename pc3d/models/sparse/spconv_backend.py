"""spconv 2.x behind pc3d's sparse interface (and the shared adapter that spconv-triton reuses).

The library's conv modules serve only as configuration: pc3d's module owns the KRSC weight and bias and
passes them to the library module's `_conv_forward(training, tensor, weight, bias)`, the entry point of its
`forward`, so no parameter is duplicated or swapped in and out. One such configuration module is kept per
(conv spec, algorithm), its own weight dropped. The library's neighbour maps (`indice_dict`) travel in the
pc3d tensor under the backend's name. spconv's CPU build has only the Native algorithm, so CPU inputs use
it; CUDA inputs use the library's default (implicit GEMM for kernels up to 32 offsets).

Importing spconv 2.3 emits deprecation warnings about torch.cuda.amp decorators and a torch.fx notice that
users can do nothing about; they would otherwise precede every command's output, so the import is quiet.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from pc3d.models.sparse.core import ConvSpec, SparseConvTensor

NAME = "spconv"


def _quiet_import() -> tuple[ModuleType, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fx_log = logging.getLogger("torch.fx._symbolic_trace")
        level = fx_log.level
        fx_log.setLevel(logging.ERROR)
        try:
            import spconv.pytorch as library
            from spconv.core import ConvAlgo
        finally:
            fx_log.setLevel(level)
    return library, ConvAlgo


class SpconvAdapter:
    """Runs pc3d convs through a library with spconv 2.x's module API (spconv, spconv-triton)."""

    def __init__(self, name: str, importer: Callable[[], tuple[ModuleType, Any]]) -> None:
        self.name = name
        self._importer = importer
        self._loaded: tuple[ModuleType, Any] | None = None
        self._shells: dict[tuple[ConvSpec, bool], nn.Module] = {}
        self._lock = threading.Lock()

    def load(self) -> tuple[ModuleType, Any]:
        """(the library's `pytorch` module, its ConvAlgo enum); raises ImportError when it is missing."""
        if self._loaded is None:
            self._loaded = self._importer()
        return self._loaded

    def shell(self, spec: ConvSpec, native: bool) -> nn.Module:
        """The library's module for `spec`, weightless: it supplies the conv's configuration only."""
        key = (spec, native)
        with self._lock:  # DataLoader threads or DataParallel replicas may build the same one at once
            module = self._shells.get(key)
            if module is None:
                module = self._build(spec, native)
                self._shells[key] = module
        return module

    def _build(self, spec: ConvSpec, native: bool) -> nn.Module:
        library, algos = self.load()
        algo = algos.Native if native else None  # None: the library picks its CUDA default
        common = dict(bias=False, indice_key=spec.indice_key, algo=algo)
        if spec.kind == "subm":
            module = library.SubMConv3d(spec.in_channels, spec.out_channels, list(spec.kernel_size),
                                        dilation=list(spec.dilation), **common)
        elif spec.kind == "inverse":
            module = library.SparseInverseConv3d(spec.in_channels, spec.out_channels, list(spec.kernel_size),
                                                 **common)
        else:
            module = library.SparseConv3d(spec.in_channels, spec.out_channels, list(spec.kernel_size),
                                          list(spec.stride), list(spec.padding), list(spec.dilation), **common)
        module.weight = None  # pc3d's module passes its own weight; this one would only hold memory
        return module

    def conv(self, spec: ConvSpec, x: SparseConvTensor, weight: Tensor, bias: Tensor | None,
             training: bool) -> SparseConvTensor:
        library, _ = self.load()
        shell = self.shell(spec, x.features.device.type == "cpu")
        tensor = library.SparseConvTensor(x.features, x.indices, x.spatial_shape, x.batch_size)
        tensor.indice_dict = x.maps(self.name)  # the library copies it before adding a map
        out = shell._conv_forward(training, tensor, weight, bias)
        return SparseConvTensor(out.features, out.indices, list(out.spatial_shape), out.batch_size,
                                x.with_maps(self.name, out.indice_dict))


ADAPTER = SpconvAdapter(NAME, _quiet_import)


def load() -> None:
    """Import spconv (ImportError when it is not installed)."""
    ADAPTER.load()


def cpu_only() -> bool:
    """Whether the installed spconv is a CPU-only build (it then cannot take CUDA tensors)."""
    load()
    from spconv.cppconstants import CPU_ONLY_BUILD

    return bool(CPU_ONLY_BUILD)


def conv(spec: ConvSpec, x: SparseConvTensor, weight: Tensor, bias: Tensor | None,
         training: bool) -> SparseConvTensor:
    return ADAPTER.conv(spec, x, weight, bias, training)
