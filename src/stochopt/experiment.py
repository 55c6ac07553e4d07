"""The experiment layer: plan -> groups -> engine -> run records, into one output folder.

    configs, notes = grid(["momentum", "adam"], {"seed": [0, 1, 2]})   # every combination
    records = run(configs, split, "runs/compare")                    # resumable
    artefacts.write_all("runs/compare", records, "stochopt compare")  # tables, figures, report

``run`` stores every finished run as ``runs/<run>.json`` (+ ``.npy``), each written
atomically, the JSON last: a run is finished exactly when its JSON exists, so re-running the
same command after an interruption trains only the rest. The folder's ``fingerprint.json``
records what the numbers depend on besides the configurations (the data, the split, dtype,
device type, the version of the numerical code); a command whose fingerprint differs is
refused before anything is written. Groups are trained by an *engine*: :class:`LocalEngine`
here, one after another in this process, or :class:`stochopt.ray_engine.RayEngine`, one Ray
task each on a cluster; either way this driver alone writes the folder. A group that raises
does not stop the others: its runs come back ``failed`` (not stored, so trained again by the
next run of the command), and ``tasks.csv`` says where and how long each group ran.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .config import Config, FStar, RunRecord
from .data import Split
from .errors import Named, SettingError, StochoptError, escape
from .files import lock_out, prepare_out, write_csv, write_json, write_npy
from .optim import RULES, get_rule
from .optimum import Optimum, cached_optimum
from .train import fit, plan_groups

# Bump whenever a change alters the numbers a run gives (the order of float operations
# included): an output folder made by another version is then refused, not mixed.
NUMERICS_VERSION = 4

OnEpoch = Callable[[int, list[RunRecord]], None]
CONFIG_LISTS = tuple(f.name for f in fields(Config) if f.name not in ("optimizer", "hyper"))


# --------------------------------------------------------------------------- planning


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
        for combo in itertools.product(*settings.values(), *mine.values()):
            given = dict(zip([*settings, *mine], combo, strict=True))
            config = Config(optimizer=optimizer, hyper={n: given.pop(n) for n in mine},
                            **given)
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


# --------------------------------------------------------------------------- the folder


def fingerprint(split: Split, device: str | None = None) -> dict[str, Any]:
    """Everything besides the configuration that a run's numbers depend on; ``device``: the
    type of device the runs train on, when not the split's (a cluster's GPUs)."""
    X = split.X_train
    return {**split.source, "n_features": split.n_features,
            "dtype": str(X.dtype).removeprefix("torch."), "device": device or X.device.type,
            "numerics": NUMERICS_VERSION}


WHAT = {"md5": "data (checksums of the data files)", "numerics": "version of stochopt's "
        "numerical code", "val_fraction": "validation fraction", "split_seed": "split seed"}


def open_out(out: str | Path, split: Split, device: str | None = None) -> Path:
    """Create and lock ``out`` and check its fingerprint against ``split``'s (writing it
    when the folder has none); refuse, before writing anything, a folder whose runs were
    made with other data, split, dtype, device type or numerical code."""
    out = prepare_out(out)
    lock_out(out)
    path, mine = out / "fingerprint.json", fingerprint(split, device)
    if path.is_file():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            raise StochoptError(f"{path} is damaged; use another output folder") from None
        differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if differ:
            what = ", ".join(WHAT.get(k, k) + ("" if k == "md5" else
                                               f" ({theirs.get(k)} there, {mine.get(k)} now)")
                             for k in differ)
            raise StochoptError(f"{out} holds runs made with another {what}; resuming would "
                                "mix them: use another output folder")
    elif any((out / "runs").glob("*.json")):
        raise StochoptError(f"{out} holds runs without a fingerprint.json (made by an older "
                            "stochopt); use another output folder")
    else:
        write_json(path, mine)
    return out


# --------------------------------------------------------------------------- engines


@dataclass
class Job:
    """One group of configurations that trains as one batch, with their f* (or None)."""

    configs: list[Config]
    f_star: list[FStar | None]
    noise_scale: bool = False  # measure B_simple after each epoch
    group: int = 0  # its place in the plan (tasks.csv)


@dataclass
class Outcome:
    """What an engine gives back for one job: its records, or the one-line error that
    stopped it; ``task`` says where and how long it ran (a row of tasks.csv)."""

    job: Job
    records: list[RunRecord] | None = None
    error: str | None = None
    task: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    def run(self, jobs: list[Job], split: Split, on_epoch: OnEpoch | None
            ) -> Iterator[Outcome]:
        """Train every job; yield an :class:`Outcome` for each as it finishes, in any
        order. A job that raises is an outcome with its error, not an exception."""
        ...


def one_line(error: BaseException) -> str:
    """``Type: message``, on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LocalEngine:
    """Trains the jobs one after another in this process."""

    def run(self, jobs, split, on_epoch):
        for job in jobs:
            t0 = time.perf_counter()
            task = {"engine": "local", "node": "local", "pid": os.getpid()}
            try:
                records = fit(job.configs, split, job.f_star, on_epoch, job.noise_scale)
            except Exception as e:  # reported per group; the other groups go on
                yield Outcome(job, error=one_line(e),
                              task={**task, "seconds": time.perf_counter() - t0})
            else:
                seconds = time.perf_counter() - t0
                yield Outcome(job, records, task={**task, "seconds": seconds,
                                                  "fit_seconds": seconds})


# --------------------------------------------------------------------------- running


