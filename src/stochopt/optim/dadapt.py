"""Learning-rate-free Adam: Prodigy (Mishchenko & Defazio 2024) and D-Adaptation's Adam
(Defazio & Mishchenko 2023).

Both estimate the distance to the solution, d, from sums over the model's parameters and
step with ``d * lr`` (lr stays 1). Inside a batch of K models every model keeps its own
d: the sums run over each model's (C, d) weights, and the scalars are (..., 1, 1) float64
tensors, so a run in a batch equals the run alone. ``d`` is recorded after every epoch,
the ``d_estimate`` column of ``results.csv`` (:meth:`Rule.diagnostics`). As the authors' packages,
``prodigyopt==1.1.2`` and ``dadaptation==3.2``, with growth_rate infinite (their default).
"""

from __future__ import annotations

from typing import Any

import torch

from ..settings import NON_NEGATIVE, POSITIVE, UNIT, Setting
from .base import (
    Reference,
    Rule,
    add_,
    addcdiv_,
    addcmul_,
    from_package,
    is_zero,
    sqrt,
    sumsq,
    with_betas,
)
from .registry import register


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a, b>`` of each model (over the last two axes) as a float64 (..., 1, 1) tensor:
    for one model torch.dot in the weights' dtype, as the references compute it."""
    if a.dim() == 2:
        return torch.dot(a.flatten(), b.flatten()).double().view(1, 1)
    return (a * b).sum(dim=(-2, -1), keepdim=True, dtype=torch.float64)


def _l1(a: torch.Tensor) -> torch.Tensor:
    """``|a|_1`` of each model, as the references' ``a.abs().sum()``."""
    if a.dim() == 2:
        return a.abs().sum().double().view(1, 1)
    return a.abs().sum(dim=(-2, -1), keepdim=True, dtype=torch.float64)


def _coefficient(w: torch.Tensor):
    """A per-model float64 scalar as the kernels take it: a Python float for one (d, C)
    parameter (the references' exact kernel calls), else, for the loop's (S, m, C, d)
    blocks, a tensor in the weights' dtype (the same arithmetic alone or in a batch)."""
    return lambda x: float(x) if w.dim() == 2 else x.to(w.dtype)


def _scalar(w: torch.Tensor, value: Any) -> torch.Tensor:
    """A float64 (S, m, 1, 1) per-model scalar starting at ``value``: one number, or one per
    configuration (a d0 that differs inside a batch)."""
    shape = (*w.shape[:-2], 1, 1)
    if isinstance(value, torch.Tensor):
        return value.to(device=w.device, dtype=torch.float64).expand(shape).clone()
    return torch.full(shape, value, dtype=torch.float64, device=w.device)


class _DAdapted(Rule):
    default_schedule = "constant"
    lr = Setting(1.0, POSITIVE, "multiplier of the estimated step d (leave at 1)")
    beta1 = Setting(0.9, UNIT, "decay of the first moment")
    beta2 = Setting(0.999, UNIT, "decay of the second moment")
    eps = Setting(1e-8, POSITIVE, "added to the denominator")
    d0 = Setting(1e-6, POSITIVE, "initial estimate of d")
    decouple = Setting(True, None, "decoupled weight decay (w <- w - wd d lr w) instead of L2")
    use_bias_correction = Setting(False, None, "Adam's bias correction on d lr")
    weight_decay = Setting(0.0, NON_NEGATIVE, "weight decay: w <- w - wd d lr w with "
                           "decouple, else the L2 gradient wd*w")

    @classmethod
    def decouples(cls, values):
        return bool(values.get("decouple", cls.decouple.default))

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        if not is_zero(self.weight_decay) and not self.decouple:
            g = add_(g.clone(), self.weight_decay, w)  # L2, as the reference's grad.add_
        self.update(w, g, state, lr)

    def _dlr(self, state, lr):
        k, b1, b2 = state["t"] - 1, self.beta1, self.beta2
        bias = ((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) \
            if self.use_bias_correction else 1
        return state["d"] * lr * bias

    def _decoupled_decay(self, w, dlr):
        """``w <- w - wd dlr w``, with the step's d lr, when the decay is decoupled."""
        if not is_zero(self.weight_decay) and self.decouple:
            add_(w, _coefficient(w)(-(self.weight_decay * dlr)), w)

    def diagnostics(self, state):
        return {"d_estimate": state["d"]}


@register
class Prodigy(_DAdapted):
    """Prodigy (Mishchenko & Defazio 2024): Adam with step ``d lr``, where
    ``d = max_k d_coef (sum_j d_j lr <g_j, w_0 - w_j>) / |s|_1`` and ``s`` accumulates the
    d-weighted gradients: ``m <- b1 m + d (1 - b1) g ; v <- b2 v + d^2 (1 - b2) g^2 ;
    w <- w - d lr m / (sqrt(v) + d eps)``."""

    name = "prodigy"

    landscape_lr = "lr_free"
    reference = Reference(
        "prodigyopt 1.1.2 (Prodigy)", with_betas(from_package("prodigyopt:Prodigy")),
        float64_only={"beta1": "the reference sums <g, w0 - w> in float32 over W (d, C), the "
                      "loop in float64 over W^T (C, d); at beta1 0.45 or 0.8, d's growth "
                      "amplifies that into 7e-6 to 2e-5 of the weights in 30 steps (the "
                      "reference's own float32 run is 5e-6 to 3e-4 from its float64 run)"})
    decoupled_decay = True
    d_coef = Setting(1.0, POSITIVE, "multiplier of the estimate d_hat")
    safeguard_warmup = Setting(False, None, "leave lr out of the denominator sum s")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w),
                "s": torch.zeros_like(w), "w0": w.clone(), "d": _scalar(w, self.d0),
                "d_max": _scalar(w, self.d0), "numerator": _scalar(w, 0.0)}

    def update(self, w, g, state, lr):
        b1, b2, d0 = self.beta1, self.beta2, self.d0
        b3 = b2**0.5
        c = _coefficient(w)
        d = state["d"]
        dlr = self._dlr(state, lr)
        numerator = state["numerator"] * b3 + (d / d0) * dlr * _dot(g, state["w0"] - w)
        m, v, s = state["m"], state["v"], state["s"]
        add_(m.mul_(b1), c(d * (1 - b1)), g)
        addcmul_(v.mul_(b2), c(d * d * (1 - b2)), g, g)
        add_(s.mul_(b3), c((d / d0) * (d if self.safeguard_warmup else dlr)), g)
        d_hat = self.d_coef * numerator / _l1(s)
        d_max = torch.maximum(state["d_max"], d_hat)
        state.update(numerator=numerator, d=d_max, d_max=d_max)  # growth_rate infinite
        denom = sqrt(v).add_(c(d_max * self.eps))
        self._decoupled_decay(w, dlr)
        addcdiv_(w, c(-dlr), m, denom)


