"""Per-coordinate step sizes: adagrad, rmsprop, adadelta from squared gradients, rprop from
the gradient's sign."""

from __future__ import annotations

import math

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Interval, Setting
from .base import Reference, Rule, add_, addcdiv_, addcmul_, from_package, is_zero, sqrt, sqrt_
from .registry import register


@register
class AdaGrad(Rule):
    """AdaGrad (Duchi et al. 2011):  ``s <- s + g^2 ;  w <- w - lr g / (sqrt(s) + eps)``.

    As torch.optim.Adagrad with ``lr_decay=0`` (use an inverse-time schedule for that). eps
    is added outside the square root (optax's ``adagrad`` adds it inside).
    """

    name = "adagrad"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.Adagrad", torch.optim.Adagrad)
    lr = Setting(0.01, POSITIVE, "base learning rate, scaled by the schedule")
    eps = Setting(1e-10, NON_NEGATIVE, "added to the denominator")
    initial_accumulator_value = Setting(0.0, NON_NEGATIVE, "starting value of s")

    def init(self, w):
        return {"t": 0, "s": torch.full_like(w, 0) + self.initial_accumulator_value}

    def update(self, w, g, state, lr):
        s = state["s"].addcmul_(g, g)
        addcdiv_(w, -lr, g, sqrt(s).add_(self.eps))


@register
class RMSProp(Rule):
    """RMSProp (Hinton, lecture 6e):  ``v <- alpha v + (1 - alpha) g^2 ;
    w <- w - lr g / (sqrt(v) + eps)``.

    As torch.optim.RMSprop: ``centered`` subtracts the squared running mean of g from v;
    ``momentum > 0`` accumulates ``b <- mu b + g / (sqrt(v) + eps)`` and steps ``-lr b``.
    eps is outside the square root (TensorFlow's and optax's put it inside).
    """

    name = "rmsprop"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.RMSprop", torch.optim.RMSprop)
    lr = Setting(0.01, POSITIVE, "base learning rate, scaled by the schedule")
    alpha = Setting(0.99, UNIT, "decay of the average of g^2")
    eps = Setting(1e-8, NON_NEGATIVE, "added to the denominator")
    momentum = Setting(0.0, UNIT, "momentum factor mu")
    centered = Setting(False, help="normalise by the variance of g instead of its 2nd moment")

    def init(self, w):
        state = {"t": 0, "v": torch.zeros_like(w)}
        if self.centered:
            state["a"] = torch.zeros_like(w)
        if not is_zero(self.momentum):
            state["b"] = torch.zeros_like(w)
        return state

    def update(self, w, g, state, lr):
        v = addcmul_(state["v"].mul_(self.alpha), 1 - self.alpha, g, g)
        if self.centered:
            a = state["a"].lerp_(g, 1 - self.alpha)
            v = v.addcmul(a, a, value=-1)
        denom = sqrt(v).add_(self.eps)
        if "b" in state:
            add_(w, -lr, state["b"].mul_(self.momentum).addcdiv_(g, denom))
        else:
            addcdiv_(w, -lr, g, denom)


@register
class AdaDelta(Rule):
    """AdaDelta (Zeiler 2012):  ``v <- rho v + (1 - rho) g^2 ;
    d = sqrt(u + eps) / sqrt(v + eps) g ;  u <- rho u + (1 - rho) d^2 ;  w <- w - lr d``.

    As torch.optim.Adadelta, whose lr (default 1) scales the step.
    """

    name = "adadelta"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.Adadelta", torch.optim.Adadelta)
    lr = Setting(1.0, POSITIVE, "base learning rate, scaled by the schedule")
    rho = Setting(0.9, UNIT, "decay of the averages")
    eps = Setting(1e-6, NON_NEGATIVE, "added inside the square roots")

    def init(self, w):
        return {"t": 0, "v": torch.zeros_like(w), "u": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        v = addcmul_(state["v"].mul_(self.rho), 1 - self.rho, g, g)
        u = state["u"]
        d = sqrt_(u + self.eps).div_(sqrt_(v + self.eps)).mul_(g)
        addcmul_(u.mul_(self.rho), 1 - self.rho, d, d)
        add_(w, -lr, d)


@register
class Rprop(Rule):
    """Rprop (Riedmiller & Braun 1993):  per coordinate, ``s <- clamp(s eta+, ., s_max)``
    when g keeps its sign, ``clamp(s eta-, s_min, .)`` (and that step skipped) when it
    flips ;  ``w <- w - sign(g) s``.

    As torch.optim.Rprop on mini-batches: the step sizes start at lr, after which lr (and
    so any schedule) no longer matters; hence a constant default schedule. torch's Rprop
    has no weight decay; here, as for every rule, ``weight_decay`` adds ``wd w`` to g.
    """

    name = "rprop"

    landscape_lr = "scale_free"
    reference = Reference(
        "torch.optim.Rprop (fed g + wd w)",
        lambda params, eta_minus, eta_plus, step_size_min, step_size_max, **s:
        torch.optim.Rprop(params, etas=(eta_minus, eta_plus),
                          step_sizes=(step_size_min, step_size_max), **s), l2_in_loss=True)
    default_schedule = "constant"
    lr = Setting(0.01, POSITIVE, "initial step size of every coordinate")
    eta_minus = Setting(0.5, Interval(0, 1, low_open=True, high_open=True),
                        "step-size factor when the gradient's sign flips")
    eta_plus = Setting(1.2, Interval(1, math.inf, low_open=True, high_open=True),
                       "step-size factor when the gradient keeps its sign")
    step_size_min = Setting(1e-6, NON_NEGATIVE, "smallest step size")
    step_size_max = Setting(50.0, POSITIVE, "largest step size")

    def init(self, w):
        return {"t": 0, "prev": torch.zeros_like(w), "s": None}

    def update(self, w, g, state, lr):
        if state["s"] is None:
            state["s"] = torch.zeros_like(w).add_(lr)
        s, prev = state["s"], state["prev"]
        sign = g.mul(prev).sign()
        one = torch.ones_like(sign)  # the factors in the weights' dtype, broadcast over K
        factor = torch.where(sign > 0, one * self.eta_plus,
                             torch.where(sign < 0, one * self.eta_minus, one))
        low, high = self.step_size_min, self.step_size_max
        if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):  # per model:
            # clamp_ takes two numbers or two tensors, never one of each
            low, high = (torch.as_tensor(v, dtype=s.dtype, device=s.device) for v in (low, high))
        s.mul_(factor).clamp_(low, high)
        g = torch.where(sign < 0, 0.0, g)  # a flipped sign: no step, and no memory of it
        w.addcmul_(g.sign(), s, value=-1)
        prev.copy_(g)


