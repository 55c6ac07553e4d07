"""The training loop: ``fit(configs, split) -> [History]``.

One call trains K configurations that share a batch size, a data order, a schedule and a
number of epochs, all at once: weights ``(K, d, C)``, so that every step's logits and
gradients for all K are one matrix product each. The K may use different update rules: each
rule updates its own block of the K, with the hyperparameters that differ inside the block
as ``(n, 1, 1)`` tensors. K = 1 is a single run on the same code path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .data import N_CLASSES, Split, epoch_order
from .errors import StochoptError
from .gradients import ESTIMATORS, MiniBatch
from .model import accuracy, cross_entropy, logits, logits_t, one_hot, zeros
from .optim import OPTIMIZERS, SGD, Hyper, Optimizer, State, make_optimizer
from .schedules import SCHEDULES, Schedule, make_schedule

OPTIMIZER_NAMES = (*OPTIMIZERS, *ESTIMATORS)
# what configurations trained together (one batch of K models) must have in common
SHARED = ("estimator", "batch_size", "epochs", "seed", "schedule", "step_size",
          "warmup_epochs", "train_metrics")


def update_rule(optimizer: str) -> str:
    """The update rule behind an optimizer name: svrg and saga are plain SGD steps on a
    variance-reduced gradient."""
    return "sgd" if optimizer in ESTIMATORS else optimizer


@dataclass
class Config:
    """One training run. ``lr=None`` takes the optimiser's default; ``hyper`` holds the
    optimiser's other hyperparameters (momentum, beta1, weight_decay, ...)."""

    optimizer: str = "momentum"
    lr: float | None = None
    batch_size: int = 64
    epochs: int = 10
    schedule: str = "exponential"
    lr_decay: float | None = None
    step_size: int = 3
    warmup_epochs: float = 0.0
    seed: int = 0
    train_metrics: str = "after"  # "after": the exercise's metrics after each step; "before"
    hyper: dict[str, Any] = field(default_factory=dict)

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return OPTIMIZERS.get(update_rule(self.optimizer), SGD).default_lr

    def make_schedule(self, lr_decay: Hyper | None = None) -> Schedule:
        """This run's schedule; ``lr_decay`` overrides its own (a (K,1,1) tensor in a sweep)."""
        return make_schedule(self.schedule, self.lr_decay if lr_decay is None else lr_decay,
                             self.epochs, self.step_size, self.warmup_epochs)

    def lr_at(self, epoch: float) -> float:
        return self.base_lr * float(self.make_schedule()(epoch))

    @property
    def estimator(self) -> str:
        """How the gradient is estimated: "minibatch", "svrg" or "saga"."""
        return self.optimizer if self.optimizer in ESTIMATORS else "minibatch"

    @property
    def rule_key(self) -> tuple:
        """Configurations with the same key can share one update rule object."""
        flags = tuple(sorted((k, v) for k, v in self.hyper.items() if isinstance(v, bool)))
        return (update_rule(self.optimizer), self.optimizer, flags)

    @property
    def weight_decay(self) -> float:
        return float(self.hyper.get("weight_decay", 0.0))

    def validate(self, n_train: int | None = None) -> None:
        """Raise StochoptError naming the first bad value."""
        if self.optimizer not in OPTIMIZER_NAMES:
            raise StochoptError(f"unknown optimizer {self.optimizer!r}; "
                                f"choose one of {', '.join(OPTIMIZER_NAMES)}")
        if self.schedule not in SCHEDULES:
            raise StochoptError(f"unknown schedule {self.schedule!r}; "
                                f"choose one of {', '.join(SCHEDULES)}")
        if self.batch_size < 1:
            raise StochoptError(f"--batch-size must be at least 1, got {self.batch_size}")
        if n_train is not None and self.batch_size > n_train:
            raise StochoptError(f"--batch-size {self.batch_size} is larger than the "
                                f"{n_train} training examples; use at most {n_train}")
        if self.epochs < 1:
            raise StochoptError(f"--epochs must be at least 1, got {self.epochs}")
        if not (math.isfinite(self.base_lr) and self.base_lr > 0):
            raise StochoptError(f"--lr must be a positive finite number, got {self.base_lr}")
        if self.train_metrics not in ("after", "before"):
            raise StochoptError("train_metrics must be 'after' or 'before'")
        for name in ("momentum", "beta1", "beta2", "alpha", "rho", "dampening"):
            v = self.hyper.get(name)
            if v is not None and not 0 <= v < 1:
                raise StochoptError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        for name, v in (("eps", self.hyper.get("eps")), ("lr_decay", self.lr_decay),
                        ("weight_decay", self.hyper.get("weight_decay"))):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise StochoptError(f"--{name.replace('_', '-')} must be finite and >= 0, got {v}")
        self.make_schedule()
        make_optimizer(update_rule(self.optimizer), **self.hyper)