TASK_COLUMNS = ["group", "runs", "batch_size", "status", "engine", "node", "pid",
                "seconds", "wait_seconds", "fit_seconds", "fetched_data", "data_seconds",
                "return_seconds", "error"]
# seconds: from handing the group to the engine until its records came back (Ray: the
# queue, the task's start-up and the transfers included); wait_seconds (Ray): from
# submitting the task until it began (queued behind other groups, a new worker's start and
# imports); return_seconds (Ray): from its end until the driver had its records;
# fit_seconds: training alone;
# fetched_data, data_seconds: whether the task fetched the data from Ray's object store
# (a worker keeps it for its later tasks) and how long getting it ready took (Ray)


def describe(configs: list[Config]) -> str:
    """A group in a few words: the values its configurations take."""
    parts, resolved = [], [c.resolved() for c in configs]
    for name in ("optimizer", "lr", "batch_size", "seed"):
        values = list(dict.fromkeys(getattr(c, name) for c in resolved))
        shown = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:6])
        parts.append(f"{name.replace('_', ' ')} {shown}" + ("/..." if len(values) > 6 else ""))
    return f"{len(configs)} run(s): " + ", ".join(parts)


def run(configs: list[Config], split: Split, out: str | Path,
        f_star: Callable[[Config], FStar | None] = lambda c: None,
        on_epoch: OnEpoch | None = None,
        on_group: Callable[[list[Config], str], None] | None = None,
        engine: Engine | None = None, noise_scale: bool = False,
        group_size: int | None = None) -> list[RunRecord]:
    """Train every configuration not already finished in ``out`` (which :func:`open_out`
    has checked); return all run records in the order of ``configs``, those of a group
    that failed with status ``failed`` and its error. ``on_group(configs, status)``
    reports each group: ``"kept"`` (finished before) as it is planned, ``"trained"`` or
    ``"failed: <error>"`` as it comes back. ``noise_scale`` measures the gradient noise
    scale after every epoch (the ``noise_scale`` column); ``group_size`` caps the models
    trained as one batch (:func:`~stochopt.train.plan_groups`)."""
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*runs_dir.glob(".*.tmp"), *out.glob(".*.tmp")]:
        stale.unlink()  # left by a killed process; we hold the folder's lock
    check_unique(configs)
    records: dict[str, RunRecord] = {}
    jobs, tasks = [], []
    for number, group in enumerate(plan_groups(configs, group_size)):
        members = [configs[i] for i in group]
        found = {c.run_id: load_run(runs_dir / f"{c.run_id}.json") for c in members}
        records.update({k: r for k, r in found.items() if r is not None})
        # The whole group trains again, its finished runs too: a run's numbers depend (by
        # float rounding) on which models shared its products, so only the same group
        # gives the unfinished runs what an uninterrupted run would have given them.
        if any(r is None for r in found.values()):
            jobs.append(Job(members, [f_star(c) for c in members], noise_scale, number))
        else:
            tasks.append(_task_row(number, members, "kept", {}))
            if on_group is not None:
                on_group(members, "kept")
    for outcome in (engine or LocalEngine()).run(jobs, split, on_epoch):
        members = outcome.job.configs
        status = "trained" if outcome.error is None else f"failed: {outcome.error}"
        tasks.append(_task_row(outcome.job.group, members, status.split(":")[0],
                               {**outcome.task, "error": outcome.error or ""}))
        for record in outcome.records or []:
            if record.run in records:
                continue  # finished before: its files stay as they are
            record.weights_path = f"runs/{record.run}.npy"
            write_npy(out / record.weights_path, record.weights.astype(np.float32))
            write_json(runs_dir / f"{record.run}.json", record.to_json())  # last: finished
            records[record.run] = record
        if outcome.error is not None:
            for c in members:
                records.setdefault(c.run_id, RunRecord(c, status="failed",
                                                       error=outcome.error))
        if on_group is not None:
            on_group(members, status)
    write_csv(out / "tasks.csv", sorted(tasks, key=lambda t: t["group"]), TASK_COLUMNS)
    return [records[c.run_id] for c in configs]


def _task_row(number: int, members: list[Config], status: str, task: dict[str, Any]
              ) -> dict[str, Any]:
    return {"group": number, "runs": len(members), "batch_size": members[0].batch_size,
            "status": status, **{k: "" for k in TASK_COLUMNS[4:]}, **task}


def load_run(path: Path) -> RunRecord | None:
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: trained again


class FStarSource:
    """``config -> FStar`` of its problem (its weight decay): from the cache
    (``"cached"``), solved when not cached (``"solve"``), or never (``"skip"``); None when
    unknown, and for a rule with decoupled weight decay (AdamW) unless its decay is 0: it
    does not minimise f + (wd/2)|w|^2, so no f* measures its progress. ``optima`` holds
    every optimum looked up, by weight decay."""

    def __init__(self, split: Split, policy: str = "cached", progress: bool = False) -> None:
        if policy not in ("cached", "solve", "skip"):
            raise SettingError.bad("optimum", f"must be cached, solve or skip, got {policy!r}")
        self.split, self.policy, self.progress = split, policy, progress
        self.optima: dict[float, Optimum | None] = {}

    def __call__(self, config: Config) -> FStar | None:
        wd = config.weight_decay
        if config.decoupled_decay and wd != 0:
            return None
        if wd not in self.optima:
            self.optima[wd] = None if self.policy == "skip" else cached_optimum(
                self.split, wd, compute=self.policy == "solve", progress=self.progress)
        opt = self.optima[wd]
        if opt is None or not math.isfinite(opt.objective):
            return None
        return FStar(opt.objective, opt.attained)
