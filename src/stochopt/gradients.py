"""Gradient estimators: what the training loop feeds the update rule at each step.

* :class:`MiniBatch` -- the plain mini-batch gradient ``g = (1/B) X_B^T R_B``.
* :class:`SVRG` (Johnson & Zhang, 2013) -- ``g = grad_B(W) - grad_B(W~) + grad(W~)`` with a
  snapshot ``W~`` and its full gradient taken at the start of every epoch.
* :class:`SAGA` (Defazio et al., 2014) -- keeps the last gradient seen for every example;
  ``g = (1/B) sum_{i in B} (g_i(W) - g_i^old) + mean_j g_j^old``.

For softmax regression the per-example gradient is ``x_i r_i^T`` with ``r_i = softmax(x_i W)
- y_i``, so SAGA's table holds N x C residuals, not N x d x C gradients, and its mean is
``(1/N) X^T R_table``. All three work on K models at once (``W`` of shape ``(K, d, C)``).

Every estimator returns ``(g, Z)``: the gradient and the batch logits at ``W`` (which the loop
may reuse for the step's metrics).
"""

from __future__ import annotations

import torch

from .data import Split
from .model import logits, residuals, xt_r


class MiniBatch:
    def __init__(self, split: Split, W: torch.Tensor) -> None:
        pass

    def epoch_start(self, W: torch.Tensor) -> None:
        pass

    def __call__(self, W, idx, Xb, yb) -> tuple[torch.Tensor, torch.Tensor]:
        Z = logits(W, Xb)
        return xt_r(Xb, residuals(Z, yb)) / len(idx), Z


class SVRG(MiniBatch):
    def __init__(self, split: Split, W: torch.Tensor) -> None:
        self.X, self.y = split.X_train, split.y_train

    def epoch_start(self, W):
        self.snapshot = W.clone()
        self.full = xt_r(self.X, residuals(logits(W, self.X), self.y)) / len(self.X)

    def __call__(self, W, idx, Xb, yb):
        Z = logits(W, Xb)
        R = residuals(Z, yb) - residuals(logits(self.snapshot, Xb), yb)
        return xt_r(Xb, R) / len(idx) + self.full, Z


class SAGA(MiniBatch):
    def __init__(self, split: Split, W: torch.Tensor) -> None:
        X, y = split.X_train, split.y_train
        self.n = len(X)
        self.table = residuals(logits(W, X), y)  # (N, C) or (K, N, C)
        self.mean = xt_r(X, self.table) / self.n

    def __call__(self, W, idx, Xb, yb):
        Z = logits(W, Xb)
        R = residuals(Z, yb)
        delta = R - self.table[..., idx, :]
        step = xt_r(Xb, delta)
        g = step / len(idx) + self.mean
        self.mean += step / self.n
        self.table[..., idx, :] = R
        return g, Z


ESTIMATORS: dict[str, type[MiniBatch]] = {"svrg": SVRG, "saga": SAGA}
