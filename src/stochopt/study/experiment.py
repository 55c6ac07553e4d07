"""Running a study: groups -> engine -> run records, into one output folder.

    configs, notes = plan.grid(["momentum", "adam"], {"seed": [0, 1, 2]})
    out = folder.open_out("runs/compare", split)                   # checked, locked
    records = run(configs, split, out)                               # resumable
    artefacts.write_all(out, records, "stochopt compare")            # tables, figures, report

``run`` stores every finished run in the folder (:mod:`.folder`), so re-running the same
command after an interruption trains only the rest. Groups are trained by an *engine*:
:class:`LocalEngine` here, one after another in this process, or
:class:`stochopt.study.ray_engine.RayEngine`, one Ray task each on a cluster; either way this
driver alone writes the folder. A group that raises a known failure (the project's own
error, out of memory, a dead Ray worker) does not stop the others: its runs come back
``failed`` (not stored, so trained again by the next run of the command), and ``tasks.csv``
says where and how long each group ran. Any other exception is a bug and propagates with
its traceback.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..config import Config, FStar, RunRecord
from ..data import Split
from ..errors import SettingError, StochoptError
from ..files import write_csv, write_json, write_npy, write_text
from ..optimum import Optimum, cached_optimum
from ..train import Checkpoint, fit, plan_groups
from .folder import load_run
from .plan import check_unique

OnEpoch = Callable[[int, list[RunRecord]], None]


# --------------------------------------------------------------------------- engines


@dataclass
class Job:
    """One group of configurations that trains as one batch, with their f* (or None)."""

    configs: list[Config]
    f_star: list[FStar | None]
    noise_scale: bool = False  # measure B_simple after each epoch
    group: int = 0  # its place in the plan (tasks.csv)
    checkpoint: Checkpoint | None = None  # where its state is saved to resume mid-run


@dataclass
class Outcome:
    """What an engine gives back for one job: its records, or the one-line error that
    stopped it; ``task`` says where and how long it ran (a row of tasks.csv)."""

    job: Job
    records: list[RunRecord] | None = None
    error: str | None = None
    task: dict[str, Any] = field(default_factory=dict)
    traceback: str = ""  # the error's, for the folder's failures.log


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


def known_failure(error: BaseException) -> bool:
    """Whether a group's error is one a study reports and goes on from: the project's own
    errors (a bad setting met late, a rule that cannot run) and running out of memory.
    Anything else is a bug, and propagates with its traceback."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = " ".join(str(error).split())
    return isinstance(error, StochoptError | MemoryError | oom) or (
        isinstance(error, RuntimeError)  # torch's allocators on the CPU, and older CUDA
        and ("out of memory" in text or "can't allocate memory" in text))


class LocalEngine:
    """Trains the jobs one after another in this process."""

    def run(self, jobs, split, on_epoch):
        for job in jobs:
            t0 = time.perf_counter()
            task = {"engine": "local", "node": "local", "pid": os.getpid()}
            try:
                records = fit(job.configs, split, job.f_star, on_epoch, job.noise_scale,
                              checkpoint=job.checkpoint)
            except Exception as e:
                if not known_failure(e):
                    raise
                # reported per group; the other groups go on
                yield Outcome(job, error=one_line(e), traceback=traceback.format_exc(),
                              task={**task, "seconds": time.perf_counter() - t0})
            else:
                seconds = time.perf_counter() - t0
                yield Outcome(job, records, task={**task, "seconds": seconds,
                                                  "fit_seconds": seconds,
                                                  **checkpoint_facts(job.checkpoint)})


# --------------------------------------------------------------------------- running


TASK_COLUMNS = ["group", "runs", "batch_size", "status", "engine", "node", "pid",
                "seconds", "wait_seconds", "fit_seconds", "fetched_data", "data_seconds",
                "return_seconds", "resumed_from_epoch", "checkpoint_bytes",
                "checkpoint_seconds", "error"]
