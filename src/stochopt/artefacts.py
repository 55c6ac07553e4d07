"""What an experiment leaves in its output folder besides the run files: the tidy tables,
the figures and the report, all rebuilt from the run records.

    results.csv            one row per run x epoch (config, metrics, every hyperparameter)
    summary.csv/.json      one row per run: final and best-epoch metrics, test metrics, time
    curves.png, weights_<optimizer>.png, batch_sizes.png, lr_sensitivity.png
    report.html/.md        the table, sentences built from its numbers, the figures
    meta.json              the command, the data, the versions
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import FStar, RunRecord
from .data import Split
from .files import save_figure, write_csv, write_json, write_npy
from .optimum import Optimum, rates

BASE_COLUMNS = ["run", "optimizer", "lr", "batch_size", "seed", "epoch", "train_loss",
                "train_acc", "val_loss", "val_acc", "suboptimality", "seconds", "status",
                "epoch_lr", "f_star_attained"]
# lr: the run's base rate; epoch_lr: the schedule's rate that epoch; f_star_attained: true
# when suboptimality is f - f*, false when it is f - f_best (an upper bound, at wd 0), empty
# when no f* applies
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "suboptimality", "seconds"]


def versions() -> dict[str, str]:
    import torch

    from . import __version__

    return {"stochopt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def data_info(split: Split) -> dict[str, Any]:
    X = split.X_train
    return {"dataset": split.name, "n_train": len(X), "n_val": len(split.X_val),
            "n_test": len(split.X_test), "bias": split.source.get("bias", False),
            "device": str(X.device), "dtype": str(X.dtype).removeprefix("torch.")}


# --------------------------------------------------------------------------- tables


def hyper_columns(records: Sequence[RunRecord]) -> list[str]:
    """The runs' further settings, one results.csv column each: the schedule, then every
    hyperparameter any of their optimisers declares."""
    names: list[str] = []
    for r in records:
        names += [n for n in r.config.rule.hyperparameters() if n not in names]
    return ["schedule", "lr_decay", *names]


def results_rows(records: Sequence[RunRecord]) -> tuple[list[dict[str, Any]], list[str]]:
    """The tidy table: one row per run x epoch, and its columns."""
    extra = hyper_columns(records)
    rows = []
    for record in records:
        c = record.config.resolved()
        values = {**c.hyper, "schedule": c.schedule, "lr_decay": c.lr_decay}
        for row in record.rows:
            diverged_here = record.status == "diverged" and row["epoch"] == record.diverged_epoch
            if not math.isfinite(row["suboptimality"]):
                row = {**row, "suboptimality": ""}  # no f* applies: an empty cell, not nan
            rows.append({**row, "run": record.run, "optimizer": c.optimizer, "lr": c.lr,
                         "epoch_lr": row["lr"], "batch_size": c.batch_size, "seed": c.seed,
                         "status": "diverged" if diverged_here else "ok",
                         "f_star_attained": "" if record.f_star is None
                         else str(record.f_star.attained).lower(),
                         **{k: "" if values.get(k) is None else values[k] for k in extra}})
    return rows, BASE_COLUMNS + extra


def summary_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run: final and best validation metrics, test metrics, time."""
    table = []
    for r in records:
        hist = r.rows
        finite = [h for h in hist if math.isfinite(h["val_loss"])]
        best = min(finite, key=lambda h: h["val_loss"]) if finite else None
        c = r.config
        table.append({
            "run": r.run, "optimizer": c.optimizer, "lr": c.base_lr,
            "batch_size": c.batch_size, "seed": c.seed, "status": r.status,
            "final_val_loss": hist[-1]["val_loss"] if hist else math.nan,
            "final_val_acc": hist[-1]["val_acc"] if hist else math.nan,
            "best_epoch": best["epoch"] if best else None,
            "test_acc": r.test_acc, "test_loss": r.test_loss,
            "suboptimality": hist[-1]["suboptimality"] if hist else math.nan,
            "f_star_attained": None if r.f_star is None else r.f_star.attained,
            "weight_decay": c.weight_decay,
            "decoupled_decay": c.decoupled_decay and c.weight_decay != 0,
            "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(1, len(hist)),
            "total_seconds": sum(h["seconds"] for h in hist),
        })
    return table


