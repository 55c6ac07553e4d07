"""Many runs, resumably: group configurations that can train at once, train each group with
:func:`stochopt.train.fit`, and store every finished run as its own files.

    out/runs/<run>.npy    the run's final weights
    out/runs/<run>.json   its config, status, test metrics and per-epoch rows (written last,
                          atomically: a run is finished exactly when this file exists)
    out/results.csv       one tidy row per run x epoch, rebuilt from the run files

Re-running the same command after an interruption skips the finished runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .data import Split
from .files import write_csv, write_json, write_npy
from .optim import OPTIMIZERS
from .schedules import DEFAULT_DECAY
from .train import SHARED, Config, History, fit, update_rule

BASE_COLUMNS = ["run", "optimizer", "lr", "batch_size", "seed", "epoch", "train_loss",
                "train_acc", "val_loss", "val_acc", "suboptimality", "seconds", "status",
                "epoch_lr"]  # lr: the run's base rate; epoch_lr: the schedule's rate that epoch


def run_id(config: Config) -> str:
    """A readable, stable name for a configuration."""
    digest = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.optimizer}-lr{config.base_lr:g}-bs{config.batch_size}-s{config.seed}-{digest}"


def group_key(config: Config) -> tuple:
    """Configurations with the same key share a data order and train as one batch of K."""
    return tuple(getattr(config, a) for a in SHARED)


def hyper_columns(configs: list[Config]) -> list[str]:
    """The further hyperparameters of these runs, one results.csv column each."""
    names: list[str] = []
    for c in configs:
        rule = OPTIMIZERS[update_rule(c.optimizer)]
        names += [n for n in rule.hyperparameters() if n not in names]
    return ["schedule", "lr_decay", *names]


def _hyper_values(config: Config) -> dict[str, Any]:
    rule = OPTIMIZERS[update_rule(config.optimizer)]
    values = {**rule.hyperparameters(), **config.hyper}
    decay = config.lr_decay if config.lr_decay is not None else DEFAULT_DECAY[config.schedule]
    return {**values, "schedule": config.schedule, "lr_decay": decay}


def load_run(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: trained again


def run_all(
    configs: list[Config],
    split: Split,
    out: Path,
    f_star: Callable[[Config], float | None] = lambda c: None,
    on_epoch: Callable[[int, list[History]], None] | None = None,
    on_group: Callable[[list[Config], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every configuration not already finished in ``out``; return all run records in
    the order of ``configs``. ``on_group(configs, skipped)`` reports each group."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*runs_dir.glob(".*.tmp"), *out.glob(".*.tmp")]:
        stale.unlink()  # left by a killed process; we hold the folder's lock
    ids = [run_id(c) for c in configs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate configurations")
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(group_key(c), []).append(i)
    records: dict[str, dict[str, Any]] = {}
    for members in groups.values():
        todo = []
        for i in members:
            record = load_run(runs_dir / f"{ids[i]}.json")
            if record is not None:
                records[ids[i]] = record
            else:
                todo.append(i)
        if on_group is not None:
            on_group([configs[i] for i in members], not todo)
        if not todo:
            continue
        # The whole group trains again, its finished runs too: a run's numbers depend (by
        # float rounding) on which K models shared its products, so only the same group
        # gives the unfinished runs what an uninterrupted run would have given them.
        stars = [f_star(configs[i]) for i in members]
        histories = fit([configs[i] for i in members], split,
                        f_star=None if any(s is None for s in stars) else stars,
                        on_epoch=on_epoch)
        for i, h in zip(members, histories, strict=True):
            if i not in todo:
                continue  # finished before: its files stay as they are
            write_npy(runs_dir / f"{ids[i]}.npy", h.weights.astype(np.float32))
            record = {"run": ids[i], **h.to_dict()}
            write_json(runs_dir / f"{ids[i]}.json", record)  # last: marks the run finished
            records[ids[i]] = record
    return [records[i] for i in ids]


def results_rows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The tidy table: one row per run x epoch, and its columns."""
    configs = [Config(**r["config"]) for r in records]
    extra = hyper_columns(configs)
    rows = []
    for record, config in zip(records, configs, strict=True):
        hyper = _hyper_values(config)
        for row in record["history"]:
            diverged_here = record["status"] == "diverged" and row["epoch"] == record[
                "diverged_epoch"]
            rows.append({**row, "run": record["run"], "optimizer": config.optimizer,
                         "lr": config.base_lr, "epoch_lr": row["lr"],
                         "batch_size": config.batch_size, "seed": config.seed,
                         "status": "diverged" if diverged_here else "ok",
                         **{k: hyper.get(k, "") for k in extra}})
    return rows, BASE_COLUMNS + extra


def write_results(out: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows, columns = results_rows(records)
    write_csv(out / "results.csv", rows, columns)
    return rows


def summary_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: final and best validation metrics, test metrics, time."""
    table = []
    for r in records:
        hist = r["history"]
        finite = [h for h in hist if math.isfinite(h["val_loss"])]
        best = min(finite, key=lambda h: h["val_loss"]) if finite else None
        c = r["config"]
        table.append({
            "run": r["run"], "optimizer": c["optimizer"], "lr": Config(**c).base_lr,
            "batch_size": c["batch_size"], "seed": c["seed"], "status": r["status"],
            "final_val_loss": hist[-1]["val_loss"] if hist else math.nan,
            "final_val_acc": hist[-1]["val_acc"] if hist else math.nan,
            "best_epoch": best["epoch"] if best else None,
            "test_acc": r["test_acc"], "test_loss": r["test_loss"],
            "suboptimality": hist[-1]["suboptimality"] if hist else math.nan,
            "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(1, len(hist)),
            "total_seconds": sum(h["seconds"] for h in hist),
        })
    return table


def write_summary(out: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = summary_table(records)
    write_csv(out / "summary.csv", table, list(table[0]) if table else ["run"])
    write_json(out / "summary.json", table)
    return table
