"""Gradient descent and heavy ball: sgd, momentum, nesterov, averaged asgd, and the
variance-reduced svrg and saga (plain SGD steps on another gradient estimate, see
:mod:`stochopt.gradients`)."""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Reference, Rule, add_, decay_add_, is_zero
from .registry import register


@register
class SGD(Rule):
    """Stochastic gradient descent:  ``w <- w - lr g``."""

    name = "sgd"
    reference = Reference("torch.optim.SGD", torch.optim.SGD)
    linear = True

    def update(self, w, g, state, lr):
        add_(w, -lr, g)


@register
class Momentum(Rule):
    """Heavy ball, torch's convention:  ``m <- mu m + (1 - dampening) g ;  w <- w - lr m``.

    ``m_1 = g_1`` (torch starts the buffer at the gradient, without dampening). The
    textbook ``v <- mu v - lr g; w <- w + v`` is the same only while lr is constant: here a
    schedule's new lr also scales the old momentum (the exercise leaves the choice open).
    """

    name = "momentum"
    reference = Reference("torch.optim.SGD(momentum=0.9)", torch.optim.SGD)
    linear = True
    nesterov: ClassVar[bool] = False
    momentum = Setting(0.9, UNIT, "momentum factor mu")
    dampening = Setting(0.0, UNIT, "dampening of the gradient in the buffer")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        m = state["m"]
        if state["t"] == 1:
            m.copy_(g)
        elif is_zero(self.dampening):
            decay_add_(m, self.momentum, g)
        else:
            add_(m.mul_(self.momentum), 1 - self.dampening, g)
        add_(w, -lr, add_(g.clone(), self.momentum, m) if self.nesterov else m)


@register
class Nesterov(Momentum):
    """Nesterov momentum (Sutskever et al. 2013):  ``m <- mu m + g ;  w <- w - lr (g + mu m)``.

    The look-ahead rewritten at the current point, as torch.optim.SGD(nesterov=True).
    """

    name = "nesterov"
    reference = Reference(
        "torch.optim.SGD(nesterov=True)", functools.partial(torch.optim.SGD, nesterov=True),
        unchecked={"dampening": "torch.optim.SGD refuses Nesterov momentum with dampening"})
    nesterov = True


@register
class ASGD(Rule):
    """Averaged SGD (Polyak & Juditsky 1992):  ``w <- (1 - lambd eta_t) w - eta_t g ;
    a <- a + mu_t (w - a)`` with ``eta_t = lr / (1 + lambd lr t)^alpha`` and
    ``mu_t = 1 / max(1, t - t0)``; the average ``a`` is the model evaluated and saved.

    As torch.optim.ASGD: eta starts at lr and decays by itself (hence a constant default
    schedule), and averaging starts after t0 steps (torch's default 1e6: never, in 10
    epochs; then a = w).
    """

    name = "asgd"
    # t0 = 5: the average starts within the kit's 30 steps
    reference = Reference("torch.optim.ASGD", torch.optim.ASGD,
                          answer=lambda opt, p: opt.state[p]["ax"], values={"t0": 5.0})
    default_schedule = "constant"
    linear = True
    lr = Setting(0.01, POSITIVE, "initial step size eta_0 (and the lr in eta_t's decay)")
    lambd = Setting(1e-4, NON_NEGATIVE, "decay term: w shrinks by lambd eta_t per step, and "
                    "eta_t decays with it")
    alpha = Setting(0.75, NON_NEGATIVE, "power of eta_t's decay")
    t0 = Setting(1e6, NON_NEGATIVE, "step after which the average starts")

    def init(self, w):
        return {"t": 0, "eta": None, "mu": 1.0, "a": torch.zeros_like(w)}

    def evaluation_point(self, w, state):
        return state["a"]

    def update(self, w, g, state, lr):
        t, eta, mu = state["t"], state["eta"], state["mu"]
        eta = lr if eta is None else eta  # the first step's eta is lr
        decay = 1 - self.lambd * eta
        w.mul_(decay)
        add_(w, -eta, g)
        a = state["a"]
        if isinstance(mu, torch.Tensor) or mu != 1:
            a.add_(w.sub(a).mul_(mu))
        else:
            a.copy_(w)
        state["eta"] = lr / ((1 + self.lambd * lr * t) ** self.alpha)
        state["mu"] = (1 / (t - self.t0).clamp(min=1) if isinstance(self.t0, torch.Tensor)
                       else 1 / max(1, t - self.t0))


