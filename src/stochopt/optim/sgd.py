"""Gradient descent and heavy ball: sgd, momentum, nesterov, averaged asgd, and the
variance-reduced svrg and saga (plain SGD steps on another gradient estimate, see
:mod:`stochopt.gradients`)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Rule, add_, decay_add_, is_zero
from .registry import register


@register
class SGD(Rule):
    """Stochastic gradient descent:  ``w <- w - lr g``."""

    name = "sgd"
    reference = "torch.optim.SGD"

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
    reference = "torch.optim.SGD(momentum=0.9)"
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
    reference = "torch.optim.SGD(nesterov=True)"
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
    reference = "torch.optim.ASGD"
    default_schedule = "constant"
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
    reference = "a plain loop over the paper's algorithm (tests/test_gradients.py)"


@register
class SAGA(SGD):
    """SAGA (Defazio et al. 2014):  ``w <- w - lr (g_B(w) - g_B^old + mean_j g_j^old)``.

    A table keeps the last gradient seen for every example (as N x C residuals).
    """

    name = "saga"
    estimator = "saga"
    reference = "a plain loop over the paper's algorithm (tests/test_gradients.py)"
