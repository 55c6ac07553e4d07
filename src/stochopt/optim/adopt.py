"""ADOPT (Taniguchi et al. 2024): Adam with the second moment taken before the gradient
enters it, so the normalisation and the gradient are independent, and the momentum taken
after the normalisation."""

from __future__ import annotations

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Reference, Rule, add_, addcmul_, from_package, is_zero, sqrt, with_betas
from .registry import register


def _reference(params, clip: bool, **settings):
    """torch-adopt's ADOPT: its ``clip_lambda`` is a function of the step, ``step**0.25``
    by default, which the ``clip`` setting turns on or off."""
    make = with_betas(from_package("adopt:ADOPT", foreach=False))
    return make(params, **settings, **({} if clip else {"clip_lambda": None}))


@register
class ADOPT(Rule):
    """ADOPT (Taniguchi et al. 2024):  ``v_0 = g_0^2`` and no step at t = 0; then
    ``n = clip(g / max(sqrt(v), eps), t^{1/4}) ;  m <- b1 m + (1 - b1) n ;  w <- w - lr m ;
    v <- b2 v + (1 - b2) g^2``.

    As the authors' torch-adopt 0.1.0: the clip bound ``t^{1/4}`` (t counted from 0 at the
    first gradient) keeps early normalised gradients bounded; ``decouple`` decays the
    weights directly, ``w <- w - lr wd w`` (from t = 1), instead of adding ``wd w`` to g.
    """

    name = "adopt"

    landscape_lr = "scale_free"
    reference = Reference("adopt.ADOPT (torch-adopt 0.1.0)", _reference,
                          alongside={"decouple": {"weight_decay": 0.05}})
    default_schedule = "constant"
    lr = Setting(1e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1 = Setting(0.9, UNIT, "decay of the momentum of the normalised gradient")
    beta2 = Setting(0.9999, UNIT, "decay of the second moment")
    eps = Setting(1e-6, NON_NEGATIVE, "floor of the normaliser sqrt(v)")
    clip = Setting(True, help="clip the normalised gradient at t^(1/4)")
    decouple = Setting(False, help="decay the weights directly (AdamW's way)")

    @classmethod
    def decouples(cls, values):
        return bool(values.get("decouple", False))

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w)}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        if not is_zero(self.weight_decay) and not self.decouple:
            g = add_(g.clone(), self.weight_decay, w)
        self.update(w, g, state, lr)

    def update(self, w, g, state, lr):
        t, v = state["t"] - 1, state["v"]  # t: the reference's count, 0 at the first gradient
        if t == 0:
            v.addcmul_(g, g)
            return
        if self.decouple and not is_zero(self.weight_decay):
            add_(w, -lr * self.weight_decay, w)
        normed = g.div(torch.clamp(sqrt(v), self.eps))
        if self.clip:
            normed.clamp_(-t**0.25, t**0.25)
        state["m"].lerp_(normed, 1 - self.beta1)
        add_(w, -lr, state["m"])
        addcmul_(v.mul_(self.beta2), 1 - self.beta2, g, g)
