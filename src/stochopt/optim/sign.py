"""Sign-based updates: lion."""

from __future__ import annotations

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Reference, Rule, add_, cautious_, from_package, is_zero, with_betas
from .registry import register


@register
class Lion(Rule):
    """Lion (Chen et al. 2023):  ``w <- (1 - lr wd) w - lr sign(b1 m + (1 - b1) g) ;
    m <- b2 m + (1 - b2) g``.

    As lion-pytorch 0.2.5, the authors' reference (its decay is decoupled: it shrinks w
    directly; its ``decoupled_weight_decay=True`` variant, wd divided by the initial lr, is
    not exposed). Every coordinate moves by lr each step, so lr is 3-10x smaller than
    AdamW's; constant by default, as Adam's family here. ``cautious`` masks the sign step
    with :func:`~.base.cautious_` (Liang et al. 2024), as pytorch-optimizer's Lion does.
    """

    name = "lion"

    landscape_lr = "scale_free"
    reference = Reference("lion-pytorch 0.2.5 (Lion); cautious: pytorch-optimizer's Lion",
                          lambda params, cautious, **s: with_betas(
                              from_package("pytorch_optimizer:Lion", cautious=True, foreach=False)
                              if cautious else from_package("lion_pytorch:Lion"))(params, **s))
    default_schedule = "constant"
    decoupled_decay = True
    lr = Setting(1e-4, POSITIVE, "base learning rate, scaled by the schedule")
    beta1 = Setting(0.9, UNIT, "interpolation between momentum and gradient for the update")
    beta2 = Setting(0.99, UNIT, "decay of the momentum")
    weight_decay = Setting(0.0, NON_NEGATIVE, "decoupled decay: w <- (1 - lr wd) w")
    cautious = Setting(False, help="zero the update where it disagrees in sign with the "
                                   "gradient (Liang et al. 2024)")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w)}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        if not is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        self.update(w, g, state, lr)

    def update(self, w, g, state, lr):
        m, b1, b2 = state["m"], self.beta1, self.beta2
        if self.cautious:  # pytorch-optimizer's order, its reference: lerp, then the mask
            u = m.lerp(g, 1 - b1).sgn_()
            m.lerp_(g, 1 - b2)
            add_(w, -lr, cautious_(u, g))
            return
        if isinstance(b1, torch.Tensor):
            u = (m * b1).add_((1 - b1) * g).sgn_()
        else:
            u = m.clone().mul_(b1).add(g, alpha=1 - b1).sgn_()  # the reference's order
        add_(w, -lr, u)
        if isinstance(b2, torch.Tensor):
            m.mul_(b2).add_((1 - b2) * g)
        else:
            m.mul_(b2).add_(g, alpha=1 - b2)
