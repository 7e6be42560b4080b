"""`run.device` (cpu | cuda | auto) to a torch device, the same way for every command."""

from __future__ import annotations

import torch

from pc3d.errors import InputError


def cuda_missing_reason() -> str:
    """Why CUDA cannot be used here, for the one-line error: a CPU-only torch build or no visible device."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"


def resolve_device(setting: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; an explicit 'cuda' without CUDA is the user's error (exit 2),
    never a silent fall-back to the CPU nor torch's AssertionError from deep inside a model."""
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device cuda: {cuda_missing_reason()}")
        return torch.device("cuda")
    if setting == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
