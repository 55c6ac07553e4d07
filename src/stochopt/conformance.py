"""The conformance kit: what every update rule must do, checked from its declaration alone
(scikit-learn's ``check_estimator`` idea). ``tests/test_conformance.py`` runs it over the
registry, so a rule added tomorrow is checked without anyone writing a test:

    for check in checks("my-rule"):
        check(split)          # raises AssertionError (or the rule's own error) naming it

- ``per_configuration_tensors``: every float setting given as per-configuration tensors in
  one batch of three equals the three runs alone;
- ``batch_beside_another_rule``: inside a batch of four (two seeds, beside another rule),
  each run equals itself alone;
- ``ranges_refused``: a value outside a setting's declared range (or of the wrong type) is
  refused when the rule is constructed;
- ``table_row``: its row of the docs' table is read off its declaration.

Runs are 10 steps of batch 32 on the split given, in float64 (the comparisons are then
exact to 1e-10, not float32's last digits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch

from .config import Config
from .errors import StochoptError
from .optim import RULES, get_rule, markdown_table
from .settings import Interval, Setting
from .train import fit

STEPS, BATCH = 10, 32
TOL = 1e-10


def _small(split: Any) -> Any:
    """The first mini-batches of the training part, in float64: one epoch is STEPS steps."""
    n = STEPS * BATCH
    as64 = {f"X_{p}": getattr(split, f"X_{p}")[:n].double() for p in ("train", "val", "test")}
    ys = {f"y_{p}": getattr(split, f"y_{p}")[:n] for p in ("train", "val", "test")}
    return replace(split, **as64, **ys, sample_weight=None)


def _config(name: str, **values: Any) -> Config:
    settings = {k: values.pop(k) for k in ("lr", "seed") if k in values}
    return Config(name, epochs=1, batch_size=BATCH, hyper=values, **settings)


def other_value(setting: Setting) -> Any | None:
    """A value inside the declared range other than the default (None: no such value)."""
    d, c = setting.default, setting.constraint
    if not isinstance(d, float) or (isinstance(c, Interval) and c.integer):
        return None
    candidates = [d * 0.5, d * 0.9, d * 1.1, 1e-3, 0.5] if d else [1e-3, 1e-2, 0.5]
    for v in candidates:
        if v != d and (c is None or v in c):
            return v
    return None


def bad_values(setting: Setting) -> list[Any]:
    """Values the declaration must refuse: below or above its range, NaN, a wrong type."""
    if setting.kind is bool:
        return ["yes", 1]
    c = setting.constraint
    if not isinstance(c, Interval):
        return []
    bad: list[Any] = [math.nan]
    if math.isfinite(c.low):
        bad.append(c.low - 1.0 if not c.integer else int(c.low) - 1)
    if math.isfinite(c.high):
        bad.append(c.high + 1.0)
    if c.integer:
        bad.append(float(c.low) + 0.5)
    return bad


def _final_weights(configs: list[Config], split: Any) -> torch.Tensor:
    carry: dict[str, Any] = {}
    fit(configs, split, carry=carry)
    return carry["W"]


def _gap_to_alone(together: torch.Tensor, config: Config, split: Any) -> float:
    """How far a run trained in a batch (its final weights ``together``) is from the same
    configuration trained alone."""
    return (together - _final_weights([config], split)[0]).abs().max().item()


def per_configuration_tensors(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        small = _small(split)
        rule = get_rule(name)
        # three configurations that differ in every float setting at once (the lr too): each
        # setting arrives as an (S, m, 1, 1) tensor, and all of them together
        values: dict[str, list[Any]] = {"lr": [rule.lr.default * f for f in (1.0, 0.5, 0.25)]}
        for setting_name, setting in rule.settings().items():
            value = other_value(setting)
            if value is not None and setting_name != "lr":
                values[setting_name] = [setting.default, value, (setting.default + value) / 2]
        configs = [_config(name, **{n: v[k] for n, v in values.items()}) for k in range(3)]
        together = _final_weights(configs, small)
        for k, c in enumerate(configs):
            gap = _gap_to_alone(together[k], c, small)
            differing = ", ".join(f"{n}={v[k]:g}" for n, v in values.items())
            assert gap <= TOL, (f"{name}: {differing} in a batch of three differs from the "
                                f"run alone by {gap:.2e}")
    return check


def batch_beside_another_rule(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        small = _small(split)
        rule = get_rule(name)
        # another rule that can share its batch (the same gradient estimator), else itself
        # at another lr
        other = next((o for o, r in RULES.items() if o != name and r.estimator == rule.estimator
                      and not r.plugin), None)
        mates = [_config(name, seed=s) for s in (0, 1)]
        mates += [_config(other, seed=s) if other else _config(name, seed=s,
                                                             lr=rule.lr.default * 0.5)
                  for s in (0, 1)]
        together = _final_weights(mates, small)
        order = [c for s in (0, 1) for c in mates if c.seed == s]  # the batch's seed-major order
        for k, c in enumerate(order):
            if c.optimizer != name:
                continue
            gap = _gap_to_alone(together[k], c, small)
            assert gap <= TOL, (f"{name} (seed {c.seed}) in a batch of four beside "
                                f"{other or 'itself'} differs from the run alone by {gap:.2e}")
    return check


def ranges_refused(name: str) -> Callable[[Any], None]:
    def check(split: Any) -> None:
        rule = get_rule(name)
        for setting_name, setting in rule.settings().items():
            for bad in bad_values(setting):
                try:
                    rule(**{setting_name: bad})
                except StochoptError:
                    continue
                raise AssertionError(f"{name}: {setting_name}={bad!r} is outside its declared "
                                     f"range but was accepted")
    return check


def table_row(name: str, table: str | None = None) -> Callable[[Any], None]:
    """``table``: the text the row must be found in (the docs' page); default: the table
    generated now, which checks that generating it reads this rule."""
    def check(split: Any) -> None:
        rows = [line for line in markdown_table().splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, f"{name} has {len(rows)} rows in the generated table"
        rule = get_rule(name)
        for setting_name in rule.settings():
            assert setting_name in rows[0], f"{name}'s row does not list {setting_name}"
        assert rule.reference in rows[0] and rule.default_schedule in rows[0]
        if table is not None:
            assert rows[0] in table, f"{name}'s row of the docs' table is stale: regenerate it"
    return check


CHECKS = {"per_configuration_tensors": per_configuration_tensors,
          "batch_beside_another_rule": batch_beside_another_rule,
          "ranges_refused": ranges_refused, "table_row": table_row}


def checks(name: str) -> Iterator[Callable[[Any], None]]:
    """Every check of the kit for the rule ``name``."""
    for make in CHECKS.values():
        yield make(name)