def best(table: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished run with the lowest final validation loss."""
    ok = [r for r in table if r["status"] == "ok"]
    return min(ok, key=lambda r: r["final_val_loss"]) if ok else None


# --------------------------------------------------------------------------- writing


def write_all(out: str | Path, records: Sequence[RunRecord], title: str,
              split: Split | None = None, optima: dict[float, Optimum | None] | None = None
              ) -> list[dict[str, Any]]:
    """results.csv, summary.csv/json, the figures, report.html/md and meta.json; returns the
    summary table. ``optima`` (by weight decay) adds the rates theory predicts for the
    full-batch runs."""
    from . import plots
    from .report import write_report

    out = Path(out)
    rows, columns = results_rows(records)
    write_csv(out / "results.csv", rows, columns)
    table = summary_table(records)
    write_csv(out / "summary.csv", table, list(table[0]) if table else ["run"])
    write_json(out / "summary.json", table)

    seeds = {r.config.seed for r in records}
    labels = [f"{r.config.optimizer} lr={r.config.base_lr:g} bs={r.config.batch_size}"
              + (f" s={r.config.seed}" if len(seeds) > 1 else "") for r in records]
    reference, notes = full_batch_rates(records, split, optima or {})
    save_figure(out / "curves.png", plots.curves(records, labels, reference))
    figures = ["curves.png"]
    for optimizer in dict.fromkeys(r.config.optimizer for r in records):
        first = next(r for r in records if r.config.optimizer == optimizer)
        save_figure(out / f"weights_{optimizer}.png", plots.weights(
            first.load_weights(out), f"{optimizer}: columns of W ({first.run})"))
        figures.append(f"weights_{optimizer}.png")
    if len({r.config.batch_size for r in records}) > 1:
        save_figure(out / "batch_sizes.png", plots.batch_sizes(table))
        figures.append("batch_sizes.png")
    lrs: dict[str, set[float]] = {}
    for r in records:
        lrs.setdefault(r.config.optimizer, set()).add(r.config.base_lr)
    if any(len(v) > 1 for v in lrs.values()):
        save_figure(out / "lr_sensitivity.png", plots.lr_sensitivity(table))
        figures.append("lr_sensitivity.png")
    write_report(out, table, figures, title, notes)
    write_json(out / "meta.json", {"command": title,
                                   "data": data_info(split) if split else None,
                                   "versions": versions()})
    return table


def full_batch_rates(records: Sequence[RunRecord], split: Split | None,
                     optima: dict[float, Optimum | None]
                     ) -> tuple[list[tuple[str, list[float], list[float]]], dict[str, str]]:
    """For the full-batch runs (one step per epoch) whose f* is attained: the suboptimality
    that gradient descent and heavy ball at their optimal step sizes would reach from the
    first such run's first epoch (``f - f*`` contracting by rate^2 per step on a quadratic
    with the Hessian's L and mu at W*), and sentences comparing them with what each did."""
    lines: list[tuple[str, list[float], list[float]]] = []
    sentences: list[str] = []
    for wd, opt in optima.items():
        runs = [r for r in records if r.config.weight_decay == wd and split is not None
                and r.config.batch_size >= len(split.X_train) and len(r.rows) >= 2
                and all(math.isfinite(x["suboptimality"]) and x["suboptimality"] > 0
                        for x in r.rows)]
        if opt is None or not opt.attained or "L" not in opt.curvature or not runs:
            continue
        L, mu = opt.curvature["L"], opt.curvature["mu"]
        rate = rates(L, mu)
        epochs = [x["epoch"] for x in runs[0].rows]
        start = runs[0].rows[0]["suboptimality"]
        for name, what in (("gd_rate", "gradient descent"), ("heavy_ball_rate", "heavy ball")):
            lines.append((f"{what}, optimal step (theory, wd {wd:g})", epochs,
                          [start * rate[name] ** (2 * (e - epochs[0])) for e in epochs]))
        per_step = [(r.rows[-1]["suboptimality"] / r.rows[0]["suboptimality"])
                    ** (1 / (len(r.rows) - 1)) for r in runs]
        measured = ", ".join(f"{r.config.optimizer} (lr {r.config.base_lr:g}) {x:.4g}"
                             for r, x in zip(runs, per_step, strict=True))
        sentences.append(
            f"At weight decay {wd:g} the Hessian at W* has L = {L:.4g} and mu = {mu:.3g} "
            f"(condition number {L / mu:.4g}). Gradient descent at its optimal step 2/(L+mu) "
            f"is guaranteed to contract f - f* by {rate['gd_rate'] ** 2:.6g} per step, heavy "
            f"ball at Polyak's parameters by {rate['heavy_ball_rate'] ** 2:.6g} (dashed). "
            f"Measured per step at full batch: {measured}. The guarantees are worst cases "
            "set by the flattest direction (mu); early on, the steep directions dominate f - "
            "f* and fall much faster.")
    return lines, ({"How fast can full-batch methods go?": " ".join(sentences)}
                   if sentences else {})


def write_train(out: str | Path, record: RunRecord, split: Split, f_star: FStar | None
                ) -> None:
    """``stochopt train``'s files: history.csv, weights.npy, curves.png, weights.png,
    samples.png and summary.json."""
    from . import plots

    out = Path(out)
    c = record.config
    write_csv(out / "history.csv", record.rows, HISTORY_COLUMNS)
    write_npy(out / "weights.npy", record.weights.astype(np.float32))
    save_figure(out / "curves.png", plots.curves([record], [c.optimizer]))
    save_figure(out / "weights.png", plots.weights(record.weights,
                                                   f"{c.optimizer}: columns of W"))
    save_figure(out / "samples.png", plots.samples(split.X_train[:32].cpu().numpy(),
                                                   split.y_train[:32].cpu().numpy()))
    summary = {"config": asdict(c.resolved()), "status": record.status,
               "diverged_epoch": record.diverged_epoch, "test_loss": record.test_loss,
               "test_acc": record.test_acc, "final": record.rows[-1] if record.rows else {},
               "f_star": None if f_star is None else f_star.value,
               "f_star_attained": None if f_star is None else f_star.attained,
               "data": data_info(split), "versions": versions()}
    write_json(out / "summary.json", summary)
