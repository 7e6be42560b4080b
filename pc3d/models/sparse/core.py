"""The sparse tensor, the conv modules and the backend choice; the arithmetic lives in the backend modules.

A conv module owns its weight as an ordinary Parameter in spconv 2.x's KRSC layout (out, kx, ky, kz, in), so
state dicts are those spconv wrote, and hands (spec, tensor, weight, bias) to the backend picked for the
input's device at call time. Each backend keeps its own neighbour maps in the tensor's `indice_dict` under its
name, so maps built by one backend are never read by another.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import torch
from torch import Tensor, nn

from pc3d.errors import InputError

ENV_VAR = "PC3D_SPARSE_BACKEND"
BACKENDS = ("torch", "spconv", "spconv-triton")

_MODULES = {"torch": "pc3d.models.sparse.torch_backend", "spconv": "pc3d.models.sparse.spconv_backend",
            "spconv-triton": "pc3d.models.sparse.triton_backend"}


class SparseConvTensor:
    """Features of the active sites of a batch of 3D grids.

    indices: (N, 4) int32 rows (batch, x, y, z) with 0 <= x < spatial_shape[0] etc.; features: (N, C).
    `indice_dict` maps a backend name to that backend's {indice_key: neighbour map}; `replace_feature` shares it
    (same sites), a conv returns a shallow copy with its own map added, as spconv does, so sibling branches of
    a network do not see each other's maps."""

    def __init__(self, features: Tensor, indices: Tensor, spatial_shape: list[int] | tuple[int, ...],
                 batch_size: int, indice_dict: dict[str, dict[str, object]] | None = None) -> None:
        if indices.dim() != 2 or indices.shape[1] != 4:
            raise InputError(f"SparseConvTensor: indices must be (N, 4) rows of (batch, x, y, z), got "
                             f"{tuple(indices.shape)}")
        if features.shape[0] != indices.shape[0]:
            raise InputError(f"SparseConvTensor: {features.shape[0]} feature rows for {indices.shape[0]} sites")
        self.features = features
        # spconv's kernels take int32 only; converting here keeps every backend's input identical
        self.indices = indices if indices.dtype == torch.int32 else indices.int()
        self.spatial_shape = [int(s) for s in spatial_shape]
        self.batch_size = int(batch_size)
        self.indice_dict: dict[str, dict[str, object]] = indice_dict if indice_dict is not None else {}

    def replace_feature(self, features: Tensor) -> SparseConvTensor:
        """The same sites (and cached maps) with new features."""
        return SparseConvTensor(features, self.indices, self.spatial_shape, self.batch_size, self.indice_dict)

    def with_maps(self, backend: str, maps: dict[str, object]) -> dict[str, dict[str, object]]:
        """A copy of `indice_dict` whose `backend` entry is `maps` (for a conv's output)."""
        return {**self.indice_dict, backend: maps}

    def maps(self, backend: str) -> dict[str, object]:
        """This backend's cached maps (read-only by convention: convs copy before adding)."""
        return self.indice_dict.get(backend, {})

    @property
    def device(self) -> torch.device:
        return self.features.device

    def __repr__(self) -> str:
        return (f"SparseConvTensor(sites={self.indices.shape[0]}, channels={self.features.shape[1]}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size})")


@dataclass(frozen=True)
class ConvSpec:
    """Everything but the weights of one sparse conv; hashable, so backends may key per-spec state on it."""

    kind: str  # "subm" | "conv" (strided / regular) | "inverse"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    indice_key: str | None

    @property
    def volume(self) -> int:
        return math.prod(self.kernel_size)

    @property
    def is_1x1(self) -> bool:
        """spconv computes such a conv as one matmul with its own weight reading (see the torch backend)."""
        return self.volume == 1 and (self.kind == "subm" or (self.kind == "conv" and self.stride == (1, 1, 1)))


class Backend(Protocol):
    def conv(self, spec: ConvSpec, x: SparseConvTensor, weight: Tensor, bias: Tensor | None,
             training: bool) -> SparseConvTensor: ...


# ----------------------------------------------------------------------------- backend choice


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


@cache
def _importable(backend: str) -> bool:
    """Whether the backend's library imports here (cached: a failed import is not retried)."""
    if backend == "torch":
        return True
    try:
        importlib.import_module(_MODULES[backend]).load()
    except (ImportError, OSError):  # OSError: a wheel whose CUDA libraries do not load here
        return False
    return True


def _unavailable_reason(backend: str, device_type: str) -> str | None:
    """Why `backend` cannot run on `device_type`, or None when it can."""
    if backend == "torch":
        return None
    if backend == "spconv-triton" and device_type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        # its kernels are Triton GPU kernels; on a CPU only the interpreter can run them (tests)
        return "spconv-triton runs on CUDA devices only (on CPU only with TRITON_INTERPRET=1)"
    if not _importable(backend):
        pip = "spconv-cu120 (or the spconv build for your CUDA)" if backend == "spconv" else backend
        return f"{backend} is not installed (pip install {pip})"
    if backend == "spconv" and device_type != "cpu" and importlib.import_module(_MODULES[backend]).cpu_only():
        return "the installed spconv is a CPU-only build"
    return None


