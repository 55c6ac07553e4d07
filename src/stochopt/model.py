"""The exercise's math: a linear softmax classifier ``logits = X @ W``.

Shapes broadcast over a leading configuration axis: ``W`` is ``(d, C)`` for one model or
``(K, d, C)`` for K models; ``X`` is ``(N, d)`` and is shared by all K. Every function
returns one value per model (a scalar, or a ``(K,)`` tensor).

    loss(W)      = -(1/N) sum_i  y*_i . log softmax(x_i W)
    gradient(W)  = -(1/N) X^T (Y* - softmax(XW))  =  (1/N) X^T R,   R = softmax(XW) - Y*
"""

from __future__ import annotations

import torch


def one_hot(y: torch.Tensor, n_classes: int = 10, dtype: torch.dtype = torch.float32
            ) -> torch.Tensor:
    """``Y*``: row i has a 1 in column ``y[i]`` and 0 elsewhere."""
    out = torch.zeros(*y.shape, n_classes, dtype=dtype, device=y.device)
    return out.scatter_(-1, y.unsqueeze(-1), 1)


def logits(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``X @ W``: (N, C) for W (d, C); (K, N, C) for W (K, d, C).

    Computed as ``(W^T X^T)^T`` with the K models' class rows stacked, ``(K*C, d) @ (d, N)``:
    one matrix product for all K, and with the narrow side (C = 10) as the output's rows,
    which CPU BLAS runs 3-4x faster than ``X @ W``. The result is a transposed view; when W
    is stored as (K, C, d) (see :func:`zeros`), no copy is made at all.
    """
    Wt = W.transpose(-1, -2)
    Zt = Wt.reshape(-1, Wt.shape[-1]) @ X.T
    return Zt.view(*Wt.shape[:-1], -1).transpose(-1, -2)


def xt_r(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``X^T R`` for R (N, C) or (K, N, C), as ``(R^T X)^T`` for the same reason as
    :func:`logits`."""
    Rt = R.transpose(-1, -2)
    G = Rt.reshape(-1, Rt.shape[-1]) @ X
    return G.view(*Rt.shape[:-1], -1).transpose(-1, -2)


def zeros(K: int, d: int, C: int, dtype: torch.dtype, device) -> torch.Tensor:
    """K zero models of shape (K, d, C), stored class-major (K, C, d) so that
    :func:`logits` and :func:`xt_r` need no copies."""
    return torch.zeros(K, C, d, dtype=dtype, device=device).transpose(1, 2)


def log_softmax(Z: torch.Tensor) -> torch.Tensor:
    """``Z - logsumexp(Z)``, with the row max taken out before exponentiating so that large
    logits cannot overflow (torch's fused kernel for exactly this: one pass instead of six
    small ops, which is most of a mini-batch step's cost)."""
    return torch.log_softmax(Z, dim=-1)


def softmax(Z: torch.Tensor) -> torch.Tensor:
    """``exp(Z - max) / sum exp(Z - max)``, torch's fused kernel."""
    return torch.softmax(Z, dim=-1)


def _picked(A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A[..., i, y_i]`` for every row i (the true class's entry)."""
    return A.gather(-1, y.expand(*A.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def cross_entropy(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``Z`` against labels ``y``:
    ``-mean_i log softmax(z_i)[y_i]``."""
    return -_picked(log_softmax(Z), y).mean(dim=-1)


def accuracy(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose largest logit is the label (ties go to the lowest class)."""
    return (Z.argmax(dim=-1) == y).to(Z.dtype).mean(dim=-1)


def loss(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return cross_entropy(logits(W, X), y)


def residuals(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``R = softmax(Z) - Y*``, the per-example gradient of the loss with respect to the logits."""
    R = softmax(Z)
    R.scatter_add_(-1, y.expand(*R.shape[:-1]).unsqueeze(-1),
                   torch.full_like(R[..., :1], -1.0))
    return R


def gradient(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1/N) X^T (softmax(XW) - Y*)``: the analytic gradient of :func:`loss`."""
    return xt_r(X, residuals(logits(W, X), y)) / len(X)
