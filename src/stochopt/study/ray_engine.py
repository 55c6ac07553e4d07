"""The Ray engine: each K-at-once group is one Ray task on a cluster.

    records = experiment.run(configs, split, out, engine=RayEngine("auto"))

The driver (this process) keeps everything that touches the output folder: it puts the data
into Ray's object store once, submits one task per group, and takes the groups back as they
finish (``ray.wait``), so :func:`stochopt.study.experiment.run` writes each run's files exactly as
with the local engine: the same results, summaries, fingerprint and resume. A worker process
fetches the data the first time one of its tasks needs it and keeps it for the next tasks of
the same command (the store's arrays are read in place, not copied).

Faults: a task whose worker process dies is run again by Ray (``max_retries``), and one
whose retries are spent comes back as its group's error; a task that raises a known failure
(:func:`~stochopt.study.experiment.known_failure`) comes back as its group's error, and the
other groups go on, while any other exception is a bug and is raised in the driver with its
traceback; a driver that is killed is resumed by running the command again, as with the
local engine.

Ray is optional (``pip install -e ".[ray]"``); without it this engine says so in one line.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..data import Split
from ..errors import StochoptError
from ..train import Checkpoint, fit
from ..version import __version__
from .experiment import Job, OnEpoch, Outcome, checkpoint_facts, known_failure, one_line
from .folder import NUMERICS_VERSION

INSTALL = 'pip install -e ".[ray]" (or pip install "ray>=2.10")'
TENSORS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "sample_weight")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StochoptError(f"--engine ray needs Ray, which is not installed here; install "
                            f"it with {INSTALL}, or use --engine local") from None
    return ray


@dataclass
class RayEngine:
    """Train each job as one Ray task with ``cpus_per_task`` CPUs (torch's threads in the
    task) and, for data on a GPU, one GPU. ``address``: a running cluster's (``"auto"``,
    ``"127.0.0.1:6379"``, ``"ray://head:10001"``), or None for the one ``ray start`` started on
    this machine or ``RAY_ADDRESS`` names, else a Ray started for this call. ``device``: where
    the tasks train (``"cuda"``: one GPU each), when not where the split is (a driver
    without a GPU). ``task`` is the function a task runs (:func:`train_job`)."""

    address: str | None = None
    cpus_per_task: int = 1
    max_retries: int = 3
    device: str | None = None
    task: Any = None
    joined: bool = field(default=False, init=False, repr=False)  # this engine called ray.init

    def start(self, device: str | None = None) -> None:
        """Join the cluster (or start Ray) and check that a task fits on one of its nodes:
        the command does this before it reads any data, so a refusal costs nothing."""
        ray = import_ray()
        if not ray.is_initialized():
            self.connect(ray)
            self.joined = True
        self.check_fits(ray, self.options(self.device or device or "cpu"))

    def options(self, device: str) -> dict[str, Any]:
        """What each task asks Ray for, and how it is placed. Ray does not retry it: when
        its worker or node dies, the driver submits it again (``max_retries`` times) with
        its group's last checkpoint, which a retry of Ray's own could not carry."""
        return {"num_cpus": self.cpus_per_task, "num_gpus": 1 if device == "cuda" else 0,
                "max_retries": 0, "retry_exceptions": False,
                # groups are big: one per node before any node gets a second
                "scheduling_strategy": "SPREAD"}

    def check_fits(self, ray: Any, options: dict[str, Any]) -> None:
        """Refuse what no node of the cluster can run (Ray would wait for it forever)."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        need = {"CPU": options["num_cpus"], "GPU": options["num_gpus"]}
        if not any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
            most = {k: max((r.get(k, 0) for r in nodes), default=0) for k in need}
            raise StochoptError(
                f"no node of the Ray cluster has {need['CPU']:g} CPU(s)"
                + (f" and {need['GPU']:g} GPU" if need["GPU"] else "")
                + f" for a task (the largest has {most['CPU']:g} CPU(s), {most['GPU']:g} "
                "GPU(s)); lower --ray-cpus-per-task, or use --device cpu, or add such a node")

    def run(self, jobs: list[Job], split: Split, on_epoch: OnEpoch | None
            ) -> Iterator[Outcome]:
        ray = import_ray()
        device = self.device or split.X_train.device.type
        if jobs:
            self.start(device)
        pending: dict[Any, tuple[Job, float, float]] = {}
        try:
            if not jobs:
                return  # every group finished before (the command may have joined: leave)
            options = self.options(device)
            data = ray.put(pack(split))  # once per command; workers read it in place
            remote = ray.remote(self.task or train_job).options(**options)
            store = checkpoint_store(ray) if any(j.checkpoint for j in jobs) else None
            attempts: dict[int, int] = {}

            def submit(job: Job, t0: float | None = None) -> None:
                # its checkpoint travels with it (a driver restarted, a worker that died):
                # the store writes the file on this node, so it is read here
                resume = job.checkpoint.read_bytes() if job.checkpoint is not None else None
                # the ref inside a list reaches the task unresolved: a worker that already
                # holds the data skips fetching it
                ref = remote.remote(job, [data], self.cpus_per_task, device, store, resume)
                pending[ref] = (job, t0 or time.perf_counter(), time.time())

            # the costliest groups first (see cost): the last groups to start are short
            # ones, so the wall time comes close to the largest group's or the total's
            # share per CPU, whichever is longer
            for job in sorted(jobs, key=cost, reverse=True):
                submit(job)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job, t0, submitted = pending.pop(ref)
                task: dict[str, Any] = {"engine": "ray"}
                try:
                    records, info = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the task raised
                    cause = e.cause if isinstance(e.cause, BaseException) else e
                    if not known_failure(cause):
                        raise cause from None  # a bug: its traceback, not a line
                    error, trace = one_line(cause), str(e)
                except ray.exceptions.RayError as e:  # its worker or node died, ...
                    if attempts.get(job.group, 0) < self.max_retries:
                        attempts[job.group] = attempts.get(job.group, 0) + 1
                        submit(job, t0)  # again, from its last checkpoint
                        continue
                    error, trace = one_line(e).split(" Traceback")[0][:300], str(e)
                else:
                    error, trace = mismatch(info), ""
                    # wall clocks: exact on one machine, off by the clocks' offset across
                    wait, back = info.pop("started") - submitted, time.time() - info.pop("ended")
                    task.update(info, wait_seconds=wait, return_seconds=back)
                task["seconds"] = time.perf_counter() - t0
                if error is not None:
                    yield Outcome(job, error=error, task=task, traceback=trace)
                    continue
                if on_epoch is not None:  # a group's epochs are known when it returns
                    for epoch in range(1, max(len(r.rows) for r in records) + 1):
                        on_epoch(epoch, records)
                yield Outcome(job, records, task=task)
        finally:
            for ref in pending:  # the driver stopped early: its tasks are not wanted
                ray.cancel(ref)
            if self.joined:  # disconnect; a Ray started for this command stops
                ray.shutdown()
                self.joined = False

    def connect(self, ray: Any) -> None:
        """Join the cluster at ``address``, or start Ray, or say in one line why not."""
        if self.address not in (None, "auto", "local"):
            reachable(self.address)
        # ray.init makes SIGTERM a bare sys.exit; the command's own handler (the stochopt
        # command ends on SIGTERM as on Ctrl-C, with one line) is put back
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = f"at {self.address}" if self.address else "on this machine"
            raise StochoptError(f"could not join a Ray cluster {where} ({one_line(e)}); start "
                                "one with `ray start --head`, or leave --ray-address out to "
                                "start Ray for this command") from None
        finally:
            if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
                signal.signal(signal.SIGTERM, on_sigterm)


def reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse an address nothing answers at (Ray would retry it for ever)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                 timeout=timeout).close()
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise StochoptError(f"no Ray cluster answers at --ray-address {address} ({why}); give "
                            "the head node's HOST:PORT (ray start --head prints it), or "
                            "leave --ray-address out") from None


def cost(job: Job) -> float:
    """A group's work in model-epochs, each weighted for its per-step overhead (measured by
    benchmarks/bench_ray.py: an epoch at batch 32 costs 1.8x one at batch 256)."""
    c = job.configs[0]
    return len(job.configs) * c.epochs * (1 + 32 / c.batch_size)


def mismatch(info: dict[str, Any]) -> str | None:
    """A worker whose stochopt computes other numbers than the driver's cannot join in."""
    if info.get("numerics") == NUMERICS_VERSION:
        return None
    return (f"node {info.get('node', '?')} runs stochopt {info.get('version')} (numerics "
            f"{info.get('numerics')}), this driver {__version__} (numerics {NUMERICS_VERSION}); "
            "install the same stochopt on every node")


# --------------------------------------------------------------------------- the data


def pack(split: Split) -> dict[str, Any]:
    """The split as NumPy arrays (which Ray's object store shares without copying) and its
    other fields."""
    if split.X_train.is_sparse:
        raise StochoptError("the Ray engine takes dense data; densify it or use --engine local")
    packed = {f.name: getattr(split, f.name) for f in fields(Split)}
    for name in TENSORS:
        if packed[name] is not None:
            packed[name] = packed[name].cpu().numpy()
    return packed


