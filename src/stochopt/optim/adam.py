"""Adam and its family: adam (with amsgrad), adamw, nadam. Their default schedule is
constant, as the exercise's Adam cell: "it avoids the need for a learning rate schedule"."""

from __future__ import annotations

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import (
    Reference,
    Rule,
    add_,
    addcdiv_,
    addcmul_,
    cautious_,
    is_zero,
    sqrt,
    sqrt_,
    with_betas,
)
from .registry import register

# the settings Adam and NAdam share: one declaration, one flag, one help line
BETA1 = Setting(0.9, UNIT, "decay of the first moment")
BETA2 = Setting(0.999, UNIT, "decay of the second moment")
EPS = Setting(1e-8, NON_NEGATIVE, "added to the denominator")
CAUTIOUS = Setting(False, help="zero the update where it disagrees in sign with the gradient "
                               "(Liang et al. 2024)")


class CautiousAdamLoop(torch.optim.Optimizer):
    """The reference of ``cautious`` Adam and AdamW (no package has a cautious Adam): the
    paper's C-AdamW (Liang et al. 2024, Algorithm 1) as a plain loop over one matrix,
    torch.optim.Adam's arithmetic for the moments (``decoupled``: AdamW's decay first), then
    ``u = m^ / (sqrt(v^) + eps)``, ``phi = [u g > 0]``,
    ``w <- w - lr u phi numel / (|phi| + 1)``."""

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, decoupled: bool, amsgrad: bool = False) -> None:
        if amsgrad:
            raise ValueError("the cautious loop has no amsgrad")
        super().__init__(params, {"lr": lr})
        self.betas, self.eps, self.wd, self.decoupled = betas, eps, weight_decay, decoupled
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        (p,) = self.param_groups[0]["params"]
        lr, (b1, b2), g = self.param_groups[0]["lr"], self.betas, p.grad
        if self.t == 0:
            self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)
        self.t += 1
        if self.decoupled:
            p.mul_(1 - lr * self.wd)
        elif self.wd:
            g = g.add(p, alpha=self.wd)
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        u = self.m / (sqrt(self.v) / (1 - b2**self.t) ** 0.5).add_(self.eps)
        mask = (u * g > 0).to(g.dtype)
        mask.mul_(mask.numel() / (mask.sum() + 1))
        p.add_(u * mask, alpha=-lr / (1 - b1**self.t))


def _adam_reference(torch_class: type, decoupled: bool):
    """torch.optim's class, or with ``cautious`` the paper's loop above."""
    def make(params, beta1: float, beta2: float, cautious: bool, **settings):
        if cautious:
            return CautiousAdamLoop(params, betas=(beta1, beta2), decoupled=decoupled,
                                    **settings)
        return torch_class(params, betas=(beta1, beta2), **settings)
    return make


@register
class Adam(Rule):
    """Adam (Kingma & Ba 2015):  ``m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2 ;
    w <- w - lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)``.

    As torch.optim.Adam; ``amsgrad`` uses the running maximum of v. eps is added after the
    bias correction of v (the paper's eps^ = eps sqrt(1 - b2^t) form differs slightly);
    optax.adam places it the same way. ``cautious`` masks the step ``u = m / D`` with
    :func:`~.base.cautious_` (Liang et al. 2024).
    """

    name = "adam"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.Adam; cautious: the paper's loop (CautiousAdamLoop)",
                          _adam_reference(torch.optim.Adam, decoupled=False))
    default_schedule = "constant"
    lr = Setting(1e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1, beta2, eps = BETA1, BETA2, EPS
    amsgrad = Setting(False, help="divide by the running maximum of the second moment")
    cautious = CAUTIOUS

    def init(self, w):
        state = {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w)}
        if self.amsgrad:
            state["vmax"] = torch.zeros_like(w)
        return state

    def update(self, w, g, state, lr):
        t = state["t"]
        m = state["m"].lerp_(g, 1 - self.beta1)
        v = addcmul_(state["v"].mul_(self.beta2), 1 - self.beta2, g, g)
        if self.amsgrad:
            v = torch.maximum(state["vmax"], v, out=state["vmax"])
        denom = sqrt(v).div_((1 - self.beta2**t) ** 0.5).add_(self.eps)
        if self.cautious:
            add_(w, -lr / (1 - self.beta1**t), cautious_(m / denom, g))
        else:
            addcdiv_(w, -lr / (1 - self.beta1**t), m, denom)


