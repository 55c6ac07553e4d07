"""The training loop: ``fit(configs, split) -> [RunRecord]``.

One call trains any list of configurations. Those that can share a loop (the same batch
size, number of epochs, gradient estimator and train-metrics mode: :data:`SHARED`) train at
once, as one batch of K = S x M models: S seeds (data orders), each with the same M
configurations. Weights are ``W^T`` (S, M, C, d); at every step each seed gathers its own
mini-batch, and the logits and gradients of all K are one batched matrix product each. The
M may use different update rules and schedules: each rule updates its own block of the M,
with the hyperparameters that differ as ``(S, m, 1, 1)`` tensors. K = 1 is a single run on
the same code path.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .config import Config, FStar, RunRecord
from .data import N_CLASSES, Split, epoch_order
from .errors import StochoptError
from .files import atomic_write
from .gradients import ESTIMATORS
from .model import (
    SeedBatch,
    accuracy,
    cross_entropy,
    logits,
    one_hot,
    seed_batch_gradient,
    seed_logits_t,
)
from .noise import FullPass
from .optim import Hyper, Rule, State
from .optim.base import StepBatch
from .optim.schedules import Schedule

# what configurations trained as one batch of K models must have in common
SHARED = ("estimator", "batch_size", "epochs", "train_metrics", "eval_every", "eval_points")


def group_key(config: Config) -> tuple:
    return tuple(getattr(config, a) for a in SHARED)


def _variant(config: Config) -> str:
    """The configuration without its seed: the M axis of a batch."""
    return replace(config, seed=0).run_id


def plan_groups(configs: list[Config], max_models: int | None = None) -> list[list[int]]:
    """Indices of ``configs`` in groups that train as one batch of K = S x M models.

    Configurations sharing :data:`SHARED` go together when every seed of the group has the
    same configurations besides the seed (compare's and sweep's grids always do); the
    configurations whose seeds differ from the others' form a group of their own, and a
    repeated configuration trains in a later group. ``max_models`` caps K: a larger group
    is cut, in order, into pieces of whole configurations (every seed of each), so that a
    cluster can train the pieces side by side.
    """
    groups: dict[tuple, dict[str, list[int]]] = {}
    seen: dict[str, int] = {}
    for i, c in enumerate(configs):
        run_id = c.run_id  # hashed once: a 36,000-run study plans in well under a second
        repeat = seen[run_id] = seen.get(run_id, -1) + 1
        variants = groups.setdefault((*group_key(c), repeat), {})
        variants.setdefault(_variant(c), []).append(i)
    planned = []
    for variants in groups.values():
        by_seeds: dict[tuple, list[list[int]]] = {}
        for indices in variants.values():
            seeds = tuple(sorted(configs[i].seed for i in indices))
            by_seeds.setdefault(seeds, []).append(indices)
        for seeds, members in by_seeds.items():
            per = len(members) if max_models is None else max(1, max_models // len(seeds))
            planned += [sorted(i for m in members[j:j + per] for i in m)
                        for j in range(0, len(members), per)]
    return planned


@dataclass
class Batch:
    """The layout of one batch: model (s, m) is configuration ``index[s][m]``. The M axis
    is sorted so that each update rule's configurations are contiguous (its block)."""

    seeds: list[int]
    index: list[list[int]]

    @classmethod
    def of(cls, configs: list[Config]) -> Batch:
        seeds = sorted({c.seed for c in configs})
        variants: dict[str, dict[int, int]] = {}
        for i, c in enumerate(configs):
            variants.setdefault(_variant(c), {})[c.seed] = i
        if any(len(v) != len(seeds) for v in variants.values()):
            raise StochoptError("configurations trained as one batch must have the same "
                                "seeds; use plan_groups to split them")
        keys = list(dict.fromkeys(_block_key(configs[next(iter(v.values()))])
                                  for v in variants.values()))
        ordered = sorted(variants.values(), key=lambda v: keys.index(
            _block_key(configs[next(iter(v.values()))])))
        return cls(seeds, [[v[s] for v in ordered] for s in seeds])

    @property
    def flat(self) -> list[int]:
        return [i for row in self.index for i in row]

    def blocks(self, configs: list[Config]) -> list[slice]:
        """Contiguous runs of the M axis that one update rule (and schedule) serves."""
        keys = [_block_key(configs[i]) for i in self.index[0]]
        edges = [m for m in range(1, len(keys)) if keys[m] != keys[m - 1]]
        return [slice(a, b) for a, b in zip([0, *edges], [*edges, len(keys)], strict=True)]