def unpack(packed: dict[str, Any], device: str) -> Split:
    values = dict(packed)
    with warnings.catch_warnings():  # the store's arrays are read-only; training only reads
        warnings.simplefilter("ignore", UserWarning)
        for name in TENSORS:
            if values[name] is not None:
                values[name] = torch.from_numpy(values[name]).to(device)
    return Split(**values)


_held: dict[str, Split] = {}  # this worker's data: the last command's only


class CheckpointStore:
    """A Ray actor on the driver's node that writes the groups' checkpoints into the output
    folder and reads them back: a task retried after its worker died (on any node) resumes
    from its group's last checkpoint, and so does the same command run again."""

    def write(self, path: str, data: bytes) -> None:
        Checkpoint(Path(path)).write_bytes(data)

    def read(self, path: str) -> bytes | None:
        return Checkpoint(Path(path)).read_bytes()


def checkpoint_store(ray: Any) -> Any:
    """The store, pinned to this (the driver's) node, where the output folder is."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(CheckpointStore).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote()


@dataclass
class RemoteCheckpoint(Checkpoint):
    """A group's checkpoint as a task sees it: it resumes from the bytes it was submitted
    with, and its writes go to the store without waiting (a task that waits on another
    gives its CPU back, and Ray would start a second task on it meanwhile)."""

    store: Any = None
    resume: bytes | None = None

    def write_bytes(self, data: bytes) -> None:
        self.store.write.remote(str(self.path), data)  # in order, after the earlier ones

    def read_bytes(self) -> bytes | None:
        return self.resume


def train_job(job: Job, data: list[Any], threads: int, device: str, store: Any = None,
              resume: bytes | None = None) -> tuple[list[Any], dict[str, Any]]:
    """A Ray task: train one group on this node, from the checkpoint ``resume`` when given,
    checkpointed through ``store`` when its job asks; return its records and where and how
    long it ran."""
    import ray

    started, t0 = time.time(), time.perf_counter()
    torch.set_num_threads(threads)
    (ref,) = data
    key = f"{ref.hex()}-{device}"
    fetched = key not in _held
    if fetched:
        _held.clear()
        _held[key] = unpack(ray.get(ref), device)
    t1 = time.perf_counter()
    checkpoint = None
    if job.checkpoint is not None and store is not None:
        c = job.checkpoint
        checkpoint = RemoteCheckpoint(c.path, c.every, c.min_seconds, store=store,
                                      resume=resume)
    records = fit(job.configs, _held[key], job.f_star, None, job.noise_scale,
                  checkpoint=checkpoint)
    t2 = time.perf_counter()
    return records, {**checkpoint_facts(checkpoint),
                     "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                     "fetched_data": fetched, "data_seconds": t1 - t0, "fit_seconds": t2 - t1,
                     "numerics": NUMERICS_VERSION, "version": __version__,
                     "started": started, "ended": time.time()}
