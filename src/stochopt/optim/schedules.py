"""Learning-rate schedules: the factor that multiplies the base learning rate, as a function
of the training progress ``e`` in epochs (``e = epoch + i / steps_per_epoch`` at the start of
step ``i``; 0 at the very first step).

    lr(e) = lr_0 * schedule(e)

Parameters may be tensors of shape ``(K, 1, 1)``, so one schedule serves K configurations.
Schedules compose by multiplication: ``Warmup(Exponential(0.9), epochs=1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SettingError, StochoptError
from ..settings import NON_NEGATIVE, Interval, Setting
from .base import Hyper


class Schedule:
    def __call__(self, e: float) -> Hyper:
        raise NotImplementedError


@dataclass
class Constant(Schedule):
    """``1``."""

    def __call__(self, e):
        return 1.0


@dataclass
class Exponential(Schedule):
    """``gamma ** floor(e)``: multiply the rate by gamma after every epoch (the exercise's
    x0.9, torch's ExponentialLR stepped once per epoch)."""

    gamma: Hyper = 0.9

    def __call__(self, e):
        return self.gamma ** math.floor(e)


@dataclass
class Step(Schedule):
    """``gamma ** floor(e / step_size)``: multiply by gamma every ``step_size`` epochs (StepLR)."""

    gamma: Hyper = 0.1
    step_size: int = 3

    def __call__(self, e):
        return self.gamma ** math.floor(e / self.step_size)


@dataclass
class Cosine(Schedule):
    """``min_factor + (1 - min_factor) (1 + cos(pi e / epochs)) / 2``, updated every step
    (CosineAnnealingLR with T_max = all steps)."""

    epochs: float = 10
    min_factor: Hyper = 0.0

    def __call__(self, e):
        cosine = (1 + math.cos(math.pi * e / self.epochs)) / 2
        return self.min_factor + (1 - self.min_factor) * cosine


@dataclass
class InverseTime(Schedule):
    """``1 / (1 + decay * e)``, updated every step (the classic Robbins-Monro O(1/t) decay)."""

    decay: Hyper = 1.0

    def __call__(self, e):
        return 1 / (1 + self.decay * e)


@dataclass
class Warmup(Schedule):
    """``inner(e) * (start + (1 - start) * min(1, e / epochs))``: a linear warm-up from
    ``start`` times the rate to the full rate over the first ``epochs`` epochs."""

    inner: Schedule
    epochs: float = 1.0
    start: float = 0.01

    def __call__(self, e):
        ramp = self.start + (1 - self.start) * min(1.0, e / self.epochs)
        return self.inner(e) * ramp


# what ``lr_decay`` means for each schedule, its default and its range, declared once
DECAY: dict[str, Setting | None] = {
    "constant": None,
    "exponential": Setting(0.9, NON_NEGATIVE, "factor per epoch", "lr_decay"),
    "step": Setting(0.1, NON_NEGATIVE, "factor every step_size epochs", "lr_decay"),
    "cosine": Setting(0.0, Interval(0, 1), "final factor (a factor above 1 would make the "
                      "rate rise)", "lr_decay"),
    "inverse-time": Setting(1.0, NON_NEGATIVE, "rate of the 1/(1 + rate e) decay", "lr_decay"),
}
DEFAULT_DECAY = {name: None if s is None else s.default for name, s in DECAY.items()}
SCHEDULES = {"constant": Constant, "exponential": Exponential, "step": Step, "cosine": Cosine,
             "inverse-time": InverseTime}


def make_schedule(name: str, lr_decay: Hyper | None = None, epochs: int = 10,
                  step_size: int = 3, warmup_epochs: float = 0.0) -> Schedule:
    """The schedule ``name``. ``lr_decay`` (default :data:`DEFAULT_DECAY`) is gamma for
    exponential and step, the decay rate for inverse-time and the final factor for cosine;
    ``warmup_epochs > 0`` adds a linear warm-up."""
    check_schedule(name, lr_decay)
    decay = DEFAULT_DECAY[name] if lr_decay is None else lr_decay
    schedule: Schedule = {
        "constant": lambda: Constant(),
        "exponential": lambda: Exponential(decay),
        "step": lambda: Step(decay, step_size),
        "cosine": lambda: Cosine(epochs, decay),
        "inverse-time": lambda: InverseTime(decay),
    }[name]()
    return Warmup(schedule, warmup_epochs) if warmup_epochs > 0 else schedule


def check_schedule(name: str, lr_decay: Hyper | None = None) -> None:
    """Raise unless ``name`` is a schedule and ``lr_decay`` (if given) is allowed for it."""
    if name not in SCHEDULES:
        raise StochoptError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if lr_decay is None:
        return
    if DECAY[name] is None:
        raise SettingError(f"{{lr_decay}} does not apply to the {name} schedule", "lr_decay")
    decay = DECAY[name]
    try:
        decay.check(lr_decay)
    except SettingError as e:
        raise SettingError.bad("lr_decay", f"of the {name} schedule ({decay.help}) "
                               f"{str(e).removeprefix('lr_decay ')}") from None