@dataclass
class History:
    """What one run recorded: a row per epoch, the final test metrics and weights."""

    config: Config
    rows: list[dict[str, float]] = field(default_factory=list)
    test_loss: float = float("nan")
    test_acc: float = float("nan")
    status: str = "ok"  # or "diverged"
    diverged_epoch: int | None = None
    weights: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "status": self.status,
                "diverged_epoch": self.diverged_epoch, "test_loss": self.test_loss,
                "test_acc": self.test_acc, "history": self.rows}


# The zero model's loss is log(10) = 2.3; a model whose mean cross-entropy is 100 times that
# has blown up. Softmax regression's gradient is bounded, so a too-large step rarely reaches
# inf: it makes the loss huge but finite instead.
DIVERGENCE_LOSS = 100 * math.log(N_CLASSES)


def diverged(loss: float) -> bool:
    """True for a NaN/inf loss or one above :data:`DIVERGENCE_LOSS`."""
    return not (math.isfinite(loss) and loss <= DIVERGENCE_LOSS)


def _stack(values: list[Any], like: torch.Tensor) -> Hyper:
    """One value when all K agree (fast scalar path), else a (K, 1, 1) tensor."""
    if all(v == values[0] for v in values):
        return values[0]
    if any(isinstance(v, bool) for v in values):
        raise StochoptError("boolean options must be the same for all configurations of a sweep")
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def objective(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight_decay: Hyper = 0.0
              ) -> torch.Tensor:
    """``f(W) = loss(W) + (wd / 2) ||W||^2`` for each of the K models."""
    penalty = (W * W).sum(dim=(-2, -1)) * (torch.as_tensor(weight_decay).flatten() / 2)
    return cross_entropy(logits(W, X), y) + penalty.to(W.dtype)


