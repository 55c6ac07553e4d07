"""SOAP (Vyas et al. 2024): Adam run in the eigenbasis of Shampoo's preconditioner, the basis
refreshed by one step of power iteration every few steps."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..model import seed_batch_gradient
from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Interval, Setting
from .base import Reference, Rule, StepBatch, from_package, is_zero, sqrt, with_betas
from .kronecker import matrix, models, value
from .registry import register


def _reference(params, **settings):
    return with_betas(from_package("pytorch_optimizer:SOAP"))(params, **settings)


def project(x: torch.Tensor, Q: list[torch.Tensor | None], back: bool = False
            ) -> torch.Tensor:
    """``Q_0^T x Q_1`` (``back``: ``Q_0 x Q_1^T``) for one (d, C) matrix, as the reference's
    ``tensordot`` computes it; a factor that is not preconditioned (None) is the identity."""
    for q in Q:
        x = torch.tensordot(x, q, dims=[[0], [1 if back else 0]]) if q is not None \
            else x.permute(1, 0)
    return x


def alone_gradient(w: torch.Tensor, batch: StepBatch, index: tuple[int, ...]) -> torch.Tensor:
    """Model ``index`` = (s, j)'s gradient on its seed's batch, as the loop computes it for
    that model alone, in the reference's (d, C) orientation (a transposed view)."""
    s, j = index
    return seed_batch_gradient(w[s:s + 1, j:j + 1], batch.X[s:s + 1],
                               batch.y[s:s + 1])[0, 0].mT


def eigenbasis(m: torch.Tensor) -> torch.Tensor:
    """The eigenvectors of the statistic ``m``, largest eigenvalue first (float64 if its
    own dtype's eigh fails, as the reference does)."""
    eye = torch.eye(m.shape[0], device=m.device, dtype=m.dtype)
    try:
        _, q = torch.linalg.eigh(m + 1e-30 * eye)
    except RuntimeError:  # eigh did not converge in the statistic's dtype
        _, q = torch.linalg.eigh(m.double() + 1e-30 * eye.double())
        q = q.to(m.dtype)
    return torch.flip(q, dims=[1])