def _block_key(c: Config) -> tuple:
    """Configurations with the same key share one rule object and one schedule."""
    flags = tuple(sorted((k, v) for k, v in c.hyper.items() if isinstance(v, bool)))
    if c.rule.plugin:  # a plug-in's tuples, strings and integers are its constructor's, not
        # per-model tensors: each value its own block (as text: None sorts beside a tuple)
        flags += tuple(sorted((k, repr(v)) for k, v in c.hyper.items()
                              if not isinstance(v, bool | float)))
    return (c.optimizer, c.schedule_name, c.step_size, c.warmup_epochs, flags)


@dataclass
class Updater:
    """One update rule applied to a block of the M configurations: ``w`` is the view
    ``W^T[:, block]`` (S, m, C, d), updated in place."""

    block: slice
    w: torch.Tensor
    rule: Rule
    state: State
    base_lr: Hyper
    schedule: Schedule
    whole: bool = False  # the block is every configuration: the step takes G^T as it is

    @classmethod
    def build(cls, configs: list[list[Config]], block: slice, Wt: torch.Tensor,
              context: dict[str, int] | None = None) -> Updater:
        """``configs[s][m]`` for the block's seeds and configurations; ``context``: what the
        loop knows of the run (``total_steps``, ``n_train``), for plug-ins that ask."""
        shape = (len(configs), len(configs[0]), 1, 1)

        def hyper(get: Callable[[Config], Any]) -> Hyper:
            return _stack([get(c) for row in configs for c in row], Wt, shape)

        c0 = configs[0][0]
        defaults = c0.rule.hyperparameters()
        names = set().union(*(c.hyper for row in configs for c in row))
        rule = c0.rule(**{n: hyper(lambda c, n=n: c.hyper.get(n, defaults[n])) for n in names})
        # the seeds of the block's S rows, for rules that draw random numbers per run (Kron)
        rule.context = {**(context or {}), "seed": c0.seed, "seeds": [r[0].seed for r in configs]}
        w = Wt[:, block]
        return cls(block, w, rule, rule.init(w), hyper(lambda c: c.base_lr),
                   # each run's decay written out: a default (None) beside an explicit one
                   # would not stack into one tensor
                   c0.make_schedule(hyper(lambda c: c.resolved().lr_decay)),
                   w.shape[1] == Wt.shape[1])

    def step(self, Gt: torch.Tensor, epoch: float, batch: BatchLoss | None = None) -> None:
        g = Gt if self.whole else Gt[:, self.block]
        given = None  # what a rule that needs the loss is handed, as an argument
        if self.rule.needs_loss and batch is not None:
            given = StepBatch(batch.loss[:, self.block], batch.at, batch.fraction, batch.Xb,
                              batch.yb, batch.gradient_at)
        self.rule.step(self.w, g, self.state, self.base_lr * self.schedule(epoch), given)


