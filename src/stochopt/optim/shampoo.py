"""Shampoo (Gupta et al. 2018): the gradient preconditioned on each side by the inverse
fourth root of its accumulated second-moment factor, ``L^{-1/4} G R^{-1/4}``."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Interval, Setting
from .base import Reference, Rule, from_package
from .kronecker import matrix, models, value
from .registry import register


def inverse_root(m: torch.Tensor, power: float) -> torch.Tensor:
    """``m^{-1/power}`` of a symmetric positive definite m by its SVD (in float64 or
    float32, as the reference's ``compute_power_svd``)."""
    dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
    u, s, vh = torch.linalg.svd(m.to(dtype), full_matrices=False)
    s.pow_(-1.0 / power)
    return ((u * s.unsqueeze(-2)) @ vh).to(m.dtype)


@register
class Shampoo(Rule):
    """Shampoo (Gupta et al. 2018): ``g <- lerp(g, b, mu)`` (b: the last update, the first
    gradient at first), ``g <- g + wd w``; ``L <- L + g g^T``, ``R <- R + g^T g`` (from
    ``eps I``); ``u = L^{-1/4} g R^{-1/4}`` (the roots recomputed every
    ``preconditioning_compute_steps`` steps, zero before the first); ``b <- u ;
    w <- w - lr u``.

    As pytorch-optimizer 4.1.0's Shampoo: its momentum mixes the gradient with the last
    *preconditioned* update; ``weight_decouple`` shrinks w instead, ``w <- (1 - lr wd) w``
    (``fixed_decay``: ``(1 - wd) w``). Each model's roots come from its own factors.
    """

    name = "shampoo"

    landscape_lr = "scale_free"
    reference = Reference("pytorch_optimizer.Shampoo (4.1.0)",
                          from_package("pytorch_optimizer:Shampoo"),
                          values={"momentum": 0.9},
                          alongside={"weight_decouple": {"weight_decay": 0.05},
                                     "fixed_decay": {"weight_decouple": True,
                                                     "weight_decay": 0.05}},
                          features=100)
    default_schedule = "constant"
    lr = Setting(1e-3, POSITIVE, "base learning rate, scaled by the schedule")
    momentum = Setting(0.0, UNIT, "weight of the last update in the gradient")
    weight_decouple = Setting(False, help="decay the weights directly (AdamW's way)")
    fixed_decay = Setting(False, help="with weight_decouple: w <- (1 - wd) w, not lr-scaled")
    preconditioning_compute_steps = Setting(1, Interval(1, math.inf, integer=True),
                                            "steps between recomputations of the roots")
    matrix_eps = Setting(1e-6, NON_NEGATIVE, "the factors start at eps I")
    weight_decay = Setting(0.0, NON_NEGATIVE, "L2 penalty: wd w added to the mixed gradient "
                           "(or, with weight_decouple, a decay of w)")

    @classmethod
    def decouples(cls, values):
        return bool(values.get("weight_decouple", False))

    def init(self, w: torch.Tensor) -> dict[str, Any]:
        return {"t": 0, "models": []}  # per model, created at its first gradient

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr)  # the decay goes in after the momentum: inside

    def update(self, w, g, state, lr):
        t = state["t"]
        for k, index in models(w):
            # the reference's p.grad, laid out as the loop's (C, d) row transposed; its own
            # copy, as the reference mixes the momentum into p.grad in place
            G = matrix(g, index).clone()
            if t == 1:
                eps = value(self.matrix_eps, k)
                state["models"].append({
                    "b": G.clone(),
                    "factors": [torch.eye(n, device=G.device).to(G.dtype).mul_(eps)
                                for n in G.shape],
                    "roots": [G.new(n, n).zero_() for n in G.shape]})
            own = state["models"][k]
            W, lr_k = matrix(w, index), value(lr, k)
            mu = value(self.momentum, k)
            if mu > 0.0:
                G.lerp_(own["b"], weight=mu)
            wd = value(self.weight_decay, k)
            if wd != 0.0:
                if self.weight_decouple:
                    W.mul_(1.0 - wd * (1.0 if self.fixed_decay else lr_k))
                else:
                    G.add_(W, alpha=wd)
            u = self._precondition(G, own, t % value(self.preconditioning_compute_steps, k)
                                   == 0)
            own["b"] = u
            W.add_(u, alpha=-lr_k)

    @staticmethod
    def _precondition(G: torch.Tensor, own: dict[str, Any], recompute: bool) -> torch.Tensor:
        """``L^{-1/4} G R^{-1/4}`` after adding ``G G^T`` and ``G^T G`` to the factors,
        dimension by dimension as the reference goes (its reshapes and copies, which set
        the layouts its products see)."""
        order, size, u = G.dim(), G.size(), G
        for i, n in enumerate(G.size()):
            factor, root = own["factors"][i], own["roots"][i]
            unfolded = G.movedim(i, 0).reshape(n, -1)
            factor.addmm_(unfolded, unfolded.t())
            u = u.transpose(0, i).contiguous()
            moved = u.size()
            u = u.view(n, -1)
            if recompute:
                root.copy_(inverse_root(factor, 2 * order))
            u = (u.t() @ root).view(size) if i == order - 1 else (root @ u).view(moved)
        return u