@torch.no_grad()
def evaluate(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> tuple[list, list]:
    """Loss and accuracy (percent) of each of the K models on (X, y)."""
    Z = logits(W, X)
    return cross_entropy(Z, y).tolist(), (100 * accuracy(Z, y)).tolist()


class StepMetrics:
    """The mean over an epoch's steps of each step's batch loss and accuracy (percent).

    A step hands over its batch logits; they are evaluated many steps at a time (up to
    about 16 MB of logits), which keeps the loss and argmax kernels, and any read-back to
    the host, out of the step itself. The numbers are those of evaluating every step.
    """

    def __init__(self, K: int, batch_size: int, like: torch.Tensor) -> None:
        self.chunk = max(1, 2**22 // (K * batch_size * N_CLASSES))
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.sums = torch.zeros(2, K, dtype=like.dtype, device=like.device)
        self.steps = 0

    def add(self, Zt: torch.Tensor, y: torch.Tensor) -> None:
        """A step's batch logits, transposed (K, C, B), and its labels (B,)."""
        full = len(self.pending) == self.chunk
        if self.pending and (full or y.shape != self.pending[0][1].shape):  # or a last, short batch
            self._flush()
        self.pending.append((Zt, y))
        self.steps += 1

    def _flush(self) -> None:
        if not self.pending:
            return
        Z = torch.stack([z for z, _ in self.pending]).mT  # (steps, K, B, C), classes first
        y = torch.stack([y for _, y in self.pending]).unsqueeze(1)  # (steps, 1, B)
        self.sums[0] += cross_entropy(Z, y).sum(dim=0)
        self.sums[1] += accuracy(Z, y).sum(dim=0)
        self.pending.clear()

    def means(self) -> tuple[list[float], list[float]]:
        self._flush()
        loss, acc = (self.sums / self.steps).tolist()
        return loss, [100 * a for a in acc]


@dataclass
class Updater:
    """One update rule applied to a block of the K models: ``w`` is a view of rows
    ``rows`` of W^T, updated in place."""

    rows: slice
    w: torch.Tensor
    opt: Optimizer
    state: State
    base_lr: Hyper
    schedule: Schedule

    @classmethod
    def build(cls, configs: list[Config], rows: slice, Wt: torch.Tensor) -> Updater:
        def hyper(get: Callable[[Config], Any]) -> Hyper:
            return _stack([get(c) for c in configs], Wt)

        rule = update_rule(configs[0].optimizer)
        defaults = OPTIMIZERS[rule].hyperparameters()
        names = set().union(*(c.hyper for c in configs))
        opt = make_optimizer(rule, **{n: hyper(lambda c, n=n: c.hyper.get(n, defaults[n]))
                                      for n in names})
        w = Wt[rows]
        return cls(rows, w, opt, opt.init(w), hyper(lambda c: c.base_lr),
                   configs[0].make_schedule(hyper(lambda c: c.lr_decay)))

    def step(self, Gt: torch.Tensor, epoch: float) -> None:
        g = Gt if Gt.shape[0] == self.w.shape[0] else Gt[self.rows]
        self.opt.step(self.w, g, self.state, self.base_lr * self.schedule(epoch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def fit(
    configs: Config | list[Config],
    split: Split,
    f_star: list[float] | None = None,
    on_epoch: Callable[[int, list[History]], None] | None = None,
) -> list[History]:
    """Train every configuration of ``configs`` on ``split`` at once.

    The K configurations must share the settings in :data:`SHARED`; everything else
    (optimiser, lr, momentum, betas, lr_decay...) may differ.
    ``f_star`` (one per configuration) adds a ``suboptimality`` column ``f(W) - f*``.
    Returns one History per configuration, in the order given.
    """
    given = [configs] if isinstance(configs, Config) else list(configs)
    # each update rule gets a contiguous block of the K (a view, no copies)
    blocks: dict[tuple, list[int]] = {}
    for k, c in enumerate(given):
        blocks.setdefault(c.rule_key, []).append(k)
    by_rule = [k for block in blocks.values() for k in block]
    configs = [given[k] for k in by_rule]
    f_star = None if f_star is None else [f_star[k] for k in by_rule]
    c0, K = configs[0], len(configs)
    X, y = split.X_train, split.y_train
    for c in configs:
        c.validate(len(X))
        if any(getattr(c, a) != getattr(c0, a) for a in SHARED):
            raise StochoptError(f"configurations trained together must share {SHARED}")
    W = zeros(K, split.n_features, N_CLASSES, X.dtype, X.device)
    Wt = W.mT  # the loop works on W^T, classes first (see model.py): the same numbers
    updaters, start = [], 0
    for block in blocks.values():
        rows = slice(start, start + len(block))
        updaters.append(Updater.build([given[k] for k in block], rows, Wt))
        start = rows.stop
    estimator = ESTIMATORS.get(c0.optimizer, MiniBatch)(split, Wt)
    wd = _stack([c.weight_decay for c in configs], W)
    lr_per_config = [c.lr_at for c in configs]  # in float64, for the records
    histories = [History(c) for c in configs]
    as_given = [histories[by_rule.index(k)] for k in range(K)]
    alive = [True] * K
    steps = math.ceil(len(X) / c0.batch_size)

    Yt = one_hot(y, N_CLASSES, X.dtype).T.contiguous()  # labels one-hot, classes first
    # Each batch is gathered into this one buffer, still in cache when the step's three
    # matrix products read it (measured faster than slicing an epoch-long gathered copy).
    X_batch = X.new_empty(c0.batch_size, X.shape[1])
    for epoch in range(c0.epochs):
        _sync(X.device)
        t0 = time.perf_counter()
        estimator.epoch_start(Wt)
        order, B = epoch_order(len(X), c0.seed, epoch, X.device), c0.batch_size
        batches = zip(order.split(B), Yt.index_select(1, order).split(B, 1), y[order].split(B),
                      strict=True)
        metrics = StepMetrics(K, B, X)
        for i, (idx, Ybt, yb) in enumerate(batches):
            Xb = torch.index_select(X, 0, idx, out=X_batch[:len(idx)])
            Gt, Zt = estimator(Wt, idx, Xb, Ybt)
            for updater in updaters:
                updater.step(Gt, epoch + i / steps)
            if c0.train_metrics == "after":  # the exercise: metrics of the updated model
                Zt = logits_t(Wt, Xb)
            metrics.add(Zt, yb)
        train_loss, train_acc = metrics.means()
        seconds = time.perf_counter() - t0
        val_loss, val_acc = evaluate(W, split.X_val, split.y_val)
        sub = [math.nan] * K
        if f_star is not None:
            sub = [f - s for f, s in zip(objective(W, X, y, wd).tolist(), f_star, strict=True)]
        for k, h in enumerate(histories):
            if not alive[k]:
                continue
            row = {"epoch": epoch + 1, "train_loss": train_loss[k], "train_acc": train_acc[k],
                   "val_loss": val_loss[k], "val_acc": val_acc[k],
                   "lr": lr_per_config[k](epoch), "suboptimality": sub[k],
                   "seconds": seconds}
            h.rows.append(row)
            if diverged(row["train_loss"]) or diverged(row["val_loss"]):
                alive[k], h.status, h.diverged_epoch = False, "diverged", epoch + 1
        if on_epoch is not None:
            on_epoch(epoch + 1, as_given)
        if not any(alive):
            break

    test_loss, test_acc = evaluate(W, split.X_test, split.y_test)
    weights = W.float().cpu().contiguous().numpy()
    for k, h in enumerate(histories):
        h.weights = weights[k]
        if alive[k]:
            h.test_loss, h.test_acc = test_loss[k], test_acc[k]
    return as_given