class Gather:
    """Each step's S mini-batches ``X_B`` (S, B, d), gathered from the training split a few
    steps at a time: about 256 rows per gather (8 steps of 32 at K = 1), into one buffer
    that stays in cache for the steps' products. One small gather per step spends more on
    the call and on waiting for memory than on copying (18% of an epoch at batch 32), and an
    epoch-long copy leaves the rows in main memory by the time they are read."""

    ROWS = 256

    def __init__(self, X: torch.Tensor, S: int, B: int) -> None:
        self.X, self.S, self.B = X, S, B
        self.per = max(1, self.ROWS // (S * B))  # steps per gather
        rows = 0 if X.is_sparse else S * self.per * B  # sparse: each batch made dense alone
        self.buffer = torch.empty(rows, X.shape[1], dtype=X.dtype, device=X.device)
        grid = self.buffer.view(S, self.per, B, X.shape[1]) if rows else None
        self.batches = [SeedBatch(grid[:, j]) for j in range(self.per)] if rows else []

    def epoch(self, order: torch.Tensor) -> None:
        """The epoch's data orders, (S, N); steps of whole chunks use the buffer's views."""
        self.order = order
        self.whole = order.shape[1] // (self.per * self.B) * self.per

    def __call__(self, i: int) -> SeedBatch:
        X, S, B = self.X, self.S, self.B
        if X.is_sparse:  # sparse rows (the estimator's scipy input): only the batch dense
            idx = self.order[:, i * B:(i + 1) * B]
            return SeedBatch(torch.index_select(X, 0, idx.flatten()).to_dense()
                             .view(S, idx.shape[1], -1))
        j = i % self.per
        if i < self.whole:
            if j == 0:
                rows = self.order[:, i * B:(i + self.per) * B]
                torch.index_select(X, 0, rows.flatten(), out=self.buffer)
            return self.batches[j]
        # the epoch's last steps, one at a time (the very last may be short)
        idx = self.order[:, i * B:(i + 1) * B]
        b = idx.shape[1]
        return SeedBatch(torch.index_select(X, 0, idx.flatten(), out=self.buffer[:S * b])
                         .view(S, b, -1))


@dataclass
class BatchLoss:
    """For rules that need it (:attr:`Rule.needs_loss`): each model's loss on the step's
    mini-batch at its weights, (S, M, 1, 1) float64, the same at trial weights of a block,
    and the batch's share of an epoch (B/N)."""

    Xb: torch.Tensor
    yb: torch.Tensor
    loss: torch.Tensor
    fraction: float

    @classmethod
    def of(cls, Zt: torch.Tensor, Xb: torch.Tensor, yb: torch.Tensor, n: int) -> BatchLoss:
        return cls(Xb, yb, cls._loss(Zt, yb), yb.shape[-1] / n)

    @staticmethod
    def _loss(Zt: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        S, m = Zt.shape[:2]
        return cross_entropy(Zt.mT, yb.unsqueeze(1)).double().view(S, m, 1, 1)

    def at(self, w: torch.Tensor) -> torch.Tensor:
        return self._loss(seed_logits_t(w, self.Xb), self.yb)

    def gradient_at(self, w: torch.Tensor) -> torch.Tensor:
        """The batch's gradient at weights w (S, m, C, d): the step's own arithmetic."""
        return seed_batch_gradient(w, self.Xb, self.yb)


def evaluation_weights(Wt: torch.Tensor, updaters: list[Updater]) -> torch.Tensor:
    """W (K, d, C) at each rule's evaluation point: Wt itself unless a rule answers at
    another point than it trains at (ASGD's average), then a copy with those blocks."""
    points = [u.rule.evaluation_point(u.w, u.state) for u in updaters]
    if all(p is u.w for p, u in zip(points, updaters, strict=True)):
        We = Wt
    else:
        We = Wt.clone()
        for p, u in zip(points, updaters, strict=True):
            We[:, u.block] = p
    S, M, C, d = Wt.shape
    return We.view(S * M, C, d).mT


def _stack(values: list[Any], like: torch.Tensor, shape: tuple[int, ...]) -> Hyper:
    """One value when all agree (the fast scalar path), else a tensor of ``shape``."""
    if all(v == values[0] for v in values):
        return values[0]
    if any(isinstance(v, bool) for v in values):
        raise StochoptError("boolean options must be the same for all configurations of a block")
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


# The zero model's loss is log(C) (2.3 for MNIST's ten classes); a model whose mean
# cross-entropy is 100 times that has blown up. Softmax regression's gradient is bounded, so
# a too-large step rarely reaches inf: it makes the loss huge but finite instead.
DIVERGENCE_LOSS = 100 * math.log(N_CLASSES)


def diverged(loss: float, n_classes: int = N_CLASSES) -> bool:
    """True for a NaN/inf loss or one above 100 x the zero model's, log(n_classes)."""
    return not (math.isfinite(loss) and loss <= 100 * math.log(max(n_classes, 2)))


def penalty(W: torch.Tensor, weight_decay: Hyper) -> torch.Tensor:
    """``(wd / 2) ||W||^2`` for each of the K models, in float64."""
    wd = torch.as_tensor(weight_decay, dtype=torch.float64, device=W.device).flatten()
    return (W * W).sum(dim=(-2, -1)).double() * (wd / 2)


@torch.no_grad()
def evaluate(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> tuple[list, list]:
    """Loss and accuracy (percent) of each of the K models on (X, y); NaN when (X, y) is
    empty (a split without validation examples)."""
    if len(X) == 0:
        return [math.nan] * len(W), [math.nan] * len(W)
    Z = logits(W, X)
    return cross_entropy(Z, y).tolist(), (100 * accuracy(Z, y)).tolist()


class StepMetrics:
    """The mean over an epoch's steps of each step's batch loss and accuracy (percent).

    A step hands over its batch logits; they are evaluated many steps at a time (up to
    about 16 MB of logits), which keeps the loss and argmax kernels, and any read-back to
    the host, out of the step itself. The numbers are those of evaluating every step.
    """

    def __init__(self, K: int, batch_size: int, n_classes: int = N_CLASSES) -> None:
        self.chunk = max(1, 2**22 // (K * batch_size * n_classes))
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.sums: torch.Tensor | None = None
        self.steps = 0

    def add(self, Zt: torch.Tensor, y: torch.Tensor) -> None:
        """A step's batch logits, classes first (..., C, B), and its labels (..., B): (K, C, B)
        with (B,), or (S, M, C, B) with each seed's labels (S, B)."""
        full = len(self.pending) == self.chunk
        if self.pending and (full or y.shape != self.pending[0][1].shape):  # or a last, short batch
            self._flush()
        self.pending.append((Zt, y))
        self.steps += 1

    def _flush(self) -> None:
        if not self.pending:
            return
        Z = torch.stack([z for z, _ in self.pending]).mT  # (steps, ..., B, C), classes first
        y = torch.stack([y for _, y in self.pending]).unsqueeze(-2)  # (steps, ..., 1, B)
        sums = torch.stack([cross_entropy(Z, y).sum(dim=0), accuracy(Z, y).sum(dim=0)])
        self.sums = sums if self.sums is None else self.sums + sums
        self.pending.clear()

    def means(self) -> tuple[list[float], list[float]]:
        self._flush()
        assert self.sums is not None, "no step was added"
        loss, acc = (self.sums.flatten(1) / self.steps).tolist()
        return loss, [100 * a for a in acc]


def _diagnostics(updaters: list[Updater], S: int, M: int) -> list[dict[str, float]]:
    """Each model's :meth:`Rule.diagnostics` after an epoch (model k = s * M + m)."""
    extra: list[dict[str, float]] = [{} for _ in range(S * M)]
    for u in updaters:
        m = u.block.stop - u.block.start
        for name, value in u.rule.diagnostics(u.state).items():
            values = torch.as_tensor(value).expand(S, m, 1, 1).reshape(S, m).tolist()
            for s in range(S):
                for j in range(m):
                    extra[s * M + u.block.start + j][name] = values[s][j]
    return extra


class UpdateClock:
    """Each block's own update time over an epoch, so that a run's ``seconds`` is its own
    cost: its share of the batch's shared work (the gradient products, the data, the
    metrics) plus its rule's update. On the CPU the wall time of each block's step; on CUDA
    the time between two events around it on the stream, read once at the epoch's end (no
    synchronisation inside the epoch)."""

    def __init__(self, blocks: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.blocks = blocks
        self.reset()

    def reset(self) -> None:
        self.seconds = [0.0] * self.blocks
        self.events: list[list[tuple[Any, Any]]] = [[] for _ in range(self.blocks)]

    def start(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, block: int, started: Any) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events[block].append((started, end))
        else:
            self.seconds[block] += time.perf_counter() - started

    def totals(self) -> list[float]:
        """Seconds per block this epoch (after the caller's synchronisation on CUDA)."""
        if self.cuda:
            return [sum(a.elapsed_time(b) for a, b in pairs) / 1000 for pairs in self.events]
        return self.seconds


def own_seconds(wall: float, updates: list[float], blocks: list[slice], S: int, M: int
                ) -> list[float]:
    """Each model's seconds (model k = s * M + m): the shared time (the wall time less every
    block's update) split evenly over the K models, plus its block's update time split over
    the block's models. They sum to the wall time."""
    shared = max(0.0, wall - sum(updates)) / (S * M)
    per_m = [0.0] * M
    for block, seconds in zip(blocks, updates, strict=True):
        for m in range(block.start, block.stop):
            per_m[m] = seconds / (S * (block.stop - block.start))
    return [shared + per_m[k % M] for k in range(S * M)]


@dataclass
class Checkpoint:
    """Where one batch's training state is written after an epoch, atomically, and read back
    to resume it: the weights, every rule's state, the gradient estimator's tables, the
    rows so far, torch's global generator (a plug-in's random probes) and the epoch. Every
    ``every`` epochs; with ``min_seconds``, not sooner than that after the last write (the
    default policy: each epoch, at most once a minute). Resuming gives the numbers of an
    uninterrupted run bit for bit: each epoch's data order is a function of (seed, epoch)."""

    path: Path
    every: int = 1
    min_seconds: float = 0.0
    last: float = field(default=-math.inf, init=False)
    resumed_from: int = field(default=0, init=False)  # the epoch a resumed batch began at
    bytes_written: int = field(default=0, init=False)
    seconds_writing: float = field(default=0.0, init=False)

    @classmethod
    def every_epochs(cls, path: Path, every: int | None) -> Checkpoint | None:
        """The policy ``--checkpoint-every`` names: every ``every`` epochs; None, each
        epoch but at most once a minute; 0, no checkpoint."""
        check_checkpoint_every(every)
        if every == 0:
            return None
        return cls(path, every or 1, 60.0 if every is None else 0.0)

    def due(self, epoch: int) -> bool:
        return (self.every > 0 and epoch % self.every == 0
                and time.monotonic() - self.last >= self.min_seconds)

    def save(self, state: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        buffer = io.BytesIO()
        try:
            torch.save(state, buffer)
        except Exception as e:  # a plug-in whose state cannot be saved: train on, without
            self.every = 0
            warnings.warn(f"{self.path.name}: no checkpoints for this group, its state "
                          f"cannot be saved ({type(e).__name__}: {e})", stacklevel=2)
            return
        self.write_bytes(buffer.getvalue())
        self.last = time.monotonic()
        self.seconds_writing += time.perf_counter() - t0
        self.bytes_written = buffer.tell()

    def write_bytes(self, data: bytes) -> None:
        """Where the bytes go: the file, atomically (the Ray engine's go to the driver)."""
        atomic_write(self.path, lambda f: f.write(data), binary=True)

    def read_bytes(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def load(self, runs: list[str]) -> dict[str, Any] | None:
        """The saved state, if there is one for exactly these runs (in this order) on the
        same data; a file that cannot be read (cut short, another version) is ignored:
        training starts over."""
        data = self.read_bytes()
        if data is None:
            return None
        try:
            state = torch.load(io.BytesIO(data), weights_only=False)
        except Exception:  # a damaged or foreign file: the group trains from the start
            return None
        return state if isinstance(state, dict) and state.get("runs") == runs else None


def check_checkpoint_every(every: int | None) -> None:
    if every is not None and every < 0:
        raise StochoptError(f"--checkpoint-every must be 0 (never) or more, got {every}")


def _to(state: Any, device: torch.device) -> Any:
    """A rule's saved state on ``device`` (tensors moved; numbers and objects as they are)."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to(v, device) for k, v in state.items()}
    return state


def _estimator_state(estimator: Any) -> dict[str, torch.Tensor]:
    """The tensors an estimator carries across epochs (SAGA's table and its mean)."""
    return {k: v for k, v in vars(estimator).items() if isinstance(v, torch.Tensor)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flushing() -> bool:
    """Whether this thread flushes subnormal floats to zero now (torch can set the mode but
    not read it): a product below float32's smallest normal number comes out 0."""
    return (torch.tensor(1e-30) * torch.tensor(1e-10)).item() == 0.0


_last_checked: tuple[Any, int, bool] = (lambda: None, 0, False)


def _has_subnormals(X: torch.Tensor) -> bool:
    """Whether X holds a nonzero value below its dtype's smallest normal number (sparse
    rows are not looked into: True). A pass over MNIST's training set takes 0.1 s, so the
    answer for the last X is kept while X is unchanged (a sweep's groups train on one
    split)."""
    global _last_checked
    if X.layout != torch.strided:
        return True
    ref, version, found = _last_checked
    if ref() is X and version == X._version:
        return found
    tiny = torch.finfo(X.dtype).tiny
    found = any(bool(((c != 0) & (c.abs() < tiny)).any()) for c in X.split(8192))
    _last_checked = (weakref.ref(X), X._version, found)
    return found


@contextlib.contextmanager
def flushed_subnormals(configs: list[Config], X: torch.Tensor) -> Iterator[None]:
    """Training with subnormal floats flushed to zero (x86's FTZ and DAZ, on the calling
    thread, which steps a model of batch 128 or less alone; the caller's mode is given back
    after) when every rule of ``configs`` is :attr:`~stochopt.optim.base.Rule.linear`, on
    the CPU, for data without subnormal features. The momentum buffer of a pixel the
    batches rarely light decays by mu every step into the subnormal range (below 1.2e-38
    in float32), where each operation takes a microcode assist of about a hundred cycles:
    a one-model momentum run at batch 32 spent a sixth of its epochs there. For a linear
    rule such a value moves no weight larger than about 1e-30, so the weights, losses and
    accuracies are the same bit for bit (tested against the run that keeps them). XLA,
    and so the jitted JAX loop of the benchmark, flushes them on the CPU always."""
    if X.device.type != "cpu" or not all(c.rule.linear for c in configs) or _flushing() \
            or _has_subnormals(X):
        yield
        return
    flushed = torch.set_flush_denormal(True)  # False: a CPU without the mode
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


class EpochCollector:
    """Python's cyclic garbage collector off while an epoch's steps run and are timed
    (:meth:`off`), and as the caller had it between epochs (:meth:`back`) and after
    :func:`fit`, an error included. A full collection walks every object of the process,
    torch's hundreds of thousands among them (about 0.09 s): one landed inside the second
    epoch of a first ``fit`` in every fresh process, a 0.15 s epoch reported as 0.25 s. A
    step makes no cycles (its tensors go when their last reference does), so the
    collections it would set off wait until the epoch's seconds are taken, and run then,
    outside them. The collector is the process's: fits in several threads share one count
    of the epochs running, and the last to end gives back the state the first found."""

    _lock = threading.Lock()
    _running = 0  # epochs running now, in every thread
    _found = True  # the collector's state when the first of them began

    def __init__(self) -> None:
        self.holding = False  # whether an epoch of this fit counts among the running

    def __enter__(self) -> EpochCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.back()

    def off(self) -> None:
        with self._lock:
            if not self.holding:
                if EpochCollector._running == 0:
                    EpochCollector._found = gc.isenabled()
                EpochCollector._running += 1
                self.holding = True
            gc.disable()

    def back(self) -> None:
        with self._lock:
            if self.holding:
                self.holding = False
                EpochCollector._running -= 1
                if EpochCollector._running == 0 and EpochCollector._found:
                    gc.enable()


@torch.no_grad()
def fit(
    configs: Config | list[Config],
    split: Split,
    f_star: list[FStar | float | None] | None = None,
    on_epoch: Callable[[int, list[RunRecord]], bool | None] | None = None,
    noise_scale: bool = False,
    carry: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[RunRecord]:
    """Train every configuration of ``configs`` on ``split``, those that can at once
    (:func:`plan_groups`). ``f_star`` (one per configuration: an :class:`FStar`, a number
    for an attained f*, or None) fills the ``suboptimality`` column ``f(W) - f*``;
    ``noise_scale`` fills the ``noise_scale`` column, the gradient noise scale B_simple
    after each epoch (:mod:`stochopt.noise`; one more pass over the training set).
    ``carry`` (one batch only) continues training: the weights and optimiser state it holds
    are the start, and the end's are put back (the estimator's ``partial_fit``).
    ``checkpoint`` (one batch only) resumes from its file when it holds these runs and
    writes the state there after epochs as it says (:class:`Checkpoint`). Returns
    one RunRecord per configuration, in the order given; ``on_epoch(epoch, records)`` is
    called after each epoch of each group, and ends that group's training when it returns
    True (the estimator's convergence test)."""
    given = [configs] if isinstance(configs, Config) else list(configs)
    stars = [s if s is None or isinstance(s, FStar) else FStar(float(s))
             for s in (f_star if f_star is not None else [None] * len(given))]
    for c in given:
        c.validate(len(split.X_train))
    records: list[RunRecord | None] = [None] * len(given)
    groups = plan_groups(given)
    if (carry is not None or checkpoint is not None) and len(groups) != 1:
        raise StochoptError("carry and checkpoint are for one batch: give configurations that "
                            "train at once")
    for group in groups:
        configs = [given[i] for i in group]
        with flushed_subnormals(configs, split.X_train), EpochCollector() as collector:
            done = _fit_batch(configs, split, [stars[i] for i in group], on_epoch, collector,
                              noise_scale, carry, checkpoint)
        for i, record in zip(group, done, strict=True):
            records[i] = record
    return records  # type: ignore[return-value]


def _fit_batch(configs: list[Config], split: Split, f_star: list[FStar | None],
               on_epoch: Callable[[int, list[RunRecord]], bool | None] | None,
               collector: EpochCollector, noise_scale: bool = False,
               carry: dict[str, Any] | None = None,
               checkpoint: Checkpoint | None = None) -> list[RunRecord]:
    """One batch of K = S x M models (see :class:`Batch`): the loop itself."""
    layout = Batch.of(configs)
    S, M = len(layout.index), len(layout.index[0])
    flat = layout.flat  # model k = s * M + m is configuration flat[k]
    K, c0 = S * M, configs[0]
    X, y = split.X_train, split.y_train
    C = split.n_classes
    Wt = torch.zeros(S, M, C, split.n_features, dtype=X.dtype, device=X.device)
    if carry and "Wt" in carry:
        Wt.copy_(carry["Wt"])
    steps = math.ceil(len(X) / c0.batch_size)
    context = {"total_steps": steps * c0.epochs, "n_train": len(X),
               "bias": bool(split.source.get("bias", False)),
               "weighted": split.sample_weight is not None}
    updaters = [Updater.build([[configs[i] for i in row[b]] for row in layout.index], b, Wt,
                              context) for b in layout.blocks(configs)]
    if carry and "states" in carry:
        for updater, state in zip(updaters, carry["states"], strict=True):
            updater.state = state
    estimator = ESTIMATORS[c0.estimator](split, Wt)
    needs_loss = any(u.rule.needs_loss for u in updaters)
    wd = _stack([configs[i].weight_decay for i in flat], Wt, (K, 1, 1))
    stars = [f_star[i] for i in flat]
    records = [RunRecord(configs[i], f_star=star) for i, star in zip(flat, stars, strict=True)]
    alive = [True] * K
    seeds = torch.tensor(layout.seeds)
    B = c0.batch_size

    Yt = one_hot(y, C, X.dtype).T.contiguous()  # labels one-hot, classes first
    gather = Gather(X, S, B)
    after = c0.train_metrics == "after"
    # what a checkpoint must match: these runs, in this order, on this data
    run_ids = [r.run for r in records] + [
        f"data {split.name} {tuple(X.shape)} {X.dtype} {split.source.get('bias', False)}"]
    start = 0
    saved = checkpoint.load(run_ids) if checkpoint is not None else None
    if saved is not None:  # resume where the last checkpoint left the batch
        start = checkpoint.resumed_from = saved["epoch"]  # type: ignore[union-attr]
        Wt.copy_(saved["Wt"])
        for updater, state in zip(updaters, saved["states"], strict=True):
            # a fresh state at the restored weights (a plug-in's parameters are their copy)
            updater.state = updater.rule.load_state_dict(updater.rule.init(updater.w),
                                                         _to(state, X.device))
        for name, value in saved["estimator"].items():
            setattr(estimator, name, value.to(X.device))
        for r, (rows, points, status, at) in zip(records, saved["records"], strict=True):
            r.rows, r.points, r.status, r.diverged_epoch = rows, points, status, at
        alive = list(saved["alive"])
        torch.set_rng_state(saved["rng"])
    blocks = [u.block for u in updaters]
    # one block: every model's update is the same work, its seconds the wall time / K
    clock = UpdateClock(len(updaters), X.device) if len(updaters) > 1 else None
    eval_at = set(c0.eval_steps(steps))
    full_pass = FullPass(X, y)  # the data's part of each epoch's pass, made once

    def measure(W: torch.Tensor) -> tuple[list, list, list, list]:
        """Validation loss and accuracy, f - f* and B_simple (when asked) of the K models."""
        val_loss, val_acc = evaluate(W, split.X_val, split.y_val)
        sub, b_simple = [math.nan] * K, [math.nan] * K
        if noise_scale or any(s is not None for s in stars):
            loss, gsq, sq = full_pass(W, noise=noise_scale)
            f = (loss + penalty(W, wd)).tolist()
            sub = [math.nan if s is None else fk - s.value for fk, s in zip(f, stars,
                                                                            strict=True)]
            if gsq is not None and sq is not None:
                b_simple = ((sq - gsq) / gsq).tolist()
        return val_loss, val_acc, sub, b_simple

    for epoch in range(start, c0.epochs):
        collector.off()
        _sync(X.device)
        t0 = time.perf_counter()
        evaluating = 0.0  # seconds spent at evaluation points inside the epoch
        if clock is not None:
            clock.reset()
        estimator.epoch_start(Wt)
        order = torch.stack([epoch_order(len(X), int(s), epoch, X.device) for s in seeds])
        # each seed's one-hot labels (S, 1, C, N), with a unit axis for the M models, so that
        # the residuals broadcast against them without a view per step
        Y_order = Yt.index_select(1, order.flatten()).view(C, S, 1, -1).permute(1, 2, 0, 3)
        batches = zip(order.split(B, 1), Y_order.split(B, -1), y[order].split(B, 1),
                      strict=True)
        metrics = StepMetrics(K, B, C)
        gather.epoch(order)
        for i, (idx, Ybt, yb) in enumerate(batches):
            Xb = gather(i)
            Gt, Zt = estimator(Wt, idx, Xb, Ybt)
            batch = BatchLoss.of(Zt, Xb.X, yb, len(X)) if needs_loss else None
            if clock is None:
                updaters[0].step(Gt, epoch + i / steps, batch)
            else:
                for u, updater in enumerate(updaters):
                    started = clock.start()
                    updater.step(Gt, epoch + i / steps, batch)
                    clock.stop(u, started)
            if after:  # the exercise: metrics of the updated model
                Zt = Xb.logits(Wt)
            metrics.add(Zt, yb)
            t = epoch * steps + i + 1
            if t in eval_at:  # a point inside the epoch: it reads the models, changes none
                _sync(X.device)
                t1 = time.perf_counter()
                so_far = own_seconds(t1 - t0 - evaluating, clock.totals() if clock else [0.0],
                                     blocks, S, M)
                val_loss, val_acc, sub, b_simple = measure(evaluation_weights(Wt, updaters))
                seen = min((i + 1) * B, len(X))
                for k, r in enumerate(records):
                    if alive[k]:
                        r.points.append({
                            "epoch": epoch + (i + 1) / steps, "train_loss": math.nan,
                            "train_acc": math.nan, "val_loss": val_loss[k],
                            "val_acc": val_acc[k], "lr": r.config.lr_at(epoch + i / steps),
                            "suboptimality": sub[k], "seconds": so_far[k],
                            "batch_seconds": t1 - t0 - evaluating, "steps": t,
                            "grad_evals": estimator.grad_evals(len(X), epoch, seen),
                            "noise_scale": b_simple[k]})
                _sync(X.device)
                evaluating += time.perf_counter() - t1
        train_loss, train_acc = metrics.means()
        _sync(X.device)
        wall = time.perf_counter() - t0 - evaluating
        collector.back()
        seconds = own_seconds(wall, clock.totals() if clock else [0.0], blocks, S, M)
        W = evaluation_weights(Wt, updaters)  # (K, d, C), the models that answer
        val_loss, val_acc, sub, b_simple = measure(W)
        done = estimator.grad_evals(len(X), epoch, len(X))
        extra = _diagnostics(updaters, S, M)
        for k, r in enumerate(records):
            if not alive[k]:
                continue
            row = {"epoch": epoch + 1, "train_loss": train_loss[k], "train_acc": train_acc[k],
                   "val_loss": val_loss[k], "val_acc": val_acc[k],
                   "lr": r.config.lr_at(epoch), "suboptimality": sub[k],
                   "seconds": seconds[k], "batch_seconds": wall,
                   "steps": (epoch + 1) * steps, "grad_evals": done,
                   "noise_scale": b_simple[k], **extra[k]}
            r.rows.append(row)
            if diverged(row["train_loss"], C) or (len(split.X_val) and
                                                   diverged(row["val_loss"], C)):
                alive[k], r.status, r.diverged_epoch = False, "diverged", epoch + 1
        if checkpoint is not None and epoch + 1 < c0.epochs and any(alive) and \
                checkpoint.due(epoch + 1):
            checkpoint.save({
                "runs": run_ids, "epoch": epoch + 1, "Wt": Wt,
                "states": [u.rule.state_dict(u.state) for u in updaters],
                "estimator": _estimator_state(estimator),
                "records": [(r.rows, r.points, r.status, r.diverged_epoch) for r in records],
                "alive": alive, "rng": torch.get_rng_state()})
        if on_epoch is not None and on_epoch(epoch + 1, records):
            break  # the caller has seen enough (converged)
        if not any(alive):
            break

    W = evaluation_weights(Wt, updaters)
    if carry is not None:  # W: the answering weights (K, d, C) in the data's dtype
        carry.update(Wt=Wt, states=[u.state for u in updaters], W=W)
    test_loss, test_acc = evaluate(W, split.X_test, split.y_test)
    weights = W.float().cpu().contiguous().numpy()
    for k, r in enumerate(records):
        r.weights = weights[k]
        if alive[k]:
            r.test_loss, r.test_acc = test_loss[k], test_acc[k]
    by_config = dict(zip(flat, records, strict=True))
    return [by_config[i] for i in range(len(configs))]
