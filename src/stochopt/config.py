"""The two records of an experiment: :class:`Config`, one training run's settings, and
:class:`RunRecord`, what the run gave (per-epoch rows, test metrics, status, weights).

Config's own settings are declared once, as :class:`~stochopt.settings.Setting` metadata on
its fields; an optimiser's hyperparameters are declared by its rule (:mod:`stochopt.optim`).
Validation reads both, and names the setting as the Python API spells it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SettingError
from .files import safe_name
from .optim import Rule, get_rule
from .optim.schedules import DEFAULT_DECAY, Schedule, check_schedule, make_schedule
from .settings import NON_NEGATIVE, Interval, Setting, as_kind

COUNT = Interval(1, math.inf, integer=True)


def _setting(default: Any, constraint: Interval | None, help: str) -> Any:
    return field(default=default, metadata={"setting": Setting(default, constraint, help)})


@dataclass
class Config:
    """One training run. ``lr``, ``schedule`` and ``lr_decay`` left as None take the
    optimiser's declared defaults (see :meth:`resolved`); ``hyper`` holds the optimiser's
    other hyperparameters (momentum, beta1, weight_decay, ...)."""

    optimizer: str = "momentum"
    lr: float | None = None
    batch_size: int = _setting(64, COUNT, "mini-batch size (the last, partial batch is kept)")
    epochs: int = _setting(10, COUNT, "passes over the training split")
    schedule: str | None = None
    lr_decay: float | None = None
    step_size: int = _setting(3, COUNT, "epochs between decays of the step schedule")
    warmup_epochs: float = _setting(0.0, NON_NEGATIVE, "linear warm-up over this many epochs")
    seed: int = _setting(0, Interval(0, 2**31 - 1, integer=True),
                         "seed of the mini-batch order")
    train_metrics: str = "after"  # "after": the exercise's metrics after each step; "before"
    eval_every: int = _setting(0, Interval(0, math.inf, integer=True),
                               "evaluate every N steps besides the epoch ends (0: only those)")
    eval_points: int = _setting(0, Interval(0, math.inf, integer=True),
                                "evaluate at K log-spaced steps over the run besides the "
                                "epoch ends (0: none)")
    hyper: dict[str, Any] = field(default_factory=dict)

    @classmethod
    @functools.cache
    def settings(cls) -> dict[str, Setting]:
        """The declared settings of Config itself, named."""
        return {f.name: replace(f.metadata["setting"], name=f.name) for f in fields(cls)
                if "setting" in f.metadata}

    @property
    def rule(self) -> type[Rule]:
        return get_rule(self.optimizer)

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else self.rule.lr.default

    @property
    def schedule_name(self) -> str:
        return self.schedule or self.rule.default_schedule

    @property
    def estimator(self) -> str:
        """How the gradient is estimated: "minibatch", "svrg" or "saga"."""
        return self.rule.estimator

    @property
    def decoupled_decay(self) -> bool:
        """True when this run's weight decay shrinks w directly (AdamW, RAdam's
        decoupled_weight_decay) instead of adding (wd/2)|w|^2 to the objective."""
        return self.rule.decouples(self.hyper)

    @property
    def weight_decay(self) -> float:
        return float(self.hyper.get("weight_decay", self.rule.weight_decay.default))

    def make_schedule(self, lr_decay: Any = None) -> Schedule:
        """This run's schedule; ``lr_decay`` overrides its own (a tensor in a batch of K)."""
        return make_schedule(self.schedule_name, self.lr_decay if lr_decay is None else lr_decay,
                             self.epochs, self.step_size, self.warmup_epochs)

    def lr_at(self, epoch: float) -> float:
        return self.base_lr * float(self.make_schedule()(epoch))

    def resolved(self) -> Config:
        """The same run with every default written out: what ran, as results.csv shows it."""
        rule = self.rule
        schedule = self.schedule_name
        decay = self.lr_decay if self.lr_decay is not None else DEFAULT_DECAY.get(schedule)
        return replace(self, lr=self.base_lr, schedule=schedule, lr_decay=decay,
                       hyper={**rule.hyperparameters(), **self.hyper})

    def eval_steps(self, steps_per_epoch: int) -> list[int]:
        """The steps (1-based, over the whole run) evaluated besides the epoch ends: every
        ``eval_every`` and ``eval_points`` log-spaced ones, in order."""
        total = steps_per_epoch * self.epochs
        found: set[int] = set()
        if self.eval_every:
            found.update(range(self.eval_every, total + 1, self.eval_every))
        if self.eval_points:
            found.update(round(float(x)) for x in np.geomspace(1, total, self.eval_points))
        return sorted(t for t in found if t % steps_per_epoch)

    @property
    def run_id(self) -> str:
        """A readable, stable name: equal for two configs exactly when they are one run."""
        # memoised on the raw values and their types (1 and 1.0 print differently): a
        # 36,000-run study asks for each id many times, and computing one takes ~250 us
        key = tuple((type(v), v) for v in (getattr(self, n) for n in _RAW))
        try:
            return _run_id((*key, tuple(sorted((k, type(v), v) for k, v in self.hyper.items()))))
        except TypeError:  # an unhashable value: not memoised
            return _compute_run_id(self)

    def validate(self, n_train: int | None = None) -> None:
        """Raise a :class:`~stochopt.errors.SettingError` (or StochoptError) naming the
        first bad value."""
        rule = self.rule  # an unknown optimizer is refused here
        for name, setting in self.settings().items():
            setting.check(getattr(self, name))
        if n_train is not None and self.batch_size > n_train:
            raise SettingError.bad("batch_size", f"{self.batch_size} is larger than the "
                                   f"{n_train} training examples; use at most {n_train}")
        if self.train_metrics not in ("after", "before"):
            raise SettingError.bad("train_metrics", "must be 'after' or 'before'")
        rule.check({"lr": self.base_lr, **self.hyper})
        check_schedule(self.schedule_name, self.lr_decay)
        if rule.fixed_schedule and (self.schedule_name != "constant" or self.warmup_epochs):
            raise SettingError(f"{{schedule}} of {self.optimizer} must be constant, without "
                               f"{{warmup_epochs}}: the method replaces the schedule (its "
                               f"{{warmup_steps}} warm up per step)", "schedule",
                               "warmup_epochs", "warmup_steps")


