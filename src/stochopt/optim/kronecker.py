"""What the Kronecker-factored rules (SOAP, Shampoo, Kron) share: one model's matrix in the
reference's orientation, and a walk over the K models of a block.

Softmax regression's Hessian is ``E[(diag p - p p^T) (x) x x^T]``, a Kronecker product in
expectation, so a preconditioner ``L (x) R`` built from ``G G^T`` (features x features) and
``G^T G`` (classes x classes) approximates Newton's step here. Its factorisations (eigh,
QR, SVD) act on each model's own matrices, so these rules go model by model for the linear
algebra, with each model's products written as the reference writes them on its one
(d, C) matrix: batched products differ from a lone ``mm`` in float64's last digits, and an
eigenbasis turns such digits into visible differences of the weights within a few dozen
steps (docs/plugins.md measured 0.05 in float32 for SOAP).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from .base import Hyper


def models(w: torch.Tensor) -> Iterator[tuple[int, tuple[int, ...]]]:
    """``(k, index)`` of each model of ``w``: the flat number k (as a hyperparameter
    tensor's ``flatten()`` orders them) and the index of its matrix, ``w[index]``; one 2-D
    matrix is the single model ``(0, ())``."""
    lead = w.shape[:-2]
    yield from enumerate(itertools.product(*map(range, lead)))


def matrix(x: torch.Tensor, index: tuple[int, ...]) -> torch.Tensor:
    """Model ``index``'s matrix in the reference's (d, C) orientation: of a 2-D (d, C)
    ``x``, itself; of the loop's (..., C, d), its transpose (a view)."""
    return x if x.dim() == 2 else x[index].mT


def value(h: Hyper, k: int) -> float:
    """Model k's value of a hyperparameter: a number as it is, else the k-th of the
    (S, m, 1, 1) tensor's values (in float64, exactly the number a run alone has)."""
    return float(h.flatten()[k]) if isinstance(h, torch.Tensor) else h
