"""Settings declared once: a default, an allowed range and a line of help.

An update rule (or :class:`stochopt.config.Config`) declares each of its settings as a
:class:`Setting`; the command line's flags and ``--help``, the validation and its messages,
the columns of ``results.csv`` and the docs' table of optimisers are all read off these
declarations (scikit-learn's ``_parameter_constraints`` idea).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .errors import SettingError


@dataclass(frozen=True)
class Interval:
    """The numbers between ``low`` and ``high`` (each end closed unless ``*_open``);
    ``integer`` also requires a whole number. NaN is never inside."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __contains__(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        if self.integer and not float(v).is_integer():
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below and not math.isnan(v)

    def describe(self) -> str:
        """The rule in words: 'must be in [0, 1)', 'must be at least 1', ..."""
        low, high = _number(self.low), _number(self.high)
        if self.integer and self.high == math.inf:
            return f"must be at least {low}"
        if self.high == math.inf:
            if self.low == 0:
                return ("must be a positive finite number" if self.low_open
                        else "must be finite and >= 0")
            return f"must be finite and {'>' if self.low_open else '>='} {low}"
        return (f"must be in {'(' if self.low_open else '['}{low}, {high}"
                f"{')' if self.high_open else ']'}")


def _number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def as_kind(kind: type | None, value: Any) -> Any:
    """An int given for a float setting as that float: lr=1 is the run lr=1.0 is, and
    ``--hp weight_decay=0`` is 0.0."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


POSITIVE = Interval(0, math.inf, low_open=True, high_open=True)
NON_NEGATIVE = Interval(0, math.inf, high_open=True)
UNIT = Interval(0, 1, high_open=True)  # [0, 1): momenta, betas, decay rates of averages


@dataclass
class Setting:
    """One declared setting. Its type is its default's (bool, int or float); ``constraint``
    bounds a number. The name is the attribute's, set when the class is created."""

    default: Any
    constraint: Interval | None = None
    help: str = ""
    name: str = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    @property
    def kind(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> None:
        """Raise :class:`SettingError` unless ``value`` is allowed. A tensor of K values
        (one per configuration) is checked value by value."""
        if isinstance(value, torch.Tensor):
            for v in value.flatten().tolist():
                self.check(v)
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise SettingError.bad(self.name, f"must be true or false, got {value!r}")
            return
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise SettingError.bad(self.name, f"must be an integer, got {value!r}")
        if self.constraint is None:  # undeclared ranges (a plug-in's): the default's type
            self._check_type(value)
        if self.constraint is not None and value not in self.constraint:
            raise SettingError.bad(self.name, f"{self.constraint.describe()}, got {value!r}")

    def _check_type(self, value: Any) -> None:
        default = self.default
        if isinstance(default, float) and (isinstance(value, bool)
                                           or not isinstance(value, int | float)):
            raise SettingError.bad(self.name, f"must be a number, got {value!r}")
        if isinstance(default, tuple) and not (
                isinstance(value, tuple | list) and len(value) == len(default)):
            raise SettingError.bad(self.name, f"must be a tuple of {len(default)} values like "
                                   f"{default!r}, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise SettingError.bad(self.name, f"must be a string, got {value!r}")
