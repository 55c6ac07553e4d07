"""PSGD Kron (Li 2018; Li et al. 2024): a Kronecker-factored preconditioner ``P = Q^T Q``,
``Q = Q_1 (x) Q_2`` with triangular factors, fitted by a step of its own each time so that
``P`` whitens the gradient's noise, from random probe vectors."""

from __future__ import annotations

import math
import random
import string
from typing import Any

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Interval, Setting
from .base import Reference, Rule, from_package
from .kronecker import matrix, models, value
from .registry import register

BALANCE_SEED = 42  # the reference's own random.Random(42): when to rebalance the factors


class KronEager:
    """kron-torch 0.3.3's Kron with ``torch.compile`` off: its step's functions run as the
    eager torch operations they are written in (the compiled ones fuse them, which changes
    the last digits; compiling also needs a C compiler and a minute)."""

    def __init__(self, params, precond_float64: bool, preconditioner_update_probability: float,
                 **settings) -> None:
        self.inner = from_package("kron_torch:Kron")(
            params, precond_dtype=torch.float64 if precond_float64 else None,
            preconditioner_update_probability=preconditioner_update_probability or None,
            **settings)

    def step(self) -> None:
        with torch._dynamo.config.patch(disable=True):
            self.inner.step()


def update_probability(n: int) -> torch.Tensor:
    """The reference's default schedule of the update probability (float32, as it computes
    it): 1 for 500 steps, then ``exp(-0.001 (n - 500))``, never below 0.03."""
    top, bottom, decay, flat = (torch.tensor(x, dtype=torch.float32)
                                for x in (1.0, 0.03, 0.001, 500.0))
    n32 = torch.tensor(n, dtype=torch.int32).to(dtype=torch.float32)
    return (top * torch.exp(-decay * (n32 - flat))).clamp_(min=bottom, max=top)


def expressions(shape: torch.Size, triangular: list[bool]) -> tuple[str, list[str], str]:
    """The einsum expressions of a tensor of ``shape`` whose dimension i has a triangular
    factor (else a diagonal one): ``A = Q G`` along every dimension, each factor's
    statistic ``X X^T`` along its dimension, and the preconditioned ``Q^T Q G``."""
    letters = string.ascii_lowercase + string.ascii_uppercase
    a, b, c = (letters[: len(shape)], letters[13: 13 + len(shape)],
               letters[26: 26 + len(shape)])
    factors, inner, stats, left, right, last = [], "", [], [], [], ""
    for i, tri in enumerate(triangular):
        along = a[:i] + b[i] + a[i + 1:]
        if tri:
            factors.append(a[i] + b[i])
            inner += b[i]
            stats.append(f"{along},{a[:i] + c[i] + a[i + 1:]}->{b[i]}{c[i]}")
            left.append(a[i] + b[i])
            right.append(a[i] + c[i])
            last += c[i]
        else:
            factors.append(a[i])
            inner += a[i]
            stats.append(f"{along},{along}->{b[i]}")
            left.append(b[i])
            right.append(b[i])
            last += b[i]
    return (",".join(factors) + "," + inner + "->" + a, stats,
            ",".join(left) + "," + ",".join(right) + "," + last + "->" + b)


def _spectral_lower_bound(A: torch.Tensor, max_abs: torch.Tensor) -> torch.Tensor:
    """A cheap lower bound of ``|A|_2`` (one power-iteration step from A's largest
    column); divides A by ``max_abs`` in place, as the reference does."""
    A /= max_abs
    i = torch.argmax(torch.einsum("ij,ij->j", A, A))
    x = torch.index_select(A, 1, i).flatten().contiguous()
    x = torch.einsum("i,ij->j", x, A)
    x /= x.norm()
    x = torch.einsum("j,kj->k", x, A).norm()
    x *= max_abs
    return x


