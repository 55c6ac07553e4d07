"""Schedule-free SGD and AdamW (Defazio et al. 2024, "The Road Less Scheduled").

Three sequences: z takes plain (or Adam-normalised) gradient steps, x is a weighted running
average of z, and gradients are taken at their interpolation y. The weights stored in the
model are y (where the training loop, and its per-step training metrics, evaluate the
gradient); every answer (validation, test, suboptimality, saved weights) is x, as the
reference's ``eval()`` mode gives it. The method replaces the learning-rate schedule, so a
schedule other than constant is refused (its own ``warmup_steps`` warm up per step).
As the authors' package, ``schedulefree==1.4.1``, in its update-y-in-place form:

    c = w_k / sum_{i<=k} w_i,   w_k = (k+1)^r  lr_max^weight_lr_power
    y <- (1 - c) y + c z + lr (beta (1 - c) - 1) g ;   z <- z - lr g ;   x = y + (1 - 1/beta)(z - y)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..settings import NON_NEGATIVE, POSITIVE, Interval, Setting
from .base import Reference, Rule, add_, addcmul_, from_package, is_zero, sqrt_, with_betas
from .registry import register

OPEN_UNIT = Interval(0.0, 1.0, low_open=True, high_open=True)
STEPS = Interval(0, math.inf, integer=True)


def _train(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    opt.train()  # the package's optimisers start in eval mode
    return opt


def _eval(opt: torch.optim.Optimizer, p: torch.Tensor) -> torch.Tensor:
    opt.eval()  # the parameters move to x, the answering point
    return p.detach().clone()


class _ScheduleFree(Rule):
    default_schedule = "constant"
    fixed_schedule: ClassVar[bool] = True  # the method replaces the schedule
    warmup_steps = Setting(0, STEPS, "linear warm-up of the lr over this many steps")
    r = Setting(0.0, NON_NEGATIVE, "power of the step count in the averaging weight")
    weight_lr_power = Setting(2.0, NON_NEGATIVE, "power of the largest lr so far in the "
                              "averaging weight")

    def init(self, w):
        return {"t": 0, "z": w.clone(), "lr_max": -1.0, "weight_sum": 0.0}

    def _average_weight(self, state, lr):
        """The warmed-up lr and the weight c of this step in x's running average."""
        k, warm = state["t"] - 1, self.warmup_steps
        if isinstance(warm, torch.Tensor):
            lr = lr * torch.clamp((k + 1) / warm, max=1.0)  # warm = 0: inf -> 1
        elif k < warm:
            lr = lr * ((k + 1) / warm)
        lr_max = state["lr_max"] = (torch.maximum(torch.as_tensor(lr), torch.as_tensor(
            state["lr_max"])) if isinstance(lr, torch.Tensor) else max(lr, state["lr_max"]))
        weight = (k + 1) ** self.r * lr_max ** self.weight_lr_power
        state["weight_sum"] = state["weight_sum"] + weight
        return lr, weight / state["weight_sum"]

    def _move(self, w, u, state, lr, c, beta):
        """y <- lerp(y, z, c) + lr (beta (1 - c) - 1) u ;  z <- z - lr u."""
        w.lerp_(state["z"], c)
        add_(w, lr * (beta * (1 - c) - 1), u)
        add_(state["z"], -lr, u)


@register
class SGDScheduleFree(_ScheduleFree):
    """Schedule-free SGD (Defazio et al. 2024):  ``z <- z - lr g(y) ;  x <- (1 - c) x + c z ;
    y = (1 - beta) z + beta x``, evaluated at x.

    As ``schedulefree.SGDScheduleFree``; weight decay is added to the gradient at y, as
    there (an L2 term: f* applies). Its lr is large (1.0): steps are averaged."""

    name = "sgd-schedulefree"
    reference = Reference("schedulefree 1.4.1 (SGDScheduleFree)", lambda params, **s: _train(
        from_package("schedulefree:SGDScheduleFree", foreach=False)(params, **s)),
        answer=_eval)
    lr = Setting(1.0, POSITIVE, "learning rate of the z sequence (constant)")
    momentum = Setting(0.9, OPEN_UNIT, "interpolation beta: y = (1 - beta) z + beta x")
    weight_decay = Setting(0.0, NON_NEGATIVE, "L2 penalty (wd/2)|w|^2, at y")

    def update(self, w, g, state, lr):
        lr, c = self._average_weight(state, lr)
        self._move(w, g, state, lr, c, self.momentum)

    def evaluation_point(self, w, state):
        return torch.lerp(w, state["z"], 1 - 1 / self.momentum)


@register
class AdamWScheduleFree(_ScheduleFree):
    """Schedule-free AdamW (Defazio et al. 2024): the same averaging, z stepping along
    ``u = g / (sqrt(v / (1 - b2^t)) + eps) + wd y`` with ``v <- b2 v + (1 - b2) g^2``.

    As ``schedulefree.AdamWScheduleFree``: no first moment (the averaging plays its part),
    and the decay is added after the normalisation, so it is decoupled (no f* applies)."""

    name = "adamw-schedulefree"

    landscape_lr = "scale_free"
    reference = Reference("schedulefree 1.4.1 (AdamWScheduleFree)", lambda params, **s: _train(
        with_betas(from_package("schedulefree:AdamWScheduleFree", foreach=False))(params, **s)),
        answer=_eval)
    decoupled_decay = True
    lr = Setting(0.0025, POSITIVE, "learning rate of the z sequence (constant)")
    beta1 = Setting(0.9, OPEN_UNIT, "interpolation beta: y = (1 - beta1) z + beta1 x")
    beta2 = Setting(0.999, Interval(0.0, 1.0, high_open=True), "decay of the second moment")
    eps = Setting(1e-8, POSITIVE, "added to the denominator")
    weight_decay = Setting(0.0, NON_NEGATIVE, "decoupled decay, added to the normalised step")

    def init(self, w):
        return {**super().init(w), "v": torch.zeros_like(w)}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        self.update(w, g, state, lr)  # the decay goes in after the normalisation

    def update(self, w, g, state, lr):
        lr, c = self._average_weight(state, lr)
        v, b2 = state["v"], self.beta2
        v.mul_(b2)
        addcmul_(v, 1 - b2, g, g)
        denom = sqrt_(v / (1 - b2 ** state["t"])).add_(self.eps)
        u = g / denom
        if not is_zero(self.weight_decay):
            add_(u, self.weight_decay, w)
        self._move(w, u, state, lr, c, self.beta1)

    def evaluation_point(self, w, state):
        return torch.lerp(w, state["z"], 1 - 1 / self.beta1)