def available_backends(device: torch.device | str) -> list[str]:
    """Backends that can run on `device`, fastest first (the first is the default)."""
    kind = _device_type(device)
    order = ("spconv", "spconv-triton", "torch") if kind != "cpu" else ("spconv", "torch", "spconv-triton")
    return [b for b in order if _unavailable_reason(b, kind) is None]


def backend_name(device: torch.device | str) -> str:
    """The backend convs on `device` use: $PC3D_SPARSE_BACKEND when set, else the first available one."""
    requested = os.environ.get(ENV_VAR, "").strip()
    kind = _device_type(device)
    if not requested:
        return available_backends(device)[0]
    if requested not in BACKENDS:
        raise InputError(f"{ENV_VAR}={requested!r} is not a sparse backend; choose one of {', '.join(BACKENDS)}")
    reason = _unavailable_reason(requested, kind)
    if reason is not None:
        raise InputError(f"{ENV_VAR}={requested}: {reason}")
    return requested


def get_backend(name: str) -> Backend:
    return importlib.import_module(_MODULES[name])  # type: ignore[return-value]


# ----------------------------------------------------------------------------- modules


class SparseModule(nn.Module):
    """A module that takes and returns a SparseConvTensor (SparseSequential passes it the whole tensor)."""


class SparseSequential(nn.Sequential, SparseModule):
    """Sequential over sparse modules and dense per-site modules (BatchNorm1d, ReLU, ...), which are applied
    to the features. Children are named "0", "1", ... as in spconv, so state-dict keys are unchanged."""

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:  # type: ignore[override]
        for module in self:
            if isinstance(module, SparseModule):
                x = module(x)
            elif x.indices.shape[0]:  # BatchNorm1d refuses an empty batch; spconv skips dense layers there too
                x = x.replace_feature(module(x.features))
        return x


def _triple(value: int | tuple[int, ...] | list[int], name: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3:
        raise InputError(f"sparse conv: {name} needs 1 or 3 values, got {value!r}")
    return values  # type: ignore[return-value]


class SparseConvolution(SparseModule):
    """A 3D sparse convolution; the subclasses fix the kind (submanifold, strided, inverse)."""

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...] = 3,
                 stride: int | tuple[int, ...] = 1, padding: int | tuple[int, ...] = 0,
                 dilation: int | tuple[int, ...] = 1, bias: bool = True, indice_key: str | None = None) -> None:
        super().__init__()
        spec = ConvSpec(self.kind, int(in_channels), int(out_channels), _triple(kernel_size, "kernel_size"),
                        _triple(stride, "stride"), _triple(padding, "padding"), _triple(dilation, "dilation"),
                        indice_key)
        if spec.kind == "subm" and (any(k % 2 == 0 for k in spec.kernel_size) or spec.stride != (1, 1, 1)):
            raise InputError(f"SubMConv3d: the kernel must be odd and the stride 1, got {spec.kernel_size} / "
                             f"{spec.stride}")
        if spec.kind == "inverse" and indice_key is None:
            raise InputError("SparseInverseConv3d needs the indice_key of the conv it inverts")
        self.spec = spec
        self.weight = nn.Parameter(torch.empty(out_channels, *spec.kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # spconv's initialisation (kaiming-uniform, a = sqrt(5), fan_in = in * kernel volume), so a model's
        # initial weights and training behave as they did on spconv
        bound = 1.0 / math.sqrt(self.spec.in_channels * self.spec.volume)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def indice_key(self) -> str | None:
        return self.spec.indice_key

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        if x.features.shape[1] != self.spec.in_channels:
            raise InputError(f"sparse conv: expected {self.spec.in_channels} input channels, got "
                             f"{x.features.shape[1]}")
        backend = get_backend(backend_name(x.features.device))
        return backend.conv(self.spec, x, self.weight, self.bias, self.training)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, "
                f"padding={s.padding}, bias={self.bias is not None}, indice_key={s.indice_key!r}")


class SubMConv3d(SparseConvolution):
    """Submanifold conv: output sites = input sites; out[i] = sum_k W[k] x[i + (k - centre) * dilation]."""

    kind = "subm"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...] = 3,
                 dilation: int | tuple[int, ...] = 1, bias: bool = True, indice_key: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, dilation, bias, indice_key)


class SparseConv3d(SparseConvolution):
    """Regular (e.g. strided) sparse conv: out[o] = sum_k W[k] x[o * stride - padding + k * dilation] over
    the output sites any input reaches, in spconv's output grid (in + 2p - d(k-1) - 1) // s + 1."""

    kind = "conv"


class SparseInverseConv3d(SparseConvolution):
    """The transpose of the SparseConv3d that shares its indice_key: output sites are that conv's input
    sites, and each of its (input, output, k) pairs carries W[k] back from output to input."""

    kind = "inverse"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...],
                 bias: bool = True, indice_key: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, 1, bias, indice_key)