# seconds: from handing the group to the engine until its records came back (Ray: the
# queue, the task's start-up and the transfers included); wait_seconds (Ray): from
# submitting the task until it began (queued behind other groups, a new worker's start and
# imports); return_seconds (Ray): from its end until the driver had its records;
# fit_seconds: training alone; resumed_from_epoch: the epoch the group resumed at from its
# checkpoint (0: from the start), checkpoint_bytes: its last checkpoint's size,
# checkpoint_seconds: the time spent writing checkpoints;
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
        group_size: int | None = None, checkpoint_every: int | None = None
        ) -> list[RunRecord]:
    """Train every configuration not already finished in ``out`` (which :func:`open_out`
    has checked); return all run records in the order of ``configs``, those of a group
    that failed with status ``failed`` and its error. ``on_group(configs, status)``
    reports each group: ``"kept"`` (finished before) as it is planned, ``"trained"`` or
    ``"failed: <error>"`` as it comes back. ``noise_scale`` measures the gradient noise
    scale after every epoch (the ``noise_scale`` column); ``group_size`` caps the models
    trained as one batch (:func:`~stochopt.train.plan_groups`). Each group's state is
    checkpointed beside the run files every ``checkpoint_every`` epochs (None: each epoch,
    at most once a minute; 0: never), and a group cut short resumes from it."""
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*runs_dir.glob(".*.tmp"), *out.glob(".*.tmp")]:
        stale.unlink()  # left by a killed process; we hold the folder's lock
    check_unique(configs)
    records: dict[str, RunRecord] = {}
    jobs, tasks, tracebacks = [], [], []
    for number, group in enumerate(plan_groups(configs, group_size)):
        members = [configs[i] for i in group]
        found = {c.run_id: load_run(runs_dir / f"{c.run_id}.json") for c in members}
        records.update({k: r for k, r in found.items() if r is not None})
        # The whole group trains again, its finished runs too: a run's numbers depend (by
        # float rounding) on which models shared its products, so only the same group
        # gives the unfinished runs what an uninterrupted run would have given them.
        if any(r is None for r in found.values()):
            jobs.append(Job(members, [f_star(c) for c in members], noise_scale, number,
                            checkpoint_for(runs_dir, members, checkpoint_every)))
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
        if outcome.error is None and outcome.job.checkpoint is not None:
            outcome.job.checkpoint.path.unlink(missing_ok=True)  # its runs are stored
        if outcome.error is not None:
            tracebacks.append(f"group {outcome.job.group}: {describe(members)}\n"
                              f"{outcome.traceback or outcome.error}\n")
            for c in members:
                records.setdefault(c.run_id, RunRecord(c, status="failed",
                                                       error=outcome.error))
        if on_group is not None:
            on_group(members, status)
    write_csv(out / "tasks.csv", sorted(tasks, key=lambda t: t["group"]), TASK_COLUMNS)
    log = out / "failures.log"  # the failed groups' tracebacks; tasks.csv keeps the line
    if tracebacks:
        write_text(log, "\n".join(tracebacks))
    else:
        log.unlink(missing_ok=True)  # an earlier run's; its groups trained now
    return [records[c.run_id] for c in configs]


def checkpoint_facts(checkpoint: Checkpoint | None) -> dict[str, Any]:
    """tasks.csv's columns about a group's checkpoint."""
    if checkpoint is None:
        return {}
    return {"resumed_from_epoch": checkpoint.resumed_from,
            "checkpoint_bytes": checkpoint.bytes_written,
            "checkpoint_seconds": checkpoint.seconds_writing}


def checkpoint_for(runs_dir: Path, members: list[Config], every: int | None
                   ) -> Checkpoint | None:
    """The checkpoint of one group, named by its runs, so that the same command finds it
    again: ``every`` epochs (None: each epoch, at most once a minute; 0: none)."""
    key = hashlib.sha256("\n".join(c.run_id for c in members).encode()).hexdigest()[:16]
    # an absolute path: a Ray engine's store writes it from another working directory
    return Checkpoint.every_epochs(runs_dir.resolve() / f"group-{key}.pt", every)


def _task_row(number: int, members: list[Config], status: str, task: dict[str, Any]
              ) -> dict[str, Any]:
    return {"group": number, "runs": len(members), "batch_size": members[0].batch_size,
            "status": status, **{k: "" for k in TASK_COLUMNS[4:]}, **task}


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
