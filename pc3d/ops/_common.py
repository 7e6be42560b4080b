"""Shared helpers of pc3d.ops: input checks and the decision to use a Triton kernel."""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from pc3d.errors import InputError

# Upper bound on pairwise distances materialised at once by brute-force paths (~256 MB of float32).
MAX_PAIRS = 64 * 1024 * 1024


def check_points(x: Tensor, name: str, batched: bool | None = None) -> None:
    """Raise InputError unless `x` is a floating (N,3) or (B,N,3) tensor (or the one `batched` asks for)."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    ndims = {None: (2, 3), True: (3,), False: (2,)}[batched]
    if x.ndim not in ndims or x.shape[-1] != 3:
        want = " or ".join({2: "(N,3)", 3: "(B,N,3)"}[d] for d in ndims)
        raise InputError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def as_batched(x: Tensor) -> tuple[Tensor, bool]:
    """(N,3) -> (1,N,3) and a flag saying the caller must squeeze the batch dimension again."""
    return (x.unsqueeze(0), True) if x.ndim == 2 else (x, False)


@functools.cache
def _triton_importable() -> bool:
    try:
        import pc3d_kernels.fps  # noqa: F401  (imports triton)
    except Exception:  # ImportError, or a triton that fails to initialise on this machine
        return False
    return True


def use_kernels(x: Tensor) -> bool:
    """True when `x` lives on a CUDA device and Triton is usable; PC3D_NO_TRITON=1 forces plain torch."""
    if not x.is_cuda or os.environ.get("PC3D_NO_TRITON", "0") == "1":
        return False
    return _triton_importable()


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; half types are widened to float32 so distance arithmetic stays accurate."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with value and gradient 0 at 0 (plain sqrt has an infinite derivative there: exact matches)."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))
