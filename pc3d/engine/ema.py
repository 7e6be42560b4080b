"""Exponential moving-average teachers and their momentum schedule."""

from __future__ import annotations

import torch
from torch import nn

from pc3d.engine.schedule import cosine


def momentum_schedule(base: float, final: float, progress: float) -> float:
    """Cosine from `base` (progress 0) to `final` (progress 1), as in BYOL/DINO-style teachers."""
    return cosine(base, final, min(max(progress, 0.0), 1.0))


class EMA:
    """teacher <- m * teacher + (1 - m) * student over parameters; buffers (BN statistics) are copied.

    Pairs tensors by name, so the teacher must have the student's architecture. The teacher's
    parameters are frozen here: only the EMA moves them, never the optimiser.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        student_params = dict(student.named_parameters())
        teacher_params = dict(teacher.named_parameters())
        if student_params.keys() != teacher_params.keys():
            missing = sorted(set(student_params) ^ set(teacher_params))[:3]
            raise ValueError(f"EMA teacher and student differ in parameters: {', '.join(missing)}")
        for name, param in teacher_params.items():
            if param.shape != student_params[name].shape:
                raise ValueError(f"EMA teacher and student differ in the shape of {name}")
            param.requires_grad_(False)
        names = sorted(student_params)
        self._student = [student_params[n] for n in names]
        self._teacher = [teacher_params[n] for n in names]
        student_buffers = dict(student.named_buffers())
        teacher_buffers = dict(teacher.named_buffers())
        shared = sorted(set(student_buffers) & set(teacher_buffers))
        self._student_buffers = [student_buffers[n] for n in shared]
        self._teacher_buffers = [teacher_buffers[n] for n in shared]

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        if self._teacher:
            # written as m*t + (1-m)*s (not lerp) so it is exactly the formula methods quote
            torch._foreach_mul_(self._teacher, momentum)
            torch._foreach_add_(self._teacher, [s.detach().to(t.dtype) for s, t in
                                                zip(self._student, self._teacher, strict=True)],
                                alpha=1.0 - momentum)
        for student_buffer, teacher_buffer in zip(self._student_buffers, self._teacher_buffers, strict=True):
            teacher_buffer.copy_(student_buffer)
