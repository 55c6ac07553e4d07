"""Gradient estimators: what the training loop feeds the update rule at each step.

* :class:`MiniBatch` -- the plain mini-batch gradient ``g = (1/B) X_B^T R_B``.
* :class:`SVRG` (Johnson & Zhang, 2013) -- ``g = grad_B(W) - grad_B(W~) + grad(W~)`` with a
  snapshot ``W~`` and its full gradient taken at the start of every epoch.
* :class:`SAGA` (Defazio et al., 2014) -- keeps the last gradient seen for every example;
  ``g = (1/B) sum_{i in B} (g_i(W) - g_i^old) + mean_j g_j^old``.

For softmax regression the per-example gradient is ``x_i r_i^T`` with ``r_i = softmax(x_i W)
- y_i``, so SAGA's table holds N x C residuals, not N x d x C gradients, and its mean is
``(1/N) X^T R_table``.

Like the training loop, estimators work on transposes, classes first, for S seeds x M
configurations (see :mod:`.model`): called with ``W^T`` (S, M, C, d), each seed's batch
indices ``idx`` (S, B), examples ``X_B`` (S, B, d) as a :class:`~.model.SeedBatch` (which
makes their products) and one-hot labels ``Y*_B^T`` (S, 1, C, B), they return ``(G^T, Z^T)``:
the gradient (S, M, C, d) and the batch logits at ``W`` (S, M, C, B), which the loop may
reuse for the step's metrics.
"""

from __future__ import annotations

import torch

from .data import Split
from .errors import StochoptError
from .model import SeedBatch, gradient_t, logits_t, one_hot, residuals_t


def _full_residuals_t(split: Split, Wt: torch.Tensor) -> torch.Tensor:
    """``R^T`` (S, M, C, N) over the whole training split."""
    Yt = one_hot(split.y_train, Wt.shape[-2], Wt.dtype).T
    return residuals_t(logits_t(Wt, split.X_train), Yt)


class MiniBatch:
    # per-example gradient evaluations, in passes over the N training examples: each epoch,
    # and once before the first (the grad_evals column, what SVRG and SAGA cost)
    passes_per_epoch = 1
    initial_passes = 0

    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        self.weight = split.sample_weight  # (N,), mean 1, or None

    def epoch_start(self, Wt: torch.Tensor) -> None:
        pass

    def grad_evals(self, n: int, epoch: int, seen: int) -> int:
        """Per-example gradient evaluations after ``seen`` examples of epoch ``epoch``
        (0-based): the grad_evals column, at an epoch's end (seen = n) or inside it."""
        return n * (self.initial_passes + epoch * self.passes_per_epoch) + \
            seen * self.passes_per_epoch

    def __call__(self, Wt: torch.Tensor, idx: torch.Tensor, Xb: SeedBatch, Ybt: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        Zt = Xb.logits(Wt)
        Rt = residuals_t(Zt, Ybt)
        if self.weight is not None:  # the weighted loss: each example's residual scaled
            Rt.mul_(self.weight[idx].unsqueeze(1).unsqueeze(1))
        return Xb.gradient(Rt, 1 / Xb.size), Zt


def _unweighted(split: Split, name: str) -> None:
    if split.sample_weight is not None:
        raise StochoptError(f"{name} does not take sample weights; use a mini-batch optimizer")


class SVRG(MiniBatch):
    passes_per_epoch = 3  # the snapshot's full gradient, then each batch at W and at W~

    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        _unweighted(split, "svrg")
        self.split = split

    def grad_evals(self, n: int, epoch: int, seen: int) -> int:
        # the snapshot's full gradient at the epoch's start, then each example twice
        return n * self.passes_per_epoch * epoch + n + 2 * seen

    def epoch_start(self, Wt):
        self.snapshot = Wt.clone()
        X = self.split.X_train
        self.full = gradient_t(_full_residuals_t(self.split, Wt), X, 1 / len(X))

    def __call__(self, Wt, idx, Xb, Ybt):
        Zt = Xb.logits(Wt)
        # R(W) - R(W~): the labels cancel
        Rt = torch.softmax(Zt, dim=-2) - torch.softmax(Xb.logits(self.snapshot), dim=-2)
        return Xb.gradient(Rt, 1 / Xb.size) + self.full, Zt


class SAGA(MiniBatch):
    initial_passes = 1  # the table of every example's gradient at W = 0

    def __init__(self, split: Split, Wt: torch.Tensor) -> None:
        _unweighted(split, "saga")
        X = split.X_train
        self.n = len(X)
        self.table = _full_residuals_t(split, Wt)  # (S, M, C, N)
        self.mean = gradient_t(self.table, X, 1 / self.n)

    def __call__(self, Wt, idx, Xb, Ybt):
        Zt = Xb.logits(Wt)
        Rt = residuals_t(Zt, Ybt)
        where = idx[:, None, None, :].expand_as(Rt)  # each seed's examples in its table
        step = Xb.gradient(Rt - self.table.gather(-1, where))
        g = step / idx.shape[1] + self.mean
        self.mean += step / self.n
        self.table.scatter_(-1, where, Rt)
        return g, Zt


class MARS(MiniBatch):
    """The mini-batch gradient; MARS's rule also takes the batch's gradient at the previous
    weights (:mod:`stochopt.optim.mars`), so every example is read twice per epoch."""

    passes_per_epoch = 2


ESTIMATORS: dict[str, type[MiniBatch]] = {"minibatch": MiniBatch, "svrg": SVRG, "saga": SAGA,
                                          "mars": MARS}
