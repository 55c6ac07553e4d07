"""Every optimiser a module exports, measured the same way: ``stochopt zoo MODULE``.

    names = exported("pytorch_optimizer")   # [(its exported name, "MODULE:Class"), ...]
    runnable, unsupported = sort_out(names)  # which can run here, and why the others cannot
    rows = zoo_rows(names, unsupported, records, summary)   # zoo.csv

``pytorch_optimizer`` exports its ``get_supported_optimizers()``, ``torch.optim`` (or any
module) its ``Optimizer`` subclasses, ``stochopt`` its registry. Each optimiser trains at
its defaults in a group of its own, so one that raises fails alone.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..config import RunRecord
from ..errors import StochoptError
from ..optim import RULES, get_rule
from ..optim.plugin import import_module

ZOO_COLUMNS = ["name", "optimizer", "status", "reason", "source", "lr", "final_val_acc_mean",
               "test_acc_mean", "n_diverged", "seconds_per_epoch", "seconds_per_step"]


def step_seconds(spec: str, split: Any, batch_size: int, steps: int = 30,
                 repeats: int = 1) -> float:
    """The seconds of one training step of ``spec`` at ``batch_size`` here, one model: the
    difference of two short runs (``steps`` and a third of it, after one to warm up), so
    that setting up a run and evaluating it cancel; always positive. With ``repeats``, each
    run is timed that many times and its fastest kept: a busy machine only adds time, and a
    slow short run would make the difference too small, a slow long one too large."""
    import time
    from dataclasses import replace

    from ..config import Config
    from ..train import fit

    n = len(split.X_train)
    per_epoch = math.ceil(n / batch_size)

    def timed(wanted: int) -> tuple[float, int]:
        """(seconds, steps) of a run of about ``wanted`` steps: the first wanted batches,
        or, on a small data set, as many whole epochs as that takes."""
        epochs = 1 if wanted * batch_size <= n else math.ceil(wanted / per_epoch)
        m = min(n, wanted * batch_size)
        part = replace(split, X_train=split.X_train[:m], y_train=split.y_train[:m],
                       X_val=split.X_val[:100], y_val=split.y_val[:100],
                       X_test=split.X_test[:100], y_test=split.y_test[:100],
                       sample_weight=None)
        t0 = time.perf_counter()
        fit(Config(spec, epochs=epochs, batch_size=batch_size), part)
        return time.perf_counter() - t0, epochs * math.ceil(m / batch_size)

    few = max(1, steps // 3)
    timed(few)  # imports, first calls
    runs = [(timed(few), timed(steps)) for _ in range(repeats)]
    (t1, s1), (t2, s2) = min(r[0] for r in runs), min(r[1] for r in runs)
    difference = (t2 - t1) / (s2 - s1) if s2 > s1 else 0.0
    # on a loaded machine (or a tiny data set) the two runs' noise can exceed the steps
    # between them and make the difference negative: then the longer run's seconds per
    # step, setting up included, bound the step from above
    return difference if difference > 0 else t2 / s2


REPEATS = 3  # timings of each run of an optimiser that looks too slow, the fastest kept


def too_slow(runnable: Sequence[str], split: Any, batch_size: int, cap: float
             ) -> tuple[dict[str, str], dict[str, float]]:
    """The optimisers whose epoch at ``batch_size`` would take longer than ``cap`` seconds
    here, with why, and every one's measured seconds per step (one that raises while timed
    is left to fail in its own group). One that looks over the cap is timed again, each of
    its two runs :data:`REPEATS` times and the fastest kept, and judged by that: a busy
    machine only adds time (a plug-in timed while another process trained measured 2.3x its
    step time of another run)."""
    slow: dict[str, str] = {}
    measured: dict[str, float] = {}
    per_epoch = math.ceil(len(split.X_train) / batch_size)
    for spec in runnable:
        try:
            measured[spec] = step_seconds(spec, split, batch_size)
            if measured[spec] * per_epoch > cap:
                measured[spec] = step_seconds(spec, split, batch_size, repeats=REPEATS)
        except Exception:  # its own group will fail with its reason
            measured.pop(spec, None)
            continue
        if measured[spec] * per_epoch > cap:
            slow[spec] = (f"too slow here: {measured[spec] * 1e3:.3g} ms per step, "
                          f"{measured[spec] * per_epoch:.3g} s per epoch projected at batch "
                          f"{batch_size}, over the cap of {cap:g} s (--max-epoch-seconds)")
    return slow, measured


def exported(module: str) -> list[tuple[str, str]]:
    """``(exported name, optimizer spec)`` of every optimiser ``module`` exports."""
    if module == "stochopt":
        return [(name, name) for name in RULES]
    loaded = import_module(module)
    if hasattr(loaded, "get_supported_optimizers") and hasattr(loaded, "load_optimizer"):
        found = []
        for name in loaded.get_supported_optimizers():
            try:
                cls = loaded.load_optimizer(name)
            except Exception as e:  # the package's own lookup: its failure is one row
                found.append((name, f"{module}:{name} ({type(e).__name__}: {e})"))
                continue
            found.append((name, f"{module}:{cls.__name__}"))
        return found
    return [(name, f"{module}:{name}") for name, obj in sorted(vars(loaded).items())
            if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
            and obj is not torch.optim.Optimizer and not name.startswith("_")]


def sort_out(names: Sequence[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The specs that can run here (each once), and for the others why not."""
    runnable: list[str] = []
    unsupported: dict[str, str] = {}
    for _, spec in names:
        if spec in runnable or spec in unsupported:
            continue
        if " (" in spec:  # the package could not even give the class
            unsupported[spec] = spec.split(" (", 1)[1].rstrip(")")
            continue
        try:
            get_rule(spec)
        except StochoptError as e:
            unsupported[spec] = str(e)
        else:
            runnable.append(spec)
    return runnable, unsupported


def zoo_rows(names: Sequence[tuple[str, str]], unsupported: dict[str, str],
             records: Sequence[RunRecord], summary: Sequence[dict[str, Any]],
             measured: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per exported optimiser: trained, failed (its group raised) or unsupported
    (it cannot run here, or too slowly), with the reason, its summary figures and its
    ``measured`` seconds per step where timed."""
    measured = measured or {}
    by_optimizer = {r["optimizer"]: r for r in summary}
    runs: dict[str, list[RunRecord]] = {}
    for record in records:
        runs.setdefault(record.config.optimizer, []).append(record)
    rows = []
    for name, spec in names:
        row: dict[str, Any] = {"name": name, "optimizer": spec.split(" (")[0],
                               "seconds_per_step": measured.get(spec, "")}
        if spec in unsupported:
            rows.append({**row, "status": "unsupported", "reason": unsupported[spec]})
            continue
        mine = runs.get(spec, [])
        failed = [r for r in mine if r.status == "failed"]
        if failed or not mine:
            rows.append({**row, "status": "failed",
                         "reason": failed[0].error if failed else "not trained"})
            continue
        top = by_optimizer.get(spec, {})
        seconds = [x["seconds"] for r in mine for x in r.rows]
        rows.append({**row, "status": "trained", "reason": "",
                     "source": get_rule(spec).source or "stochopt",
                     "lr": mine[0].config.base_lr,
                     "final_val_acc_mean": top.get("final_val_acc_mean", math.nan),
                     "test_acc_mean": top.get("test_acc_mean", math.nan),
                     "n_diverged": top.get("n_diverged", ""),
                     "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else ""})
    return rows
