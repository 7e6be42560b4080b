"""Linear SVM (one-vs-rest, squared hinge, L2 penalty) solved in torch with L-BFGS.

The objective is LIBLINEAR's default L2-loss primal (what scikit-learn's LinearSVC solves, with
the bias treated as a constant feature of value 1, hence regularised too):

    per class c:  0.5 * |w_c|^2 + C * sum_i max(0, 1 - y_ic * (w_c . [x_i, 1]))^2,   y_ic in {-1, +1}

It is convex and once differentiable, so L-BFGS reaches the unique optimum; all classes are
solved together because the objective is a sum of independent per-class terms.
"""

from __future__ import annotations

import torch
from torch import Tensor


def svm_objective(weights: Tensor, features: Tensor, targets: Tensor, c: float) -> Tensor:
    """weights (D+1, K), features (N, D), targets (N, K) in {-1,+1} -> summed per-class objective."""
    augmented = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)
    margins = (1.0 - targets * (augmented @ weights)).clamp_min(0.0)
    return 0.5 * (weights**2).sum() + c * (margins**2).sum()


class LinearSVM:
    def __init__(self, c: float = 1.0, max_iter: int = 500, tol: float = 1e-9) -> None:
        self.c = c
        self.max_iter = max_iter
        self.tol = tol
        self.weights: Tensor | None = None
        self.classes: Tensor | None = None

    def fit(self, features: Tensor, labels: Tensor) -> LinearSVM:
        x = features.detach().to(torch.float64).cpu()
        labels = labels.detach().cpu().long()
        self.classes = torch.unique(labels)
        # two classes -> one separating hyperplane (+1 = second class), as LIBLINEAR does
        if len(self.classes) == 2:
            targets = torch.where(labels == self.classes[1], 1.0, -1.0).to(torch.float64).unsqueeze(1)
        else:
            targets = torch.where(labels.unsqueeze(1) == self.classes.unsqueeze(0), 1.0, -1.0).to(torch.float64)
        w = torch.zeros(x.shape[1] + 1, targets.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=self.max_iter, tolerance_grad=self.tol,
                                      tolerance_change=self.tol * 1e-3, history_size=20,
                                      line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = svm_objective(w, x, targets, self.c)
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weights = w.detach()
        return self

    def decision_function(self, features: Tensor) -> Tensor:
        if self.weights is None:
            raise RuntimeError("LinearSVM.fit must run before predicting")
        x = features.detach().to(torch.float64).cpu()
        return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1) @ self.weights

    def predict(self, features: Tensor) -> Tensor:
        scores = self.decision_function(features)
        assert self.classes is not None
        if scores.shape[1] == 1:
            return self.classes[(scores[:, 0] > 0).long()]
        return self.classes[scores.argmax(dim=1)]


def standardize(train_x: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """z-score every feature with the train statistics. Pretrained token features can vary across clouds by
    a few hundredths only; unscaled, a small-C SVM then cannot afford the weights it needs."""
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0).clamp_min(1e-8)
    return tuple((x - mean) / std for x in (train_x, *others))


def svm_probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                       c: float = 0.01, scale: bool = True) -> float:
    """Fit on frozen train features, return test accuracy (the pretraining-time probe)."""
    if scale:
        train_x, test_x = standardize(train_x.double(), test_x.double())
    svm = LinearSVM(c=c).fit(train_x, train_y)
    return float((svm.predict(test_x) == test_y.cpu()).double().mean())
