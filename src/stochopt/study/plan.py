"""Planning a study: from lists of values to the configurations to train.

    configs, notes = grid(["momentum", "adam"], {"seed": [0, 1, 2]})  # every combination
    configs, notes = tune_grid(["momentum", "adam"], {"seed": [0, 1]})  # each over its lrs
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from typing import Any

from ..config import Config
from ..errors import Named, SettingError, StochoptError, escape
from ..optim import RULES, get_rule
from ..settings import as_kind

CONFIG_LISTS = tuple(f.name for f in fields(Config) if f.name not in ("optimizer", "hyper"))


def grid(optimizers: list[str], values: dict[str, list[Any]], scale_lr: bool = False
         ) -> tuple[list[Config], list[Named]]:
    """Every combination of ``optimizers`` with the listed ``values`` (Config settings such
    as ``lr``, ``batch_size``, ``seed``, and optimiser hyperparameters such as ``momentum``).

    A hyperparameter goes to the optimisers that declare it; one that none of them has is
    refused, one that only some have comes back as a note naming them. ``scale_lr`` applies
    the linear scaling rule ``lr * batch_size / 64``. Every configuration is validated and
    must be unique."""
    rules = {name: get_rule(name) for name in optimizers}
    hyper = {n: v for n, v in values.items() if n not in CONFIG_LISTS}
    notes: list[Named] = []
    for name in hyper:
        takers = [o for o, rule in rules.items() if name in rule.hyperparameters()]
        if not takers:
            plugins = [o for o, rule in rules.items() if rule.plugin]
            if plugins:  # someone else's optimiser: say what it takes instead
                takes = "; ".join(f"{o} takes {', '.join(rules[o].hyperparameters())}"
                                  for o in plugins)
                raise StochoptError(f"{name!r} is not a hyperparameter of "
                                    f"{', '.join(optimizers)}: {takes}")
            owners = [o for o, rule in RULES.items() if name in rule.hyperparameters()]
            raise SettingError(f"{{{name}}} does not apply to {{optimizer}} "
                               f"{escape(', '.join(optimizers))}; it is a hyperparameter of "
                               f"{escape(', '.join(owners) or 'no optimizer')}",
                               name, "optimizer")
        if len(takers) < len(rules):
            others = [o for o in rules if o not in takers]
            notes.append(Named(f"{{{name}}} applies to {escape(', '.join(takers))} only, not "
                               f"to {escape(', '.join(others))}", name))
    defaults = {f.name: f.default for f in fields(Config)}
    settings = {n: values.get(n, [defaults[n]]) for n in CONFIG_LISTS}
    configs = []
    for optimizer, rule in rules.items():
        mine = {n: v for n, v in hyper.items() if n in rule.hyperparameters()}
        declared = rule.settings()
        for combo in itertools.product(*settings.values(), *mine.values()):
            given = dict(zip([*settings, *mine], combo, strict=True))
            chosen = {n: as_kind(declared[n].kind, given.pop(n)) for n in mine}
            config = Config(optimizer=optimizer, hyper=chosen, **given)
            if scale_lr:
                config.lr = config.base_lr * config.batch_size / 64
            config.validate()
            configs.append(config)
    check_unique(configs)
    return configs, notes


def lr_grid(optimizer: str, points: int = 13, decades: float = 3.0) -> list[float]:
    """``points`` learning rates, log-spaced over ``decades`` centred on the optimizer's
    default (13 over three decades: four per decade, the default in the middle)."""
    centre = get_rule(optimizer).lr.default
    if points == 1:
        return [centre]
    return [float(f"{centre * 10 ** (decades * (i / (points - 1) - 0.5)):.6g}")
            for i in range(points)]


def tune_grid(optimizers: list[str], values: dict[str, list[Any]],
              lrs: list[float] | None = None, scale_lr: bool = False, points: int = 13,
              decades: float = 3.0) -> tuple[list[Config], list[Named]]:
    """:func:`grid` with each optimizer over its own lr grid (:func:`lr_grid` of
    ``points`` over ``decades``), or over ``lrs`` when given: the same budget for each, as
    DeepOBS and AlgoPerf compare."""
    values = {k: v for k, v in values.items() if k != "lr"}
    _, notes = grid(optimizers, values)  # refuses a hyperparameter none of them has
    configs: list[Config] = []
    for optimizer in optimizers:
        mine = {k: v for k, v in values.items()
                if k in CONFIG_LISTS or k in get_rule(optimizer).hyperparameters()}
        grid_lrs = lrs or lr_grid(optimizer, points, decades)
        configs += grid([optimizer], {**mine, "lr": grid_lrs}, scale_lr)[0]
    check_unique(configs)
    return configs, notes


def check_unique(configs: list[Config]) -> None:
    seen: set[str] = set()
    for c in configs:
        if c.run_id in seen:
            raise StochoptError(f"configuration {c.run_id} is listed twice (a value repeated "
                                "in a list?); list each configuration once")
        seen.add(c.run_id)
