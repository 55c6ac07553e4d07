"""The exercise's math: a linear softmax classifier ``logits = X @ W``.

Shapes broadcast over a leading configuration axis: ``W`` is ``(d, C)`` for one model or
``(K, d, C)`` for K models; ``X`` is ``(N, d)`` and is shared by all K. Every function
returns one value per model (a scalar, or a ``(K,)`` tensor).

    loss(W)      = -(1/N) sum_i  y*_i . log softmax(x_i W)
    gradient(W)  = -(1/N) X^T (Y* - softmax(XW))  =  (1/N) X^T R,   R = softmax(XW) - Y*
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def one_hot(y: torch.Tensor, n_classes: int = 10, dtype: torch.dtype = torch.float32
            ) -> torch.Tensor:
    """``Y*``: row i has a 1 in column ``y[i]`` and 0 elsewhere."""
    out = torch.zeros(*y.shape, n_classes, dtype=dtype, device=y.device)
    return out.scatter_(-1, y.unsqueeze(-1), 1)


# The training step works on the transposes, classes first: W^T (K, C, d), Z^T = W^T X^T
# (K, C, N), R^T and G^T = R^T X / N (K, C, d). The numbers are the same; this way the K
# models' class rows stack into one (K*C, d) matrix, so one matrix product serves all K, and
# the narrow side (C = 10) is the output's rows, a shape CPU BLAS runs 3-4x faster than
# ``X @ W``. The (d, C) functions below are views of these, not copies.

def logits_t(Wt: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Z^T = W^T X^T``: (C, N) for W^T (C, d); (K, C, N) for W^T (K, C, d)."""
    return torch.matmul(Wt, X.T)


def residuals_t(Zt: torch.Tensor, Yt: torch.Tensor) -> torch.Tensor:
    """``R^T = softmax(Z)^T - Y*^T``, the softmax taken over the classes (dim -2)."""
    return torch.softmax(Zt, dim=-2).sub_(Yt)