def _solve_right(X: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``X Q^{-1}`` for an upper triangular Q, in float32 (as the reference)."""
    return torch.linalg.solve_triangular(
        Q.float(), X.reshape(-1, X.size(-1)).float(), upper=True, left=False,
        unitriangular=False).to(dtype=Q.dtype).reshape_as(X)


def fit_preconditioner(Q: list[torch.Tensor], exprs: tuple[str, list[str], str],
                       G: torch.Tensor, lr: torch.Tensor, tiny: torch.Tensor,
                       generator: torch.Generator) -> None:
    """One step on each factor of Q towards ``P E[h h^T] P = E[v v^T]``, with the probe
    ``v ~ N(0, I)`` and ``h = G + sqrt(eps) mean|G| v`` (G perturbed in place): the
    triangular part of ``(A A^T - B B^T)`` along each dimension, ``A = Q h`` and
    ``B = Q^{-T} v``, normalised by a lower bound of ``|A A^T + B B^T|``."""
    exprA, exprGs, _ = exprs
    V = torch.empty_like(G).normal_(generator=generator)  # as randn_like: in G's layout
    eps = torch.tensor(torch.finfo(torch.float32).eps, dtype=G.dtype, device=G.device)
    G += eps.sqrt() * G.abs().mean() * V
    order = G.dim()
    conjB = V.permute(*range(1, order), 0)
    for i, q in enumerate(Q):
        conjB = conjB / q if q.dim() < 2 else _solve_right(conjB, q)
        if i < order - 1:
            conjB = torch.transpose(conjB, i, order - 1)
    A = torch.einsum(exprA, *Q, G)
    for q, exprG in zip(Q, exprGs, strict=True):
        term1 = torch.einsum(exprG, A, A)
        term2 = torch.einsum(exprG, conjB, conjB)
        term1, term2 = term1 - term2, term1 + term2
        term1 *= lr
        norm = term2.norm(float("inf"))
        if q.dim() < 2:
            term1 *= q / norm.clamp_(min=tiny)
        else:
            torch.triu(term1, out=term1)
            term1 /= torch.where(norm > 0, _spectral_lower_bound(term2, norm), norm
                                 ).clamp_(min=tiny)
            term1 = torch.mm(term1, q)
        q.sub_(term1)


def balance(Q: list[torch.Tensor]) -> None:
    """Rescale the factors to the geometric mean of their max-norms (their product stays)."""
    norms = torch.stack([q.norm(float("inf")) for q in Q])
    scale = norms.log().mean().exp() / norms
    for q, s in zip(Q, scale, strict=True):
        q.mul_(s)


def clip_rms(u: torch.Tensor) -> torch.Tensor:
    """``u <- u min(1, 1.1 / RMS(u))``, in place."""
    return u.mul_(torch.minimum(torch.tensor(1.0, dtype=u.dtype, device=u.device),
                                1.1 / u.square().mean().sqrt().add(1e-12)))


@register
class Kron(Rule):
    """PSGD Kron (Li 2018; Li et al. 2024): ``m <- b1 m + (1 - b1) g ;  m_hat = m / (1 -
    b1^t)``; with probability p, one step of the factors ``Q_i`` (upper triangular, or
    diagonal for a dimension longer than ``max_size_triangular``) towards whitening
    ``m_hat``'s noise (:func:`fit_preconditioner`); ``u = clip_rms(Q^T Q m_hat)`` along
    both dimensions; ``w <- w - lr (u + wd w)``.

    As its authors' kron-torch 0.3.3 (``torch.compile`` off): the probes ``v`` come from a
    generator seeded with the run's seed, in the reference's order, so the reference after
    ``torch.manual_seed(seed)`` draws the same; p = 0 is the reference's schedule (1 for
    500 steps, then down to 0.03 by about 4,000), updates coming deterministically every
    1/p steps; about one update in a hundred rebalances the factors (the reference's own
    ``random.Random(42)``). The factors are float32 unless ``precond_float64``.
    """

    name = "kron"

    landscape_lr = "scale_free"
    reference = Reference("kron_torch.Kron (0.3.3, torch.compile off)", KronEager,
                          values={"max_size_triangular": 100,
                                  "preconditioner_update_probability": 0.5},
                          features=196)
    default_schedule = "constant"
    decoupled_decay = True
    lr = Setting(3e-4, POSITIVE, "base learning rate, scaled by the schedule")
    b1 = Setting(0.9, UNIT, "momentum")
    preconditioner_update_probability = Setting(
        0.0, Interval(0, 1), "chance of a preconditioner step; 0: the reference's schedule")
    max_size_triangular = Setting(8192, Interval(1, math.inf, integer=True),
                                  "a longer dimension gets a diagonal factor")
    min_ndim_triangular = Setting(2, Interval(1, math.inf, integer=True),
                                  "a tensor with fewer dimensions gets diagonal factors")
    momentum_into_precond_update = Setting(True, help="fit the preconditioner to the "
                                                      "momentum (else to the gradient)")
    precond_lr = Setting(0.1, POSITIVE, "step size of the preconditioner's fit")
    precond_init_scale = Setting(1.0, POSITIVE, "initial scale of Q")
    precond_float64 = Setting(False, help="the factors in float64 (the reference's "
                                          "precond_dtype); default float32")
    weight_decay = Setting(0.0, NON_NEGATIVE, "decoupled decay: w <- w - lr wd w")

    def init(self, w: torch.Tensor) -> dict[str, Any]:
        # per model, created at its first gradient (laid out as it); the balance draws are
        # shared: every model's reference instance draws from its own Random(42) alike
        return {"t": 0, "models": []}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr)  # the decay is decoupled: it goes in inside

    def _draw(self, state: dict[str, Any]) -> float:
        """This step's draw of the reference's ``Random(42)`` (whether to rebalance)."""
        # the state keeps only the step count (a checkpoint holds numbers): the generator
        # is replayed to it when the instance's own does not follow
        draws, drawn = getattr(self, "_draws", (None, -1))
        if drawn != state["t"] - 1:
            draws = random.Random(BALANCE_SEED)
            for _ in range(state["t"] - 1):
                draws.random()
        self._draws = (draws, state["t"])
        return draws.random()

    def _updates(self, own: dict[str, Any], k: int, t: int) -> bool:
        """Whether model k fits its preconditioner at step t, as the reference decides: its
        update counter against 1/p (p: the setting, or the schedule when 0)."""
        p = value(self.preconditioner_update_probability, k)
        p = p if p else update_probability(t - 1)
        own["counter"] += 1
        update = bool(torch.tensor(own["counter"], dtype=torch.int32) >= 1 / p)
        if update:
            own["counter"] = 0
        return update

    def update(self, w, g, state, lr):
        draw = self._draw(state)
        dtype = torch.float64 if self.precond_float64 else torch.float32
        seeds = self.context.get("seeds", [self.context.get("seed", 0)])
        per_seed = max(1, math.prod(w.shape[:-2]) // len(seeds))
        for k, index in models(w):
            G = matrix(g, index)  # the loop's (C, d) row transposed, as a reference's p.grad
            if len(state["models"]) <= k:
                state["models"].append(self._start(G, dtype, seeds[k // per_seed], k))
            own = state["models"][k]
            own["step"] += 1
            update = self._updates(own, k, state["t"])
            b1 = value(self.b1, k)
            mu = own["mu"].mul_(b1).add_(G, alpha=1 - b1)
            m_hat = (mu / (1 - b1 ** own["step"])).to(dtype=dtype)
            Q = own["Q"]
            if G.dim() > 1 and draw < 0.01 and update:
                balance(Q)
            if update:
                generator = torch.Generator(device=G.device)
                generator.set_state(own["generator"])
                fit_preconditioner(
                    Q, own["exprs"], m_hat if self.momentum_into_precond_update else
                    G.to(dtype=dtype), torch.tensor(value(self.precond_lr, k), dtype=dtype,
                                                    device=G.device),
                    torch.tensor(torch.finfo(dtype).tiny, dtype=dtype, device=G.device),
                    generator)
                own["generator"] = generator.get_state()
            u = clip_rms(torch.einsum(own["exprs"][2], *Q, *Q, m_hat))
            W = matrix(w, index)
            u = u.view(W.shape)
            wd = value(self.weight_decay, k)
            if wd != 0:
                u.add_(W, alpha=wd)
            W.add_(u.to(dtype=W.dtype), alpha=-value(lr, k))

    def _start(self, G: torch.Tensor, dtype: torch.dtype, seed: int, k: int) -> dict[str, Any]:
        """Model k's state: its momentum (zeros laid out as G), its factors ``scale^(1/n)
        I`` (a vector of ones for a diagonal one), its expressions, its probes' generator."""
        long, few = value(self.max_size_triangular, k), value(self.min_ndim_triangular, k)
        triangular = [not (n == 1 or n > long or G.dim() < few) for n in G.shape]
        scale = value(self.precond_init_scale, k) ** (1 / G.dim())
        Q = [scale * (torch.eye(n, dtype=dtype, device=G.device) if tri else
                      torch.ones(n, dtype=dtype, device=G.device))
             for n, tri in zip(G.shape, triangular, strict=True)]
        generator = torch.Generator(device=G.device)
        generator.manual_seed(int(seed))
        return {"step": 0, "counter": 0, "mu": torch.zeros_like(G), "Q": Q,
                "exprs": expressions(G.shape, triangular), "generator": generator.get_state()}
