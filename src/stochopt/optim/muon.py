"""Muon (Jordan et al. 2024; torch.optim.Muon): momentum whose update is orthogonalised.

    m <- lerp(m, g, 1 - mu) ;  u = lerp(g, m, mu) (Nesterov) or m
    O = NewtonSchulz5(u)                     ~ U V^T of u = U S V^T, in bfloat16
    w <- (1 - lr wd) w - lr sqrt(max(1, A/B)) O

It depends on W's shape: the lr factor sqrt(max(1, A/B)) takes (A, B) = (784, 10) (features
x classes, the bias row included), W as the exercise shapes it, whatever the loop's layout;
Newton-Schulz works on the wide orientation (10 x 784), as torch's does after transposing.
"""

from __future__ import annotations

import math

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Interval, Setting
from .base import Reference, Rule, from_package, is_zero
from .registry import register

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch's, chosen for a steep slope at zero


def newton_schulz(u: torch.Tensor, steps: int, eps: float) -> torch.Tensor:
    """torch's quintic Newton-Schulz iteration in bfloat16, for a wide (..., r, c) matrix
    (r <= c); one 2-D matrix takes torch's exact calls, a stack of them the batched ones."""
    a, b, c = NS_COEFFICIENTS
    X = u.bfloat16()
    if X.dim() == 2:
        X.div_(X.norm().clamp(min=eps))
        for _ in range(steps):
            A = X @ X.T
            X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
        return X
    shape = X.shape
    X = X.reshape(-1, *shape[-2:])
    if isinstance(eps, torch.Tensor):  # one per model (S, m, 1, 1): as X's stack of them
        eps = eps.to(X.dtype).reshape(-1, 1, 1)
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        A = X @ X.mT
        X = torch.baddbmm(X, torch.baddbmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X.reshape(shape)


@register
class Muon(Rule):
    """Muon (Jordan et al. 2024): ``m <- lerp(m, g, 1 - mu) ; w <- (1 - lr wd) w - lr
    sqrt(max(1, A/B)) NS(lerp(g, m, mu))`` with NS the Newton-Schulz orthogonalisation
    (bfloat16), for W of shape (A, B) = (784, 10); decoupled decay, as torch.optim.Muon."""

    name = "muon"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.Muon", from_package("torch.optim:Muon"))
    default_schedule = "constant"
    decoupled_decay = True
    lr = Setting(1e-3, POSITIVE, "base learning rate (times sqrt(max(1, A/B)))")
    momentum = Setting(0.95, UNIT, "momentum mu")
    nesterov = Setting(True, None, "Nesterov's look-ahead: orthogonalise lerp(g, m, mu)")
    ns_steps = Setting(5, Interval(1, 99, integer=True), "Newton-Schulz iterations")
    eps = Setting(1e-7, POSITIVE, "floor of the norm that scales the update")
    weight_decay = Setting(0.1, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w)}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr)  # the decay goes in inside, as torch's

    def update(self, w, g, state, lr):
        m = state["m"].lerp_(g, 1 - self.momentum)
        u = g.lerp(m, self.momentum) if self.nesterov else m
        # the exercise's orientation (A, B) = (features, classes): a (d, C) matrix as given,
        # the loop's (..., C, d) transposed; Newton-Schulz on the wide one of the two
        exercise = u if w.dim() == 2 else u.mT
        A, B = exercise.shape[-2:]
        ortho = newton_schulz(exercise.mT if A > B else exercise, self.ns_steps, self.eps)
        ortho = ortho.mT if A > B else ortho
        ortho = ortho if w.dim() == 2 else ortho.mT
        if not is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        scale = lr * math.sqrt(max(1, A / B))
        if isinstance(scale, torch.Tensor):
            w.sub_(ortho * scale)
        else:
            w.add_(ortho, alpha=-scale)
