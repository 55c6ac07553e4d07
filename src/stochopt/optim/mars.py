"""MARS (Yuan et al. 2024): variance reduction for adaptive methods. The step's gradient is
corrected by the change of the gradient on the same batch between the last weights and these
(a STORM-style estimator), and the corrected gradient goes into AdamW."""

from __future__ import annotations

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Reference, Rule, add_, addcmul_, cautious_, from_package, is_zero, sqrt, sqrt_
from .registry import register


class MARSLoop(torch.optim.Optimizer):
    """MARS's reference: pytorch-optimizer's MARS (4.1.0) in a plain loop that hands it, as
    its ``last_grad``, the gradient at the previous weights on the current batch (the
    paper's Algorithm 1; the package alone keeps the previous batch's gradient, the paper's
    approximate variant). The first step's previous weights are the start (x_0 = x_1)."""

    def __init__(self, params, **settings) -> None:
        super().__init__(params, {})
        self.inner = from_package("pytorch_optimizer:MARS", foreach=False)(
            self.param_groups[0]["params"], **settings)
        (p,) = self.param_groups[0]["params"]
        self.previous = p.detach().clone()

    def step(self, closure):
        (p,) = self.param_groups[0]["params"]
        now = p.detach().clone()
        with torch.no_grad():
            p.copy_(self.previous)
        closure()  # the current batch's gradient at the previous weights
        at_previous = p.grad.detach().clone()
        with torch.no_grad():
            p.copy_(now)
        closure()  # and at these
        group = self.inner.param_groups[0]
        self.inner.init_group(group)  # its state, created on the first call
        self.inner.state[p]["last_grad"].copy_(at_previous)
        self.previous = now
        self.inner.step()


@register
class MARS(Rule):
    """MARS-AdamW (Yuan et al. 2024):  ``c = g_t(w_t) + gamma b1 / (1 - b1) (g_t(w_t) -
    g_t(w_{t-1}))``, scaled to norm 1 when above it;  ``m <- b1 m + (1 - b1) c ;
    v <- b2 v + (1 - b2) c^2 ;  w <- (1 - lr wd) w - lr m / (1 - b1^t) / (sqrt(v + 1e-15) /
    sqrt(1 - b2^t) + eps)``.

    g_t(w_{t-1}) is the current batch's gradient at the previous weights: a second gradient
    evaluation each step, counted in ``grad_evals`` (2 per example), as SVRG's are. As
    pytorch-optimizer's MARS (``mars_type='adamw'``, decoupled decay) handed that gradient;
    ``ams_bound`` divides by the running maximum of v, ``cautious`` masks the step with
    :func:`~.base.cautious_`.
    """

    name = "mars"

    landscape_lr = "scale_free"
    estimator = "mars"
    needs_loss = True  # the step's batch: its gradient at the previous weights
    decoupled_decay = True
    reference = Reference("pytorch_optimizer.MARS (4.1.0), its last_grad at w_{t-1} (MARSLoop)",
                          lambda params, beta1, beta2, **s: MARSLoop(
                              params, betas=(beta1, beta2), **s), closure=True)
    default_schedule = "constant"
    lr = Setting(3e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1 = Setting(0.95, UNIT, "decay of the first moment")
    beta2 = Setting(0.99, UNIT, "decay of the second moment")
    gamma = Setting(0.025, NON_NEGATIVE, "strength of the gradient correction")
    eps = Setting(1e-8, NON_NEGATIVE, "added to the denominator")
    ams_bound = Setting(False, help="divide by the running maximum of the second moment")
    cautious = Setting(False, help="zero the update where it disagrees in sign with the "
                                   "gradient (Liang et al. 2024)")
    weight_decay = Setting(0.0, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")

    def init(self, w):
        state = {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w),
                 "previous": w.detach().clone()}
        if self.ams_bound:
            state["vmax"] = torch.zeros_like(w)
        return state

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        at_previous = batch.gradient_at(state["previous"])
        state["previous"].copy_(w)
        self.update(w, g, at_previous, state, lr)

    def update(self, w, g, at_previous, state, lr):  # type: ignore[override]
        t, b1, b2 = state["t"], self.beta1, self.beta2
        c = (g - at_previous).mul_(self.gamma * (b1 / (1 - b1))).add_(g)
        norm = torch.linalg.vector_norm(c, dim=(-2, -1), keepdim=True)
        c.div_(torch.where(norm > 1, norm, 1))
        m = state["m"].lerp_(c, 1 - b1)
        u = m.clone()
        if self.cautious:
            cautious_(u, g)
        v = addcmul_(state["v"].mul_(b2), 1 - b2, c, c)
        if self.ams_bound:
            v = torch.maximum(state["vmax"], v, out=state["vmax"])
        u.div_(sqrt_(v.add(1e-15)).add_(self.eps).div_(sqrt(1 - b2**t)).mul_(1 - b1**t))
        if not is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        add_(w, -lr, u)
