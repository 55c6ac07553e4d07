"""Update rules, one small class each, in torch.optim's conventions.

Each optimiser is a pair in the optax spirit:

    state = opt.init(w)                 # zeros shaped like w, plus a step counter
    opt.step(w, g, state, lr)           # updates w (and state) in place

``lr`` comes from the training loop's schedule at every step, so an optimiser never knows
about epochs. Hyperparameters are plain numbers or tensors of shape ``(K, 1, 1)``, so the
same code updates one model ``(d, C)`` or K models ``(K, d, C)`` with K different settings.

``weight_decay`` is the L2 penalty ``(wd/2)||w||^2``: :meth:`Optimizer.step` adds
``wd * w`` to the gradient before the rule, as torch.optim does (AdamW instead decays the
weights directly). ``t`` is the 1-based step number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

Hyper = Any  # float, or a tensor that broadcasts against the weights, e.g. (K, 1, 1)
State = dict[str, Any]


def _is_zero(x: Hyper) -> bool:
    return not isinstance(x, torch.Tensor) and x == 0


# y <- y + a * x (* x2, / x2) in one kernel when a is a number, as torch.optim writes its
# updates; a (K, 1, 1) tensor of K values costs one more small op. A mini-batch step is a
# few dozen such calls, so their count, not their arithmetic, sets its speed.
def _add_(y: torch.Tensor, a: Hyper, x: torch.Tensor) -> torch.Tensor:
    return y.addcmul_(a, x) if isinstance(a, torch.Tensor) else y.add_(x, alpha=a)


def _decay_add_(y: torch.Tensor, a: Hyper, x: torch.Tensor) -> torch.Tensor:
    """y <- a * y + x."""
    if isinstance(a, torch.Tensor):
        return y.mul_(a).add_(x)
    return torch.add(x, y, alpha=a, out=y)


def _addcmul_(y: torch.Tensor, a: Hyper, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return y.addcmul_(a * x, x2)
    return y.addcmul_(x, x2, value=a)


def _addcdiv_(y: torch.Tensor, a: Hyper, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return y.addcdiv_(a * x, x2)
    return y.addcdiv_(x, x2, value=a)


@dataclass
class Optimizer:
    name: ClassVar[str]
    default_lr: ClassVar[float]
    weight_decay: Hyper = 0.0

    def init(self, w: torch.Tensor) -> State:
        return {"t": 0}

    def update(self, w: torch.Tensor, g: torch.Tensor, state: State, lr: Hyper) -> None:
        raise NotImplementedError

    def step(self, w: torch.Tensor, g: torch.Tensor, state: State, lr: Hyper) -> None:
        state["t"] += 1
        if not _is_zero(self.weight_decay):
            g = _add_(g.clone(), self.weight_decay, w)
        self.update(w, g, state, lr)

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Name -> default of every hyperparameter besides ``lr``."""
        return {f.name: f.default for f in fields(cls)}


@dataclass
class SGD(Optimizer):
    """Plain stochastic gradient descent:  ``w <- w - lr * g``."""

    name: ClassVar[str] = "sgd"
    default_lr: ClassVar[float] = 0.1

    def update(self, w, g, state, lr):
        _add_(w, -lr, g)


@dataclass
class Momentum(Optimizer):
    """Heavy ball in torch's convention (lr outside the buffer, as in torch.optim.SGD):

        m_1 = g_1 ;  m_t = mu * m_{t-1} + (1 - dampening) * g_t ;  w <- w - lr * m_t

    With ``nesterov``: ``w <- w - lr * (g_t + mu * m_t)`` (Sutskever et al.'s look-ahead
    rewritten at the current point). The textbook ``v <- mu v - lr g; w <- w + v`` is the
    same only while lr is constant: here a schedule's new lr also scales the old momentum.
    """

    name: ClassVar[str] = "momentum"
    default_lr: ClassVar[float] = 0.1
    momentum: Hyper = 0.9
    dampening: Hyper = 0.0
    nesterov: bool = False

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        m = state["m"]
        if state["t"] == 1:
            m.copy_(g)  # torch starts the buffer at g, without dampening
        elif _is_zero(self.dampening):
            _decay_add_(m, self.momentum, g)
        else:
            _add_(m.mul_(self.momentum), 1 - self.dampening, g)
        _add_(w, -lr, _add_(g.clone(), self.momentum, m) if self.nesterov else m)