@register
class SVRG(SGD):
    """SVRG (Johnson & Zhang 2013):  ``w <- w - lr (g_B(w) - g_B(w~) + g(w~))``.

    ``w~`` and its full gradient ``g(w~)`` are taken at the start of every epoch.
    """

    name = "svrg"
    estimator = "svrg"
    reference = Reference("a plain loop over the paper's algorithm (SVRGLoop)",
                          lambda params, **s: SVRGLoop(params, **s), l2_in_loss=True,
                          data=True)


@register
class SAGA(SGD):
    """SAGA (Defazio et al. 2014):  ``w <- w - lr (g_B(w) - g_B^old + mean_j g_j^old)``.

    A table keeps the last gradient seen for every example (as N x C residuals).
    """

    name = "saga"
    estimator = "saga"
    reference = Reference("a plain loop over the paper's algorithm (SAGALoop)",
                          lambda params, **s: SAGALoop(params, **s), l2_in_loss=True,
                          data=True)


def _loss_gradient(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Autograd's gradient of the mean cross-entropy of softmax(X w) at w."""
    w = w.detach().requires_grad_(True)
    with torch.enable_grad():
        torch.nn.functional.cross_entropy(X @ w, y).backward()
    return w.grad


class SVRGLoop(torch.optim.Optimizer):
    """SVRG's reference, Johnson & Zhang 2013 (Algorithm 1, option I) as a plain loop over
    one matrix: at the start of every epoch ``w~ = w`` and ``mu = grad f(w~)`` over all of
    X; then ``w <- w - lr (grad f_B(w) - grad f_B(w~) + mu)`` with ``grad f_B(w)`` the
    objective's gradient the caller left in ``p.grad``."""

    def __init__(self, params, lr: float, X: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> None:
        super().__init__(params, {"lr": lr})
        self.X, self.y, self.per_epoch = X, y, math.ceil(len(X) / batch_size)
        self.t = 0

    def step(self, closure=None, idx=None):
        (p,) = self.param_groups[0]["params"]
        if self.t % self.per_epoch == 0:
            self.snapshot = p.detach().clone()
            self.mu = _loss_gradient(self.snapshot, self.X, self.y)
        self.t += 1
        at_snapshot = _loss_gradient(self.snapshot, self.X[idx], self.y[idx])
        with torch.no_grad():
            p.sub_(self.param_groups[0]["lr"] * (p.grad - at_snapshot + self.mu))


class SAGALoop(torch.optim.Optimizer):
    """SAGA's reference, Defazio et al. 2014 as a plain loop over one matrix, with the
    table of every example's own gradient (n x d x C, by autograd, per example through
    ``torch.func``):
    ``g = grad f_B(w) - mean_{i in B} table_i + mean_j table_j`` with ``grad f_B(w)`` the
    objective's gradient the caller left in ``p.grad``; ``w <- w - lr g``; then ``table_i =
    grad f_i(w)`` (at the w before the step) for i in B."""

    def __init__(self, params, lr: float, X: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> None:
        super().__init__(params, {"lr": lr})
        (p,) = self.param_groups[0]["params"]
        self.X, self.y = X, y
        self.table = self._own(p, torch.arange(len(X)))

    def _own(self, w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Each example's own gradient at w, (len(rows), d, C)."""
        def loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy((x @ w)[None], y[None])

        with torch.enable_grad():
            return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
                w.detach(), self.X[rows], self.y[rows])

    def step(self, closure=None, idx=None):
        (p,) = self.param_groups[0]["params"]
        own = self._own(p, idx)
        g = p.grad - self.table[idx].mean(0) + self.table.mean(0)
        self.table[idx] = own
        with torch.no_grad():
            p.sub_(self.param_groups[0]["lr"] * g)
