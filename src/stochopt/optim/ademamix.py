"""AdEMAMix (Pagliardini et al. 2024): Adam whose step mixes a fast and a slow exponential
moving average of the gradient, so that gradients thousands of steps old still count."""

from __future__ import annotations

import math

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import Hyper, Reference, Rule, add_, addcdiv_, addcmul_, cautious_, from_package, sqrt
from .registry import register


def _reference(params, beta1, beta2, beta3, warmup_whole_run, t_alpha_beta3, total_steps,
               **settings):
    """pytorch-optimizer's AdEMAMix (the authors' apple/ml-ademamix is not on PyPI); its
    ``t_alpha_beta3=None`` is no warm-up."""
    steps = total_steps if warmup_whole_run else (t_alpha_beta3 or None)
    return from_package("pytorch_optimizer:AdEMAMix", foreach=False)(
        params, betas=(beta1, beta2, beta3), t_alpha_beta3=steps, **settings)


@register
class AdEMAMix(Rule):
    """AdEMAMix (Pagliardini et al. 2024):  ``m1 <- b1 m1 + (1 - b1) g ;
    m2 <- b3_t m2 + (1 - b3_t) g ;  v <- b2 v + (1 - b2) g^2 ;
    w <- w - lr (m1 / (1 - b1^t) + alpha_t m2) / (sqrt(v / (1 - b2^t)) + eps)``.

    The slow average m2 is not bias-corrected. Over the warm-up of T steps (``t_alpha_beta3``,
    or the whole run with ``warmup_whole_run``, the paper's choice) ``alpha_t = alpha
    min(t / T, 1)`` and ``b3_t = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)),
    b3)``, from b1 up to b3; without one, alpha and b3 from the first step. As
    pytorch-optimizer's AdEMAMix (``weight_decay`` added to g; ``cautious`` masks the fast
    average's step with :func:`~.base.cautious_`, as its ``cautious=True``).
    """

    name = "ademamix"

    landscape_lr = "scale_free"
    reference = Reference("pytorch_optimizer.AdEMAMix (4.1.0)", _reference, total_steps=True,
                          values={"t_alpha_beta3": 20.0})
    default_schedule = "constant"
    lr = Setting(1e-3, POSITIVE, "base learning rate, scaled by the schedule")
    beta1 = Setting(0.9, UNIT, "decay of the fast average")
    beta2 = Setting(0.999, UNIT, "decay of the second moment")
    beta3 = Setting(0.9999, UNIT, "decay of the slow average (after its warm-up)")
    alpha = Setting(5.0, NON_NEGATIVE, "weight of the slow average (after its warm-up)")
    t_alpha_beta3 = Setting(0.0, NON_NEGATIVE, "steps of the alpha and beta3 warm-up; 0: none")
    warmup_whole_run = Setting(False, help="warm alpha and beta3 up over the run's steps")
    eps = Setting(1e-8, NON_NEGATIVE, "added to the denominator")
    cautious = Setting(False, help="zero the fast average's step where it disagrees in sign "
                                   "with the gradient (Liang et al. 2024)")

    def init(self, w):
        return {"t": 0, "m1": torch.zeros_like(w), "m2": torch.zeros_like(w),
                "v": torch.zeros_like(w)}

    def _warmup(self, t: int) -> tuple[Hyper, Hyper]:
        """(alpha_t, b3_t) at step t: Python floats as the reference computes them, or, when
        the settings are tensors of K values, the same formulas elementwise (T = 0: none)."""
        T = self.context.get("total_steps", 0) if self.warmup_whole_run else self.t_alpha_beta3
        alpha, b1, b3 = self.alpha, self.beta1, self.beta3
        if not any(isinstance(x, torch.Tensor) for x in (T, alpha, b1, b3)):
            if not T:
                return alpha, b3
            lb1, lb3 = math.log(b1), math.log(b3)
            return (min(t * alpha / T, alpha),
                    min(math.exp(lb1 * lb3 / ((1.0 - t / T) * lb3 + (t / T) * lb1)), b3))
        like = next(x for x in (T, alpha, b1, b3) if isinstance(x, torch.Tensor))
        T, alpha, b1, b3 = (torch.as_tensor(x, dtype=like.dtype, device=like.device)
                            for x in (T, alpha, b1, b3))
        frac = t / torch.where(T > 0, T, 1)
        lb1, lb3 = b1.log(), b3.log()
        warm_b3 = torch.minimum((lb1 * lb3 / ((1 - frac) * lb3 + frac * lb1)).exp(), b3)
        return (torch.where(T > 0, torch.minimum(frac * alpha, alpha), alpha),
                torch.where(T > 0, warm_b3, b3))

    def update(self, w, g, state, lr):
        t = state["t"]
        alpha, beta3 = self._warmup(t)
        m1 = state["m1"].lerp_(g, 1 - self.beta1)
        v = addcmul_(state["v"].mul_(self.beta2), 1 - self.beta2, g, g)
        m2 = state["m2"].lerp_(g, 1 - beta3)
        denom = sqrt(v).div_(sqrt(1 - self.beta2**t)).add_(self.eps)
        if self.cautious:
            step = cautious_(m1.clone(), g).div_(1 - self.beta1**t)
        else:
            step = m1.div(1 - self.beta1**t)
        addcdiv_(w, -lr, add_(step, alpha, m2), denom)