_RAW = tuple(f.name for f in fields(Config) if f.name != "hyper")


_FLOATS = ("lr", "lr_decay", "warmup_epochs")  # Config's float settings
_MEASURING = ("eval_every", "eval_points")  # what is recorded, not how it trains


def _compute_run_id(config: Config) -> str:
    r = config.resolved()
    rule = r.rule
    declared = rule.settings()
    # asdict(r), without its deep copies: every field is a scalar, hyper a flat dict
    # evaluation points change no number of training, only which rows are recorded; left
    # at 0 they are left out, so that the runs of folders made before keep their ids
    values = {**{n: as_kind(float if n in _FLOATS else None, getattr(r, n)) for n in _RAW
                 if n not in _MEASURING or getattr(r, n)},
              "hyper": {k: as_kind(declared[k].kind if k in declared else None, v)
                        for k, v in r.hyper.items()}}
    label = r.optimizer
    if rule.plugin:  # its code's identity too, and a name that is safe in a file name
        values["source"] = rule.source
        label = safe_name(label)
    digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    return f"{label}-lr{r.lr:g}-bs{r.batch_size}-s{r.seed}-{digest}"


@functools.lru_cache(maxsize=1 << 17)
def _run_id(key: tuple) -> str:
    *values, hyper = key
    return _compute_run_id(Config(**{n: v for n, (_, v) in zip(_RAW, values, strict=True)},
                                  hyper={k: v for k, _, v in hyper}))


@dataclass(frozen=True)
class FStar:
    """What a run's suboptimality ``f(W) - f*`` is measured against: the optimum f* of its
    problem (``attained``), or at weight decay 0, where no minimiser exists, the best value
    a solver found: an upper bound on the infimum, so ``f - f_best`` may go negative."""

    value: float
    attained: bool = True

    @property
    def label(self) -> str:
        return "f - f*" if self.attained else "f - f_best (upper bound)"


@dataclass
class RunRecord:
    """What one run gave: a row per epoch, the final test metrics and the weights.

    ``weights`` is the (d, C) float32 array after :func:`stochopt.fit`; once the run is
    stored, ``weights_path`` says where (relative to the output folder), and
    :meth:`to_json`/:meth:`from_json` carry everything else.
    """

    config: Config
    rows: list[dict[str, float]] = field(default_factory=list)
    # evaluation points inside the epochs (--eval-every, --eval-points): validation, f - f*
    # and the noise scale at a step; ``rows`` keeps the epoch ends
    points: list[dict[str, float]] = field(default_factory=list)
    test_loss: float = math.nan
    test_acc: float = math.nan
    status: str = "ok"  # or "diverged"; "failed" (never stored): its group raised `error`
    diverged_epoch: int | None = None
    weights: np.ndarray | None = None
    weights_path: str | None = None
    f_star: FStar | None = None  # what the suboptimality column is measured against
    error: str | None = None

    @property
    def run(self) -> str:
        return self.config.run_id

    def timeline(self) -> list[dict[str, float]]:
        """Every evaluation, in step order: the epoch ends (``epoch_end`` 1) and the points
        inside the epochs (0). A point's ``seconds`` is its epoch's so far; ``elapsed``,
        the run's own seconds from its start."""
        merged = sorted([*({**r, "epoch_end": 1} for r in self.rows),
                         *({**p, "epoch_end": 0} for p in self.points)],
                        key=lambda r: (r["steps"], -r["epoch_end"]))
        done = 0.0
        for row in merged:
            row["elapsed"] = done + row["seconds"]
            if row["epoch_end"]:
                done += row["seconds"]
        return merged

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "config": asdict(self.config.resolved()), "status": self.status,
                "diverged_epoch": self.diverged_epoch, "test_loss": self.test_loss,
                "test_acc": self.test_acc, "weights": self.weights_path,
                "f_star": None if self.f_star is None else self.f_star.value,
                "f_star_attained": None if self.f_star is None else self.f_star.attained,
                "history": self.rows, **({"points": self.points} if self.points else {})}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> RunRecord:
        star = record.get("f_star")
        return cls(Config(**record["config"]), record["history"], record.get("points", []),
                   record["test_loss"], record["test_acc"], record["status"],
                   record["diverged_epoch"],
                   weights_path=record.get("weights"),
                   f_star=None if star is None else FStar(star, record["f_star_attained"]))

    def load_weights(self, out: Path) -> np.ndarray:
        if self.weights is None:
            self.weights = np.load(Path(out) / str(self.weights_path))
        return self.weights


