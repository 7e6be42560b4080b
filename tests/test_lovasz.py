"""Lovasz-softmax equals the Lovasz extension of the Jaccard loss computed from explicit prefix sets."""

from __future__ import annotations

import numpy as np
import torch

from pc3d.methods.zeroshot_seg import lovasz_softmax, seg_loss


def jaccard_loss(mistakes: set[int], foreground: set[int]) -> float:
    """Set function Delta_J(M) = 1 - |F \\ M| / |F u M| of the mispredicted set M."""
    union = foreground | mistakes
    return 1.0 - len(foreground - mistakes) / len(union) if union else 0.0


def brute_force(probas: np.ndarray, labels: np.ndarray, ignore: int) -> float:
    keep = labels != ignore
    probas, labels = probas[keep], labels[keep]
    losses = []
    for c in sorted(set(labels.tolist())):
        foreground = set(np.flatnonzero(labels == c).tolist())
        errors = np.abs((labels == c).astype(float) - probas[:, c])
        order = sorted(range(len(errors)), key=lambda i: -errors[i])
        total, prefix, previous = 0.0, set(), 0.0
        for i in order:  # Lovasz extension: sum_i e_(i) (Delta(S_i) - Delta(S_{i-1}))
            prefix.add(i)
            value = jaccard_loss(prefix, foreground)
            total += errors[i] * (value - previous)
            previous = value
        losses.append(total)
    return float(np.mean(losses))


def test_lovasz_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(5):
        logits = rng.normal(size=(9, 4))
        probas = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        labels = rng.integers(0, 4, 9)
        got = lovasz_softmax(torch.tensor(probas), torch.tensor(labels), ignore=0)
        assert abs(float(got) - brute_force(probas, labels, 0)) < 1e-10


def test_perfect_prediction_has_zero_loss_and_seg_loss_is_finite():
    labels = torch.tensor([1, 2, 2, 0, 3])
    probas = torch.nn.functional.one_hot(labels, 4).double()
    assert float(lovasz_softmax(probas, labels)) == 0.0
    logits = torch.randn(5, 4, requires_grad=True)
    loss = seg_loss(logits, labels, torch.ones(4))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[3].abs().sum() == 0  # the ignored point gets no gradient