def gradient_t(Rt: torch.Tensor, X: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * R^T X``: (C, d) for R^T (C, N); (K, C, d) for R^T (K, C, N)."""
    G = torch.matmul(Rt, X)
    return G if scale == 1 else G.mul_(scale)


# A batch of S seeds x M configurations: W^T (S, M, C, d), and each seed its own mini-batch
# X_B (S, B, d). One batched product per seed folds its M models' class rows into one
# (M*C, d) matrix, as above; the S products are one bmm call.

class SeedBatch:
    """Each seed's mini-batch ``X_B`` (S, B, d) and its two products. The views the products
    read are made once per batch buffer, not per step: a K = 1 step is a few dozen calls,
    and every view is one of them."""

    def __init__(self, Xb: torch.Tensor) -> None:
        self.X = Xb
        self.size = Xb.shape[1]
        self.one = Xb.shape[0] == 1
        # one model's products at this batch size run on one thread (see ONE_THREAD_BATCH)
        self.serial = self.one and self.size <= ONE_THREAD_BATCH and Xb.device.type == "cpu"
        if self.one:  # one seed: a plain product, a few microseconds cheaper than bmm
            self._x, self._xt = Xb[0], Xb[0].T
        else:
            self._x, self._xt = Xb, Xb.mT

    def logits(self, Wt: torch.Tensor) -> torch.Tensor:
        """``Z^T`` (S, M, C, B) for W^T (S, M, C, d)."""
        S, M, C, d = Wt.shape
        if self.one:  # matmul folds (1, M, C, d) into one (M*C, d) product itself: the same
            # mm call without two Python-level views, a few microseconds of a K = 1 step
            if self.serial and M == 1:
                return one_thread(torch.matmul, Wt, self._xt)
            return torch.matmul(Wt, self._xt)
        return torch.bmm(Wt.reshape(S, M * C, d), self._xt).view(S, M, C, -1)

    def gradient(self, Rt: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scale * R^T X_B`` (S, M, C, d) for R^T (S, M, C, B)."""
        after = scale
        if scale != 1 and math.frexp(scale)[0] == 0.5:
            # 1/B for a power of two B scales exactly, so it goes on the residuals, B/d of
            # the gradient's entries, before the product, in every path alike (BLAS's alpha
            # gave other bits near the subnormal range, so a run in a batch of seeds
            # differed from itself alone); another scale rounds, and scales the result
            Rt, after = Rt * _number(scale, Rt), 1
        if self.one:  # as in logits: matmul folds R^T (1, M, C, B) into one (M*C, B)
            # product, without the views a batched call needs
            G = (one_thread(torch.matmul, Rt, self._x) if self.serial and Rt.shape[1] == 1
                 else torch.matmul(Rt, self._x))
        else:
            S, M, C, B = Rt.shape
            G = torch.bmm(Rt.reshape(S, M * C, B), self._x).view(S, M, C, -1)
        return G if after == 1 else G.mul_(_number(after, G))


# One model's products at a batch of at most this many examples run on one thread. Their
# output is small (10 x B logits), so MKL splits the long sum over the d pixels between the
# threads instead: on two cores the threads' meeting costs more than the product (16.7 us
# against 8.0 us on one thread for the logits at B = 32, 24.5 against 15.3 at 64), the next
# kernels find the result in the other core's cache, and the split sum rounds differently
# with every thread count. On one thread a one-model run is 1.21x faster at B = 32 and
# 1.11x at 64 (2-core Intel) and gives the same numbers on any number of threads. Larger
# products (more models, B > 128) gain from the threads and keep them.
ONE_THREAD_BATCH = 128


def one_thread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``f(*args)`` with torch's intra-op threads set to one (a sub-microsecond switch). The
    setting is the process's: stochopt never trains in two Python threads of one process,
    and a caller that does should set one thread itself."""
    n = torch.get_num_threads()
    if n == 1:
        return f(*args, **kwargs)
    torch.set_num_threads(1)
    try:
        return f(*args, **kwargs)
    finally:
        torch.set_num_threads(n)


def seed_logits_t(Wt: torch.Tensor, Xb: torch.Tensor) -> torch.Tensor:
    """``Z^T`` (S, M, C, B) for W^T (S, M, C, d) and per-seed batches X_B (S, B, d)."""
    return SeedBatch(Xb).logits(Wt)


def seed_gradient_t(Rt: torch.Tensor, Xb: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * R^T X_B`` (S, M, C, d) for R^T (S, M, C, B) and X_B (S, B, d)."""
    return SeedBatch(Xb).gradient(Rt, scale)


def seed_batch_gradient(Wt: torch.Tensor, Xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Each seed's mini-batch gradient ``(1/B) R^T X_B`` (S, M, C, d) at W^T (S, M, C, d),
    for batches X_B (S, B, d) with labels (S, B): the training step's own arithmetic, bit
    for bit (its one-hot labels, products and 1/B)."""
    batch = SeedBatch(Xb)
    Yt = one_hot(yb, Wt.shape[-2], Xb.dtype).mT.unsqueeze(1)  # (S, 1, C, B)
    return batch.gradient(residuals_t(batch.logits(Wt), Yt), 1 / batch.size)


# A Python number in an in-place kernel is first copied into a tensor of the operand's dtype
# (a few microseconds, a sizeable share of a K = 1 step); the same number as a ready 0-dim
# tensor gives the same bits without the copy.
_numbers: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _number(x: float, like: torch.Tensor) -> torch.Tensor:
    key = (x, like.dtype, like.device)
    if key not in _numbers:
        if len(_numbers) > 64:
            _numbers.clear()
        _numbers[key] = torch.tensor(x, dtype=like.dtype, device=like.device)
    return _numbers[key]


def logits(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``X @ W``: (N, C) for W (d, C); (K, N, C) for W (K, d, C). A transposed view of
    :func:`logits_t` (no copy when W is stored classes first, see :func:`zeros`)."""
    return logits_t(W.mT, X).mT


def xt_r(X: torch.Tensor, R: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * X^T R`` for R (N, C) or (K, N, C): a transposed view of :func:`gradient_t`."""
    return gradient_t(R.mT, X, scale).mT


def zeros(K: int, d: int, C: int, dtype: torch.dtype, device) -> torch.Tensor:
    """K zero models of shape (K, d, C), stored classes first (K, C, d): ``W.mT`` is W^T."""
    return torch.zeros(K, C, d, dtype=dtype, device=device).mT


def _classes_first(Z: torch.Tensor) -> bool:
    """True for a transposed view of class-major logits (what :func:`logits` returns):
    torch's kernels copy such a tensor before working along its last axis, which costs
    more than the softmax itself, so the functions below work along its memory order."""
    return Z.dim() >= 2 and Z.stride(-1) != 1 and Z.stride(-2) == 1


def _over_classes(f, Z: torch.Tensor) -> torch.Tensor:
    """``f(Z, dim)`` along the class axis, in the order Z lies in memory."""
    return f(Z.mT, dim=-2).mT if _classes_first(Z) else f(Z, dim=-1)


def log_softmax(Z: torch.Tensor) -> torch.Tensor:
    """``Z - logsumexp(Z)``, with the row max taken out before exponentiating so that large
    logits cannot overflow (torch's fused kernel for exactly this: one pass instead of six
    small ops, which is most of a mini-batch step's cost)."""
    return _over_classes(torch.log_softmax, Z)


def softmax(Z: torch.Tensor) -> torch.Tensor:
    """``exp(Z - max) / sum exp(Z - max)``, torch's fused kernel."""
    return _over_classes(torch.softmax, Z)


def _picked(A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A[..., i, y_i]`` for every row i (the true class's entry)."""
    return A.gather(-1, y.expand(*A.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def cross_entropy(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``Z`` against labels ``y``:
    ``-mean_i log softmax(z_i)[y_i]``."""
    return -_picked(log_softmax(Z), y).mean(dim=-1)


def accuracy(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose largest logit is the label (ties go to the lowest class)."""
    # max(...).indices: argmax along a strided axis is several times slower in torch
    predicted = Z.mT.max(dim=-2).indices if _classes_first(Z) else Z.argmax(dim=-1)
    return (predicted == y).to(Z.dtype).mean(dim=-1)


def loss(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return cross_entropy(logits(W, X), y)


def residuals(Z: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``R = softmax(Z) - Y*`` for the one-hot labels ``Y*`` (:func:`one_hot`): the
    per-example gradient of the loss with respect to the logits."""
    return softmax(Z).sub_(Y)


def gradient(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1/N) X^T (softmax(XW) - Y*)``: the analytic gradient of :func:`loss`."""
    return xt_r(X, residuals(logits(W, X), one_hot(y, W.shape[-1], X.dtype)), 1 / len(X))