@dataclass
class Nesterov(Momentum):
    __doc__ = Momentum.__doc__
    name: ClassVar[str] = "nesterov"
    nesterov: bool = True


@dataclass
class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al., 2011), as torch.optim.Adagrad with ``lr_decay=0``:

        s_t = s_{t-1} + g_t^2 ;  w <- w - lr * g_t / (sqrt(s_t) + eps)

    eps is added outside the square root (optax's ``adagrad`` adds it inside); use an
    inverse-time schedule for torch's ``lr_decay``.
    """

    name: ClassVar[str] = "adagrad"
    default_lr: ClassVar[float] = 0.01
    eps: Hyper = 1e-10
    initial_accumulator_value: Hyper = 0.0

    def init(self, w):
        return {"t": 0, "s": torch.full_like(w, 0) + self.initial_accumulator_value}

    def update(self, w, g, state, lr):
        s = state["s"].addcmul_(g, g)
        _addcdiv_(w, -lr, g, s.sqrt().add_(self.eps))


@dataclass
class RMSProp(Optimizer):
    """RMSProp (Hinton's lecture 6e), as torch.optim.RMSprop:

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2
        centered:  a_t = alpha a_{t-1} + (1 - alpha) g_t ;  v~_t = v_t - a_t^2  (else v~_t = v_t)
        d_t = g_t / (sqrt(v~_t) + eps)
        momentum > 0:  b_t = mu b_{t-1} + d_t ;  w <- w - lr b_t     (else w <- w - lr d_t)

    eps is outside the square root (TensorFlow's and optax's put it inside).
    """

    name: ClassVar[str] = "rmsprop"
    default_lr: ClassVar[float] = 0.01
    alpha: Hyper = 0.99
    eps: Hyper = 1e-8
    momentum: Hyper = 0.0
    centered: bool = False

    def init(self, w):
        state = {"t": 0, "v": torch.zeros_like(w)}
        if self.centered:
            state["a"] = torch.zeros_like(w)
        if not _is_zero(self.momentum):
            state["b"] = torch.zeros_like(w)
        return state

    def update(self, w, g, state, lr):
        v = _addcmul_(state["v"].mul_(self.alpha), 1 - self.alpha, g, g)
        if self.centered:
            a = state["a"].lerp_(g, 1 - self.alpha)
            v = v.addcmul(a, a, value=-1)
        denom = v.sqrt().add_(self.eps)
        if "b" in state:
            _add_(w, -lr, state["b"].mul_(self.momentum).addcdiv_(g, denom))
        else:
            _addcdiv_(w, -lr, g, denom)


@dataclass
class AdaDelta(Optimizer):
    """AdaDelta (Zeiler, 2012), as torch.optim.Adadelta (whose lr, default 1, scales the step):

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        d_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
        u_t = rho u_{t-1} + (1 - rho) d_t^2 ;   w <- w - lr d_t
    """

    name: ClassVar[str] = "adadelta"
    default_lr: ClassVar[float] = 1.0
    rho: Hyper = 0.9
    eps: Hyper = 1e-6

    def init(self, w):
        return {"t": 0, "v": torch.zeros_like(w), "u": torch.zeros_like(w)}

    def update(self, w, g, state, lr):
        v = _addcmul_(state["v"].mul_(self.rho), 1 - self.rho, g, g)
        u = state["u"]
        d = (u + self.eps).sqrt_().div_((v + self.eps).sqrt_()).mul_(g)
        _addcmul_(u.mul_(self.rho), 1 - self.rho, d, d)
        _add_(w, -lr, d)


@dataclass
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, as torch.optim.Adam:

        m_t = b1 m_{t-1} + (1 - b1) g_t ;   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        amsgrad:  v^_t = max(v^_{t-1}, v_t)  (else v^_t = v_t)
        w <- w - lr / (1 - b1^t) * m_t / (sqrt(v^_t / (1 - b2^t)) + eps)

    eps is added after the bias correction of v (the paper's eps^ = eps sqrt(1 - b2^t) form
    differs slightly); optax.adam places it the same way.
    """

    name: ClassVar[str] = "adam"
    default_lr: ClassVar[float] = 1e-3
    beta1: Hyper = 0.9
    beta2: Hyper = 0.999
    eps: Hyper = 1e-8
    amsgrad: bool = False

    def init(self, w):
        state = {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w)}
        if self.amsgrad:
            state["vmax"] = torch.zeros_like(w)
        return state

    def update(self, w, g, state, lr):
        t = state["t"]
        m = state["m"].lerp_(g, 1 - self.beta1)
        v = _addcmul_(state["v"].mul_(self.beta2), 1 - self.beta2, g, g)
        if self.amsgrad:
            v = torch.maximum(state["vmax"], v, out=state["vmax"])
        denom = v.sqrt().div_((1 - self.beta2**t) ** 0.5).add_(self.eps)
        _addcdiv_(w, -lr / (1 - self.beta1**t), m, denom)


@dataclass
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019), as torch.optim.AdamW: the weights decay directly,
    ``w <- (1 - lr * wd) w``, then the Adam step runs on the raw gradient. Default wd 1e-2."""

    name: ClassVar[str] = "adamw"
    weight_decay: Hyper = 1e-2

    def step(self, w, g, state, lr):
        state["t"] += 1
        if not _is_zero(self.weight_decay):
            w.mul_(1 - lr * self.weight_decay)
        self.update(w, g, state, lr)


@dataclass
class NAdam(Optimizer):
    """NAdam (Dozat, 2016), as torch.optim.NAdam, with its momentum-decay schedule
    ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))`` and ``M_t = prod_{i<=t} mu_i``:

        m_t, v_t as in Adam ;  D = sqrt(v_t / (1 - b2^t)) + eps
        w <- w - lr (1 - mu_t) / (1 - M_t) * g_t / D - lr mu_{t+1} / (1 - M_t mu_{t+1}) * m_t / D

    optax.nadam uses a constant mu = b1 instead of this schedule.
    """

    name: ClassVar[str] = "nadam"
    default_lr: ClassVar[float] = 2e-3
    beta1: Hyper = 0.9
    beta2: Hyper = 0.999
    eps: Hyper = 1e-8
    momentum_decay: Hyper = 4e-3

    def init(self, w):
        return {"t": 0, "m": torch.zeros_like(w), "v": torch.zeros_like(w), "mu_product": 1.0}

    def update(self, w, g, state, lr):
        t, b1 = state["t"], self.beta1
        mu = b1 * (1 - 0.5 * 0.96 ** (t * self.momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * self.momentum_decay))
        state["mu_product"] = mu_product = state["mu_product"] * mu
        m = state["m"].lerp_(g, 1 - b1)
        v = _addcmul_(state["v"].mul_(self.beta2), 1 - self.beta2, g, g)
        denom = v.div(1 - self.beta2**t).sqrt_().add_(self.eps)
        _addcdiv_(w, -lr * (1 - mu) / (1 - mu_product), g, denom)
        _addcdiv_(w, -lr * mu_next / (1 - mu_product * mu_next), m, denom)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW,
                              NAdam)
}


def make_optimizer(name: str, **hyper: Hyper) -> Optimizer:
    """The optimiser ``name`` with the given hyperparameters (the rest at their defaults)."""
    from .errors import StochoptError

    if name not in OPTIMIZERS:
        raise StochoptError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    known = cls.hyperparameters()
    unknown = sorted(set(hyper) - set(known))
    if unknown:
        raise StochoptError(
            f"optimizer {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes {', '.join(known) or 'none besides lr'}"
        )
    return cls(**hyper)