@register
class DAdaptAdam(_DAdapted):
    """D-Adaptation Adam (Defazio & Mishchenko 2023): Adam whose step is ``d lr``, with
    ``d = max(d, sum_k d_k lr <g_k, s_k / sqrt(v_k)> / ((1 - sqrt(b2)) |s|_1))``,
    ``m <- b1 m + d lr (1 - b1) g ; w <- w - m / (sqrt(v) + eps)``."""

    name = "dadapt-adam"

    landscape_lr = "lr_free"
    reference = Reference(
        "dadaptation 3.2 (DAdaptAdam)", with_betas(from_package("dadaptation:DAdaptAdam")),
        float64_only={"*": "the reference sums <g, s / sqrt(v)> and |s|_1 in float32 (torch.dot "
                      "over W (d, C)), the loop in float64 over W^T (C, d); d's growth makes "
                      "that 2.6e-5 of the weights in 30 steps (the reference's own float32 run "
                      "from its float64 run), and the two float32 runs 2e-6 apart on a CPU "
                      "with AVX-512 (within 1e-6 on others)"})
    decouple = Setting(False, None, "decoupled weight decay (w <- w - wd d lr w) instead of "
                       "L2")
    weight_decay = Setting(0.0, NON_NEGATIVE, "L2 penalty, or with --decouple decoupled")

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w),
                "s": torch.zeros_like(w), "d": _scalar(w, self.d0),
                "numerator": _scalar(w, 0.0)}

    def update(self, w, g, state, lr):
        b1, b2 = self.beta1, self.beta2
        sb2 = b2**0.5
        c = _coefficient(w)
        dlr = self._dlr(state, lr)
        m, v, s = state["m"], state["v"], state["s"]
        denom = sqrt(v).add_(self.eps)
        acc = dlr * _dot(g, s.div(denom))
        add_(m.mul_(b1), c(dlr * (1 - b1)), g)
        addcmul_(v.mul_(b2), 1 - b2, g, g)
        add_(s.mul_(sb2), c(dlr * (1 - sb2)), g)
        numerator = sb2 * state["numerator"] + (1 - sb2) * acc
        d_hat = numerator / ((1 - sb2) * _l1(s))
        state.update(numerator=numerator, d=torch.maximum(state["d"], d_hat))
        denom = sqrt(v).add_(self.eps)
        self._decoupled_decay(w, dlr)
        w.addcdiv_(m, denom, value=-1)


@register
class DAdaptSGD(Rule):
    """D-Adaptation SGD (Defazio & Mishchenko 2023): dual averaging with the step
    ``d lr / |g_0|``: ``s <- s + d lr / |g_0| g ; z = w_0 - s ; w <- momentum w + (1 -
    momentum) z``, where ``d = max(d, 2 sum_k <g_k, s_k> d_k lr / |g_0| / |s|)`` estimates
    the distance to the solution; weight decay is the L2 gradient, as the reference's."""

    name = "dadapt-sgd"

    landscape_lr = "lr_free"
    reference = Reference("dadaptation 3.2 (DAdaptSGD)", from_package("dadaptation:DAdaptSGD"))
    default_schedule = "constant"
    lr = Setting(1.0, POSITIVE, "multiplier of the estimated step d (leave at 1)")
    momentum = Setting(0.0, UNIT, "averaging: w <- momentum w + (1 - momentum) z")
    d0 = Setting(1e-6, POSITIVE, "initial estimate of d")

    def init(self, w):
        return {"t": 0, "s": torch.zeros_like(w), "w0": w.clone(), "d": _scalar(w, self.d0),
                "numerator": _scalar(w, 0.0), "g0": _scalar(w, 0.0)}

    def step(self, w, g, state, lr, batch=None):
        state["t"] += 1
        if state["t"] == 1:  # |g_0| without the decay, as the reference's first step
            state["g0"] = sumsq(g).sqrt()
        if not is_zero(self.weight_decay):
            g = add_(g.clone(), self.weight_decay, w)
        self.update(w, g, state, lr)

    def update(self, w, g, state, lr):
        c = _coefficient(w)
        dlr = state["d"] * lr / state["g0"]
        s = state["s"]
        numerator = state["numerator"] + dlr * _dot(g, s)
        add_(s, c(dlr), g)
        d_hat = 2 * numerator / sumsq(s).sqrt()
        state.update(numerator=numerator, d=torch.maximum(state["d"], d_hat))
        z = state["w0"] - s
        ck = 1 - self.momentum
        add_(w.mul_(1 - ck), ck, z)

    def diagnostics(self, state):
        return {"d_estimate": state["d"]}
