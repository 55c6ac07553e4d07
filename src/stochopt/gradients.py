"""Gradient estimators: what the training loop feeds the update rule at each step.

* :class:`MiniBatch` -- the plain mini-batch gradient ``g = (1/B) X_B^T R_B``.
* :class:`SVRG` (Johnson & Zhang, 2013) -- ``g = grad_B(W) - grad_B(W~) + grad(W~)`` with a
  snapshot ``W~`` and its full gradient taken at the start of every epoch.
* :class:`SAGA` (Defazio et al., 2014) -- keeps the last gradient seen for every example;
  ``g = (1/B) sum_{i in B} (g_i(W) - g_i^old) + mean_j g_j^old``.

For softmax regression the per-example gradient is ``x_i r_i^T`` with ``r_i = softmax(x_i W)
- y_i``, so SAGA's table holds N x C residuals, not N x d x C gradients, and its mean is
``(1/N) X^T R_table``.

Like the training loop, estimators work on transposes, classes first (see :mod:`.model`):
called with ``W^T`` (K, C, d), the batch's indices, its examples ``X_B`` (B, d) and one-hot
labels ``Y*_B^T`` (C, B), they return ``(G^T, Z^T)``: the gradient (K, C, d) and the batch
logits at ``W`` (K, C, B), which the loop may reuse for the step's metrics.
"""

from __future__ import annotations

import torch

from .data import Split
from .model import gradient_t, logits_t, one_hot, residuals_t


def _labels_t(split: Split, Wt: torch.Tensor) -> torch.Tensor:
    return one_hot(split.y_train, Wt.shape[-2], Wt.dtype).T


class MiniBatch:
    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        pass

    def epoch_start(self, Wt: torch.Tensor) -> None:
        pass

    def __call__(self, Wt, idx, Xb, Ybt) -> tuple[torch.Tensor, torch.Tensor]:
        Zt = logits_t(Wt, Xb)
        return gradient_t(residuals_t(Zt, Ybt), Xb, 1 / len(Xb)), Zt


class SVRG(MiniBatch):
    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        self.X, self.Yt = split.X_train, _labels_t(split, Wt)

    def epoch_start(self, Wt):
        self.snapshot = Wt.clone()
        self.full = gradient_t(residuals_t(logits_t(Wt, self.X), self.Yt), self.X, 1 / len(self.X))

    def __call__(self, Wt, idx, Xb, Ybt):
        Zt = logits_t(Wt, Xb)
        # R(W) - R(W~): the labels cancel
        Rt = torch.softmax(Zt, dim=-2) - torch.softmax(logits_t(self.snapshot, Xb), dim=-2)
        return gradient_t(Rt, Xb, 1 / len(Xb)) + self.full, Zt


class SAGA(MiniBatch):
    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        X = split.X_train
        self.n = len(X)
        self.table = residuals_t(logits_t(Wt, X), _labels_t(split, Wt))  # (K, C, N)
        self.mean = gradient_t(self.table, X, 1 / self.n)

    def __call__(self, Wt, idx, Xb, Ybt):
        Zt = logits_t(Wt, Xb)
        Rt = residuals_t(Zt, Ybt)
        step = gradient_t(Rt - self.table[..., idx], Xb)
        g = step / len(idx) + self.mean
        self.mean += step / self.n
        self.table[..., idx] = Rt
        return g, Zt


ESTIMATORS: dict[str, type[MiniBatch]] = {"svrg": SVRG, "saga": SAGA}