@register
class SOAP(Rule):
    """SOAP (Vyas et al. 2024): with G the (d, C) gradient, ``L <- lerp(L, G G^T, 1 - b_s)``,
    ``R <- lerp(R, G^T G, 1 - b_s)`` and ``Q_L, Q_R`` their eigenbases;
    ``m <- lerp(m, G, 1 - b1) ;  v <- lerp(v, (Q_L^T G Q_R)^2, 1 - b2)``;
    ``w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) Q_L [(Q_L^T m Q_R) / (sqrt(v) + eps)] Q_R^T``;
    ``w <- (1 - lr wd) w``.

    As pytorch-optimizer 4.1.0's SOAP (which follows the authors' nikhilvyas/SOAP): the first
    step only gathers L and R and takes their eigenbases (eigh); t counts from the second;
    every ``precondition_frequency`` steps the bases are refreshed by one power-iteration
    step, ``Q <- qr(L Q)`` (in float32) with v's entries reordered as the estimated
    eigenvalues; a dimension longer than ``max_precondition_dim`` keeps the identity; the
    decay is decoupled. Each model's linear algebra runs on its own matrices.
    """

    name = "soap"

    landscape_lr = "scale_free"
    reference = Reference("pytorch_optimizer.SOAP (4.1.0)", _reference,
                          values={"max_precondition_dim": 100}, features=196)
    default_schedule = "constant"
    decoupled_decay = True
    lr = Setting(3e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1 = Setting(0.95, UNIT, "decay of the gradient's average")
    beta2 = Setting(0.95, UNIT, "decay of the second moment in the eigenbasis")
    shampoo_beta = Setting(0.95, UNIT, "decay of the statistics G G^T and G^T G (the "
                           "reference's default, None, is beta2's 0.95)")
    precondition_frequency = Setting(10, Interval(1, math.inf, integer=True),
                                     "steps between refreshes of the eigenbases")
    max_precondition_dim = Setting(10000, Interval(1, math.inf, integer=True),
                                   "a longer dimension is not preconditioned")
    correct_bias = Setting(True, help="Adam's bias correction of the step size")
    normalize_gradient = Setting(False, help="divide the step by its RMS")
    eps = Setting(1e-8, NON_NEGATIVE, "added to sqrt(v)")
    weight_decay = Setting(1e-2, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")

    def init(self, w: torch.Tensor) -> dict[str, Any]:
        # per model, created at its first gradient: m, v, the statistics L, R and their
        # bases, each laid out as the reference's (zeros_like the gradient, then what its
        # products return), since the layout of a product's operands sets its last digits
        return {"t": 0, "models": []}

    # the step's examples (a StepBatch), for each model's gradient as it is alone (update)
    needs_loss = True

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr, batch)  # the decay is decoupled: it goes in inside

    def update(self, w, g, state, lr, batch=None):
        t = state["t"] - 1  # the reference's step: 0 at the first gradient, which moves nothing
        # In a batch of models the loop's batched products give each model's gradient other
        # last digits than the model has alone, and SOAP's first eigenbasis (of a statistic
        # of rank at most C - 1, its null space's vectors as eigh picks them) turns those
        # into 5e-2 of the weights within 10 steps. So each model's gradient is taken again,
        # as the loop takes it for one model alone (a (B, d) x (d, C) product pair: little
        # beside SOAP's d x d work), and a run in a batch equals the run alone. Sample
        # weights are in the loop's gradient only: with them, its gradient is used.
        again = (batch is not None and batch.X is not None and w.dim() == 4
                 and w.shape[0] * w.shape[1] > 1 and not self.context.get("weighted"))
        for k, index in models(w):
            # the loop's (C, d) row transposed, as a reference's p.grad
            G = alone_gradient(w, batch, index) if again else matrix(g, index)
            if t == 0:
                state["models"].append(self._start(G, k))
            own = state["models"][k]
            if t > 0:
                self._adam(matrix(w, index), k, G, own, lr, t)
            self._statistics(G, own["stats"], value(self.shampoo_beta, k))
            if t == 0:
                own["bases"] = [eigenbasis(s) if s is not None else None for s in own["stats"]]
            elif t % value(self.precondition_frequency, k) == 0:
                self._refresh(own)

    def _start(self, G: torch.Tensor, k: int) -> dict[str, Any]:
        """Model k's state: zero moments shaped (and laid out) as G, a zero statistic for
        each dimension it preconditions (None for a longer one)."""
        long = value(self.max_precondition_dim, k)
        return {"m": torch.zeros_like(G), "v": torch.zeros_like(G),
                "stats": [G.new_zeros(n, n) if n <= long else None for n in G.shape]}

    def _adam(self, W, k, G, own, lr, t) -> None:
        """Adam's step in the eigenbasis, then the decoupled decay (the reference's order)."""
        b1, b2, eps = (value(h, k) for h in (self.beta1, self.beta2, self.eps))
        lr_k = value(lr, k)
        step_size = lr_k
        if self.correct_bias:
            step_size *= math.sqrt(1 - b2**t) / (1 - b1**t)
        m, v, Q = own["m"], own["v"], own["bases"]
        v.lerp_(project(G, Q).square(), weight=1.0 - b2)
        m.lerp_(G, weight=1.0 - b1)
        denom = sqrt(v).add_(eps)
        u = project(project(m, Q) / denom, Q, back=True)
        if self.normalize_gradient:
            u.div_(torch.mean(u.square()).sqrt_().add_(eps))
        W.add_(u, alpha=-step_size)
        wd = value(self.weight_decay, k)
        if not is_zero(wd):
            W.mul_(1.0 - wd * lr_k)

    @staticmethod
    def _statistics(G: torch.Tensor, stats: list[torch.Tensor | None], beta: float) -> None:
        """``L <- lerp(L, G G^T, 1 - beta)``, ``R <- lerp(R, G^T G, 1 - beta)``."""
        for i, s in enumerate(stats):
            if s is not None:
                other = [1 - i]
                s.lerp_(torch.tensordot(G, G, dims=[other, other]), weight=1.0 - beta)

    @staticmethod
    def _refresh(own: dict[str, Any]) -> None:
        """One power-iteration step per preconditioned factor, ``Q <- qr(S Q)`` with the
        columns sorted by the estimated eigenvalues ``diag(Q^T S Q)``, largest first, and
        v's entries reordered to match (the QR in float32, as the reference's)."""
        v = own["v"]
        for i, (s, q) in enumerate(zip(own["stats"], own["bases"], strict=True)):
            if s is None:
                continue
            product = s @ q
            order = torch.argsort((q * product).sum(dim=0), descending=True)
            v = v.index_select(i, order)
            new, _ = torch.linalg.qr(product.index_select(1, order).to(torch.float32))
            own["bases"][i] = new.to(q.dtype)
        own["v"] = v