@register
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019):  ``w <- (1 - lr wd) w``, then Adam's step on g.

    As torch.optim.AdamW: the decay is decoupled from the gradient; default wd 1e-2.
    """

    name = "adamw"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.AdamW; cautious: the paper's loop (CautiousAdamLoop)",
                          _adam_reference(torch.optim.AdamW, decoupled=True))
    decoupled_decay = True
    weight_decay = Setting(1e-2, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        if not is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        self.update(w, g, state, lr)


@register
class NAdam(Rule):
    """NAdam (Dozat 2016):  Adam's m, v with Nesterov's look-ahead,
    ``w <- w - lr (1 - mu_t) / (1 - M_t) g / D - lr mu_{t+1} / (1 - M_t mu_{t+1}) m / D``.

    As torch.optim.NAdam: ``D = sqrt(v / (1 - b2^t)) + eps``, the momentum schedule
    ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))`` and ``M_t = prod_{i<=t} mu_i``; optax.nadam uses
    a constant mu = b1 instead.
    """

    name = "nadam"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.NAdam", with_betas(torch.optim.NAdam))
    default_schedule = "constant"
    lr = Setting(2e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1, beta2, eps = BETA1, BETA2, EPS
    momentum_decay = Setting(4e-3, NON_NEGATIVE, "psi of the momentum schedule")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w), "mu_product": 1.0}

    def update(self, w, g, state, lr):
        t, b1 = state["t"], self.beta1
        mu = b1 * (1 - 0.5 * 0.96 ** (t * self.momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
        state["mu_product"] = mu_product = state["mu_product"] * mu
        m = state["m"].lerp_(g, 1 - b1)
        v = addcmul_(state["v"].mul_(self.beta2), 1 - self.beta2, g, g)
        denom = sqrt_(v.div(1 - self.beta2**t)).add_(self.eps)
        addcdiv_(w, -lr * (1 - mu) / (1 - mu_product), g, denom)
        addcdiv_(w, -lr * mu_next / (1 - mu_product * mu_next), m, denom)


@register
class Adamax(Rule):
    """Adamax (Kingma & Ba 2015, sec. 7.1):  ``m <- b1 m + (1 - b1) g ;
    u <- max(b2 u, |g| + eps) ;  w <- w - lr / (1 - b1^t) m / u``.

    As torch.optim.Adamax (eps inside the maximum, as torch places it).
    """

    name = "adamax"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.Adamax", with_betas(torch.optim.Adamax))
    default_schedule = "constant"
    lr = Setting(2e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1, beta2, eps = BETA1, BETA2, EPS

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "u": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        m = state["m"].lerp_(g, 1 - self.beta1)
        u = state["u"]
        torch.maximum(u.mul_(self.beta2), g.abs().add_(self.eps), out=u)
        addcdiv_(w, -lr / (1 - self.beta1 ** state["t"]), m, u)


@register
class RAdam(Rule):
    """RAdam (Liu et al. 2020):  Adam whose adaptive step is used only once the variance of
    its estimate is tractable, ``rho_t > 5``, and then rectified by ``r_t``; before that,
    ``w <- w - lr m / (1 - b1^t)`` (momentum SGD).

    As torch.optim.RAdam: ``rho_inf = 2/(1 - b2) - 1``, ``rho_t = rho_inf - 2 t b2^t /
    (1 - b2^t)``, ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2)
    rho_t))``, step ``lr r_t m^ sqrt(1 - b2^t) / (sqrt(v) + eps)``. With
    ``decoupled_weight_decay`` the decay is AdamW's, ``w <- (1 - lr wd) w``.
    """

    name = "radam"

    landscape_lr = "scale_free"
    reference = Reference("torch.optim.RAdam", with_betas(torch.optim.RAdam))
    default_schedule = "constant"
    lr = Setting(1e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1, beta2, eps = BETA1, BETA2, EPS
    decoupled_weight_decay = Setting(False, help="decay the weights directly, as AdamW, "
                                     "instead of adding wd*w to the gradient")

    @classmethod
    def decouples(cls, values):
        return bool(values.get("decoupled_weight_decay", False))

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w)}

    def step(self, w, g, state, lr, batch=None):
        if self.decoupled_weight_decay:
            state["t"] += 1
            if not is_zero(self.weight_decay):
                w.mul_(1 - lr * self.weight_decay)
            self.update(w, g, state, lr)
        else:
            super().step(w, g, state, lr)

    def update(self, w, g, state, lr):
        t, b1, b2 = state["t"], self.beta1, self.beta2
        m = state["m"].lerp_(g, 1 - b1)
        v = addcmul_(state["v"].mul_(b2), 1 - b2, g, g)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / bc2
        m_hat = m / bc1
        if isinstance(rho_t, torch.Tensor):  # K configurations with different b2
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).clamp(min=0) ** 0.5
            adaptive = bc2**0.5 / sqrt(v).add_(self.eps)
            w.sub_(m_hat * lr * torch.where(rho_t > 5, adaptive * rect, 1.0))
        elif rho_t > 5:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            w.sub_(m_hat * lr * (bc2**0.5 / sqrt(v).add_(self.eps)) * rect)
        else:
            w.sub_(m_hat * lr)
