"""Step sizes from the mini-batch loss itself: the stochastic Polyak step (SPS_max, Loizou
et al. 2021) and the stochastic Armijo line search (Vaswani et al. 2019).

These rules need the mini-batch loss, not only its gradient: the loop hands each step a
:class:`~stochopt.optim.base.StepBatch` (``batch.loss``, each model's batch loss at w,
(..., 1, 1) float64; for the line search ``batch.loss_at``, each model's loss on the same
batch at trial weights, and ``batch.fraction``, the batch's share of an epoch). Neither
has a maintained package; their references are plain loops written from the papers'
pseudo-code (:class:`SPSLoop`, :class:`ArmijoLoop`) over one matrix, the step's objective
from the caller's closure.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..settings import NON_NEGATIVE, POSITIVE, Interval, Setting
from .base import Reference, Rule, is_zero, sumsq
from .registry import register

OPEN_UNIT = Interval(0.0, 1.0, low_open=True, high_open=True)


class _BatchLoss(Rule):
    default_schedule = "constant"
    needs_loss: ClassVar[bool] = True

    def _objective(self, w, loss):
        """The batch objective: the loss plus (wd/2)|w|^2 when there is weight decay."""
        if is_zero(self.weight_decay):
            return loss
        return loss + self.weight_decay / 2 * sumsq(w)

    def diagnostics(self, state):
        return {"step_size": state["step_size"]}


@register
class SPS(_BatchLoss):
    """Stochastic Polyak step, SPS_max (Loizou et al. 2021, eq. 7):
    ``gamma = min(max((f_B(w) - f_B*) / (c |g_B|^2), 0), lr) ; w <- w - gamma g_B``, with
    ``f_B* = f_star`` a lower bound of every mini-batch loss (0 for cross-entropy); lr is
    the cap gamma_b. A ``f_star`` above the batch loss (not a lower bound there) gives a
    zero step, never an uphill one."""

    name = "sps"

    landscape_lr = "lr_free"
    reference = Reference("a plain loop over the paper's eq. 7 (SPSLoop)",
                          lambda params, **s: SPSLoop(params, **s), closure=True,
                          l2_in_loss=True)
    lr = Setting(1.0, POSITIVE, "largest step gamma_b")
    c = Setting(0.5, POSITIVE, "the Polyak constant c")
    f_star = Setting(0.0, NON_NEGATIVE, "lower bound of every mini-batch loss")

    def init(self, w):
        return {"t": 0, "step_size": torch.zeros((*w.shape[:-2], 1, 1), dtype=torch.float64,
                                                 device=w.device)}

    def update(self, w, g, state, lr, batch):
        f = self._objective(w, batch.loss)
        polyak = ((f - self.f_star) / (self.c * sumsq(g))).clamp_(min=0)
        gamma = torch.minimum(polyak, torch.as_tensor(lr, dtype=torch.float64))
        state["step_size"] = gamma
        w.sub_(g * gamma.to(w.dtype))


@register
class Armijo(_BatchLoss):
    """Stochastic Armijo line search (Vaswani et al. 2019, Algorithm 1 with reset option 2):
    from ``eta = eta_prev gamma^(B/N)`` (at most lr), shrink ``eta <- beta eta`` until
    ``f_B(w - eta g_B) <= f_B(w) - c eta |g_B|^2`` (eq. 1); then ``w <- w - eta g_B``."""

    name = "armijo"

    landscape_lr = "lr_free"
    reference = Reference("a plain loop over the paper's Algorithm 1 (ArmijoLoop)",
                          lambda params, **s: ArmijoLoop(params, **s), closure=True,
                          l2_in_loss=True, data=True)
    lr = Setting(1.0, POSITIVE, "largest step eta_max (and the first)")
    c = Setting(0.1, OPEN_UNIT, "Armijo's constant c")
    beta = Setting(0.9, OPEN_UNIT, "backtracking factor")
    gamma = Setting(2.0, Interval(1.0, 1e3), "growth of the first trial per epoch")
    MAX_TRIALS: ClassVar[int] = 200

    def init(self, w):
        # gave_up: per model, the steps whose search ended at MAX_TRIALS unsatisfied
        return {"t": 0, "step_size": None, "gave_up": torch.zeros(
            (*w.shape[:-2], 1, 1), dtype=torch.float64, device=w.device)}

    def diagnostics(self, state):
        return {**super().diagnostics(state), "line_search_gave_up": state["gave_up"]}

    def update(self, w, g, state, lr, batch):
        lr64 = torch.as_tensor(lr, dtype=torch.float64, device=w.device)
        prev = state["step_size"]
        eta = lr64 * torch.ones_like(batch.loss) if prev is None else torch.minimum(
            prev * self.gamma ** batch.fraction, lr64)
        f, gsq = self._objective(w, batch.loss), sumsq(g)
        for _ in range(self.MAX_TRIALS):
            trial = w - g * eta.to(w.dtype)
            ok = self._objective(trial, batch.loss_at(trial)) <= f - self.c * eta * gsq
            if bool(ok.all()):
                break
            eta = torch.where(ok, eta, self.beta * eta)
        else:  # the trials ran out: those models step with a step that failed the test
            state["gave_up"] += (~ok).to(torch.float64)
        state["step_size"] = eta
        w.sub_(g * eta.to(w.dtype))


class SPSLoop(torch.optim.Optimizer):
    """SPS_max's reference, Loizou et al. 2021, eq. 7, as a plain loop over one matrix:
    ``f = closure()`` is the step's objective at w and ``p.grad`` its gradient g;
    ``gamma = min(max((f - f_star) / (c |g|^2), 0), lr) ; w <- w - gamma g``."""

    def __init__(self, params, lr: float, c: float, f_star: float) -> None:
        super().__init__(params, {"lr": lr, "c": c, "f_star": f_star})

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        (p,) = group["params"]
        f = float(closure())
        g = p.grad
        polyak = max((f - group["f_star"]) / (group["c"] * float((g * g).sum())), 0.0)
        p.sub_(min(polyak, group["lr"]) * g)


class ArmijoLoop(torch.optim.Optimizer):
    """The stochastic Armijo line search's reference, Vaswani et al. 2019, Algorithm 1
    (reset option 2) with eq. 1, as a plain loop over one matrix: ``eta = min(eta_prev
    gamma^(B/N), lr)`` (lr at the first step); while ``f(w - eta g) > f(w) - c eta |g|^2``
    (``f`` from the closure, at most MAX_TRIALS tries): ``eta <- beta eta``; then
    ``w <- w - eta g``."""

    def __init__(self, params, lr: float, c: float, beta: float, gamma: float,
                 X: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        super().__init__(params, {"lr": lr, "c": c, "beta": beta, "gamma": gamma})
        self.fraction, self.eta = batch_size / len(X), None

    @torch.no_grad()
    def step(self, closure=None, idx=None):
        group = self.param_groups[0]
        (p,) = group["params"]
        w, g = p.detach().clone(), p.grad.clone()
        f, gsq = float(closure()), float((g * g).sum())
        eta = group["lr"] if self.eta is None else min(
            self.eta * group["gamma"] ** self.fraction, group["lr"])
        for _ in range(Armijo.MAX_TRIALS):
            p.copy_(w - eta * g)
            if float(closure()) <= f - group["c"] * eta * gsq:
                break
            eta *= group["beta"]
        self.eta = eta
        p.copy_(w - eta * g)