@register
class Adafactor(Rule):
    """Adafactor (Shazeer & Stern 2018), as torch.optim.Adafactor: the second moment of the
    (784, 10) matrix W factored into row and column means, ``r <- lerp(r, mean_j g^2, 1 -
    b_t) ; c <- lerp(c, mean_i g^2, 1 - b_t) ; V = r c / mean(r)`` with ``1 - b_t =
    t^beta2_decay``; the step ``u = g / sqrt(V)``, clipped to RMS ``d``, scaled by the
    weights' RMS: ``w <- w - max(eps2, RMS(w)) min(lr, 1/sqrt(t)) u / max(1, RMS(u)/d)``.

    It works on W as the exercise shapes it (features x classes, the bias row included),
    whatever the loop's layout, so that its rows and columns are torch's. lr is a relative
    step size; eps1 is the dtype's epsilon (torch's default); the decay is decoupled."""

    name = "adafactor"
    reference = Reference("torch.optim.Adafactor", lambda params, eps2, **s: from_package(
        "torch.optim:Adafactor")(params, eps=(None, eps2), **s))
    default_schedule = "constant"
    decoupled_decay = True
    lr = Setting(0.01, POSITIVE, "relative step size (capped by 1/sqrt(t))")
    beta2_decay = Setting(-0.8, Interval(-1.0, 0.0, high_open=True),
                          "1 - beta2_t = t^beta2_decay")
    eps2 = Setting(1e-3, POSITIVE, "floor of the weights' RMS that scales the step")
    d = Setting(1.0, Interval(1.0, math.inf), "clipping threshold of the update's RMS")
    weight_decay = Setting(0.0, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")

    @staticmethod
    def _exercise(w):
        """W in the exercise's shape: (d, C) given as is, the loop's (..., C, d) transposed."""
        return w if w.dim() == 2 else w.mT

    def init(self, w):
        W = self._exercise(w)
        return {"t": 0, "row": torch.zeros_like(W[..., :1]),  # (..., d, 1)
                "col": torch.zeros_like(W[..., :1, :])}  # (..., 1, C)

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr)  # the decay goes in inside, as torch's

    def update(self, w, g, state, lr):
        W, G = self._exercise(w), self._exercise(g)
        t, eps1 = state["t"], torch.finfo(w.dtype).eps
        one = w.dim() == 2  # torch's exact scalar arithmetic for a single (d, C) matrix
        decay = t ** self.beta2_decay
        rho = torch.clamp(torch.as_tensor(lr, dtype=torch.float64), max=1 / t**0.5) \
            if isinstance(lr, torch.Tensor) else min(lr, 1 / t**0.5)
        n = W.shape[-1] * W.shape[-2]
        rms_w = W.norm(2).item() / n**0.5 if one else \
            torch.linalg.vector_norm(W, dim=(-2, -1), keepdim=True) / n**0.5
        alpha = (max(self.eps2, rms_w) if one
                 else torch.maximum(rms_w, torch.as_tensor(self.eps2, dtype=rms_w.dtype))) * rho
        if not is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        row, col = state["row"], state["col"]
        row.lerp_(torch.norm(G, dim=-1, keepdim=True).square_().div_(G.size(-1)), decay)
        col.lerp_(torch.norm(G, dim=-2, keepdim=True).square_().div_(G.size(-2)), decay)
        V = row @ col
        V.div_(row.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        u = V.clamp_(min=eps1 * eps1).rsqrt_().mul_(G)
        if one:
            denom = max(1.0, u.norm(2).item() / (n**0.5 * self.d))
            W.add_(u, alpha=-alpha / denom)
        else:
            denom = torch.clamp(torch.linalg.vector_norm(u, dim=(-2, -1), keepdim=True)
                                / (n**0.5 * self.d), min=1.0)
            W.add_(u * (-alpha / denom).to(w.dtype))
