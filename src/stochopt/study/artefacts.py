"""What an experiment leaves in its output folder besides the run files: the tidy tables,
the figures and the report, all rebuilt from the run records.

    results.csv            one row per run x epoch (config, metrics, every hyperparameter);
                           a run whose group failed: one row, status "failed", no metrics
    runs.csv/.json         one row per run: final metrics, test metrics, time to target
    summary.csv/.json      one row per configuration: means and 95% intervals over seeds
    comparisons.csv        pairs of configurations at one batch size, paired by seed
                           (tune: of the chosen configurations)
    tuning.csv             (tune) the chosen lr per optimizer and batch size
    batch_sizes.json       (several batch sizes) steps to target, critical batch, B_simple
    curves.png, weights_<optimizer>.png, profile.png, batch_sizes.png, lr_sensitivity.png
    report.html/.md        the table, answers built from its numbers, the figures
    meta.json              the command, the data, the versions
    (tasks.csv, failures.log, fingerprint.json and runs/ are written by stochopt.study.experiment
    and stochopt.study.folder)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FStar, RunRecord
from ..data import Split
from ..files import (
    Drawing,
    prepare_out,
    safe_name,
    save_figures,
    write_csv,
    write_json,
    write_npy,
)
from ..noise import noise_scales
from ..optim import Rule
from ..optimum import Optimum, cached_optimum, rates
from ..train import evaluate
from ..version import versions
from . import analysis
from .analysis import Targets

BASE_COLUMNS = ["run", "optimizer", "lr", "batch_size", "seed", "epoch", "steps", "grad_evals",
                "train_loss", "train_acc", "val_loss", "val_acc", "suboptimality",
                "noise_scale", "seconds", "status", "epoch_lr", "f_star_attained",
                "epoch_end", "elapsed", "batch_seconds"]
# lr: the run's base rate; epoch_lr: the schedule's rate that epoch; steps, grad_evals:
# cumulative update steps and per-example gradient evaluations (SVRG's full passes and
# SAGA's initial table included); noise_scale: B_simple at the epoch's weights (when
# measured); f_star_attained: true when suboptimality is f - f*, false when it is f - f_best
# (an upper bound, at wd 0), empty when no f* applies. A row is an evaluation point:
# epoch_end 1 for an epoch's end (train_loss/acc its mean over the epoch's steps, seconds the
# epoch's), 0 for a point inside an epoch (--eval-every, --eval-points: steps is its step,
# epoch fractional, no train metrics, seconds the epoch's so far); elapsed: the run's own
# seconds from its start to the point; batch_seconds: the wall time of the batch it trained
# in, whose runs' seconds sum to it
HISTORY_COLUMNS = ["epoch", "steps", "grad_evals", "train_loss", "train_acc", "val_loss",
                   "val_acc", "lr", "suboptimality", "noise_scale", "seconds", "epoch_end",
                   "elapsed", "batch_seconds"]
TUNING_COLUMNS = ["optimizer", "batch_size", "chosen_lr", "at_grid_edge", "grid_low",
                  "grid_high", "grid_points", "n_seeds", "config",
                  *analysis.METRIC_COLUMNS, "runs", "seconds"]
COMPARISON_COLUMNS = ["batch_size", "a", "b", "metric", "n", "mean_diff", "ci95_low",
                      "ci95_high", "p_value", "p_holm", "family_size", "verdict"]


def data_info(split: Split) -> dict[str, Any]:
    X = split.X_train
    return {"dataset": split.name, "n_train": len(X), "n_val": len(split.X_val),
            "n_test": len(split.X_test), "bias": split.source.get("bias", False),
            "device": str(X.device), "dtype": str(X.dtype).removeprefix("torch."),
            "image_shape": list(split.image_shape) if split.image_shape else None}


# --------------------------------------------------------------------------- tables


def hyper_columns(records: Sequence[RunRecord]) -> list[str]:
    """The runs' further settings, one results.csv column each: the schedule, then every
    hyperparameter any of their optimisers declares."""
    names: list[str] = []
    for r in records:
        names += [n for n in r.config.rule.hyperparameters() if n not in names]
    source = ["source"] if any(r.config.rule.plugin for r in records) else []
    return [*source, "schedule", "lr_decay", *names]


def results_rows(records: Sequence[RunRecord]) -> tuple[list[dict[str, Any]], list[str]]:
    """The tidy table: one row per run x epoch, and its columns (after the hyperparameters,
    what rules record per epoch, such as Prodigy's d)."""
    extra = hyper_columns(records)
    known = {*BASE_COLUMNS, *HISTORY_COLUMNS}
    recorded = list(dict.fromkeys(k for r in records for row in r.rows for k in row
                                  if k not in known))
    rows = []
    for record in records:
        c = record.config.resolved()
        values = {**c.hyper, "schedule": c.schedule, "lr_decay": c.lr_decay,
                  "source": c.rule.source}
        settings = {k: "" if values.get(k) is None else values[k] for k in extra}
        if record.status == "failed":  # its group raised: the run is listed, not measured
            rows.append({"run": record.run, "optimizer": c.optimizer, "lr": c.lr,
                         "batch_size": c.batch_size, "seed": c.seed, "status": "failed",
                         **settings})
            continue
        for row in record.timeline():
            diverged_here = (record.status == "diverged" and row["epoch_end"]
                             and row["epoch"] == record.diverged_epoch)
            # no f* applies, no noise scale measured: an empty cell, not nan
            row = {**row, **{k: "" for k in ("suboptimality", "noise_scale", "train_loss",
                                             "train_acc")
                             if not math.isfinite(row.get(k, math.nan))}}
            rows.append({**row, "run": record.run, "optimizer": c.optimizer, "lr": c.lr,
                         "epoch_lr": row["lr"], "batch_size": c.batch_size, "seed": c.seed,
                         "status": "diverged" if diverged_here else "ok",
                         "f_star_attained": "" if record.f_star is None
                         else str(record.f_star.attained).lower(), **settings,
                         **{k: row.get(k, "") for k in recorded}})
    return rows, BASE_COLUMNS + extra + recorded


def best(summary: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The configuration with the lowest mean final validation loss (none diverged)."""
    ok = [r for r in summary if math.isfinite(r["final_val_loss_mean"])]
    return min(ok, key=lambda r: r["final_val_loss_mean"]) if ok else None


# --------------------------------------------------------------------------- writing


@dataclass
class Findings:
    """The tables an experiment's files are written from (see :mod:`.analysis`)."""

    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    chosen: list[dict[str, Any]] = field(default_factory=list)
    batch_sizes: dict[str, Any] = field(default_factory=dict)
    noise0: float | None = None


def _finite(value: Any) -> float:
    return value if isinstance(value, float) and math.isfinite(value) else math.inf


def _blank(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV cells: NaN and None become empty."""
    return [{k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
             for k, v in r.items()} for r in rows]


def tuning_rows(chosen: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    rows, grids = [], {}
    for r in runs:  # each tuned optimizer's runs at each batch size
        grids.setdefault((analysis.tuned_label(r["config"]), r["batch_size"]), []).append(r)
    for c in chosen:
        b = c["best"] or {}
        mine = grids[(c["tuned"], c["batch_size"])]
        rows.append({"optimizer": c["tuned"], "batch_size": c["batch_size"],
                     "chosen_lr": b.get("lr"), "at_grid_edge": c["at_grid_edge"],
                     "grid_low": c["grid"][0], "grid_high": c["grid"][-1],
                     "grid_points": len(c["grid"]), "n_seeds": b.get("n_seeds"),
                     "config": b.get("config"),
                     **{k: b.get(k) for k in analysis.METRIC_COLUMNS},
                     # the runs trained side by side: their time is their batch's, not a sum
                     "runs": len(mine), "seconds": max(r["total_seconds"] for r in mine)})
    return rows


def write_all(out: str | Path, records: Sequence[RunRecord], title: str,
              split: Split | None = None, optima: dict[float, Optimum | None] | None = None,
              targets: Targets | None = None, tuned: bool = False,
              weight_images: int | None = None, data: dict[str, Any] | None = None
              ) -> Findings:
    """Every table, figure and the report, from the run records (``weight_images``: at
    most that many optimizers' weight images, the best by validation loss first):

    results.csv (run x epoch), runs.csv/json (run), summary.csv/json (configuration: means
    and 95% intervals over seeds), comparisons.csv (pairs at one batch size, paired by
    seed), with several batch sizes batch_sizes.json, with ``tuned`` tuning.csv; curves.png,
    weights_<optimizer>.png, profile.png, batch_sizes.png, lr_sensitivity.png; report.md and
    report.html (interactive, :mod:`.page`); meta.json. ``optima`` (by weight decay) adds
    the rates theory predicts for the full-batch runs; ``data``: the data's description
    (:func:`data_info`) when ``split`` is not given (``stochopt report`` rebuilds a folder
    from its runs and meta.json, without its data)."""
    from . import plots
    from .page import page_data, write_page
    from .report import (
        batch_size_accuracy,
        batch_size_sentences,
        compare_sentences,
        notes,
        target_sentences,
        tuning_sentences,
        write_report,
    )

    out, targets = Path(out), targets or Targets()
    data = data_info(split) if split is not None else (data or {})
    n_train = data.get("n_train") or 0
    rows, columns = results_rows(records)
    write_csv(out / "results.csv", rows, columns)
    failed = sum(r.status == "failed" for r in records)
    records = [r for r in records if r.status != "failed"]  # the rest is about what trained
    meta = {"command": title, "targets": asdict(targets),
            "data": data or None, "versions": versions()}
    if not records:
        write_json(out / "meta.json", meta)
        return Findings([], [], [])
    runs = analysis.runs_table(records, targets)
    summary = analysis.summarize(runs)
    chosen = analysis.choose_lrs(summary) if tuned else []
    # tune: pairs of the chosen configurations only (the answers are about them; a DeepOBS
    # grid would otherwise give millions of pairs of lrs no one asked about)
    picked = {c["best"]["config"] for c in chosen if c["best"] is not None}
    pairs = analysis.comparisons([r for r in runs if r["config"] in picked] if tuned
                                 else runs)
    found = Findings(runs, summary, pairs, chosen)
    write_csv(out / "runs.csv", _blank(runs), list(runs[0]) if runs else ["run"])
    write_json(out / "runs.json", runs)
    write_csv(out / "summary.csv", _blank(summary), list(summary[0]) if summary else ["config"])
    write_json(out / "summary.json", summary)
    write_csv(out / "comparisons.csv", _blank(pairs), COMPARISON_COLUMNS)

    sections: dict[str, str] = {}
    figures = ["curves.png"]
    drawings: list[Drawing] = []  # the figures, drawn together at the end
    n_test = data.get("n_test")
    # tune: the answers are about the chosen lrs; the whole grid stays in the tables
    if tuned:
        write_csv(out / "tuning.csv", _blank(tuning_rows(found.chosen, runs)), TUNING_COLUMNS)
        sections["After tuning"] = tuning_sentences(found.chosen, pairs, n_test)
        focus = [r for r in runs if r["config"] in picked]
        focus_summary = [r for r in summary if r["config"] in picked]
    else:
        focus, focus_summary = runs, summary
        if text := compare_sentences(summary, pairs, n_test):
            sections["How do the optimisers compare?"] = text
    sections["How long to the target?"] = target_sentences(focus_summary, targets.val_acc)
    sizes = {r.config.batch_size for r in records}
    if len(sizes) > 1:
        if split is not None:
            W0 = torch.zeros(1, split.n_features, split.n_classes, dtype=split.X_train.dtype,
                             device=split.X_train.device)
            found.noise0 = noise_scales(W0, split.X_train, split.y_train)[0].b_simple
        focus_records = [rec for rec, row in zip(records, runs, strict=True) if row in focus]
        found.batch_sizes = analysis.batch_size_fit(focus, focus_records, n_train)
        write_json(out / "batch_sizes.json", {"target_val_acc": targets.val_acc,
                                              "b_simple_at_zero": found.noise0,
                                              "solvers": found.batch_sizes})
        sections["What changes with the batch size?"] = (
            batch_size_accuracy(focus_summary) + " "
            + batch_size_sentences(found.batch_sizes, found.noise0))
        drawings.append(Drawing(out / "batch_sizes.png", partial(
            plots.batch_sizes, found.batch_sizes, found.noise0, focus_summary), 2))
        figures.append("batch_sizes.png")
    profile = None
    if focus and (len(sizes) > 1 or len({r.config.seed for r in records}) > 1):
        profile = {"taus": list(analysis.TAUS), "fractions": analysis.profile(focus)}
        drawings.append(Drawing(out / "profile.png", partial(
            plots.profile, profile["fractions"], analysis.TAUS, "steps")))
        figures.append("profile.png")
    many_lrs = len({(r["optimizer"], r["batch_size"], r["lr"]) for r in summary}) > len(
        {(r["optimizer"], r["batch_size"]) for r in summary})
    if many_lrs and not tuned and (top := best(summary)):
        sections["Which configuration is best?"] = (
            f"By mean final validation loss over its seeds, {top['config']} (batch "
            f"{top['batch_size']}): loss {top['final_val_loss_mean']:.4f}, accuracy "
            f"{top['final_val_acc_mean']:.2f}%.")
    if many_lrs:
        drawings.append(Drawing(out / "lr_sensitivity.png",
                                partial(plots.lr_sensitivity, summary, found.chosen)))
        figures.append("lr_sensitivity.png")

    shown = {r["config"] for r in focus}  # tune: the chosen configurations' curves
    drawn = [(rec, r["config"]) for rec, r in zip(records, runs, strict=True)
             if r["config"] in shown] or list(zip(records, [r["config"] for r in runs],
                                                  strict=True))
    reference, extra = full_batch_rates(records, split, optima or {})
    drawings.append(Drawing(out / "curves.png", partial(
        plots.curves, [d[0] for d in drawn], [d[1] for d in drawn], reference), 5))
    image = tuple(data["image_shape"]) if data.get("image_shape") else (
        (28, 28) if not data else None)  # no description: the exercise's MNIST
    drawn = list(dict.fromkeys(r.config.optimizer for r in records)) if image else []
    if weight_images is not None:  # a zoo of a hundred: the best few
        ranked = sorted(summary, key=lambda r: _finite(r.get("final_val_loss_mean")))
        drawn = list(dict.fromkeys(r["optimizer"] for r in ranked))[:weight_images]
    images: dict[str, np.ndarray] = {}
    for optimizer in drawn:
        # its best configuration's first seed (by mean final validation loss)
        top = best([r for r in summary if r["optimizer"] == optimizer])
        first = next((rec for rec, r in zip(records, runs, strict=True)
                      if top is not None and r["config"] == top["config"]),
                     next(r for r in records if r.config.optimizer == optimizer))
        images[optimizer] = first.load_weights(out)
        name = f"weights_{safe_name(optimizer)}.png"
        drawings.append(Drawing(out / name, partial(  # ten tiles and a bar: about 2 panels
            plots.weights, images[optimizer], f"{optimizer}: columns of W ({first.run})",
            image[0]), 2))
        figures.append(name)
    save_figures(drawings)
    if failed:
        extra["Failed runs"] = (f"{failed} run(s) failed: their group raised an error (the "
                                "command printed it; tasks.csv keeps it). They are listed in "
                                "results.csv with status 'failed', are left out of every "
                                "other table, and train when the command is run again.")
    sections = {**sections, **extra, **notes(runs)}
    write_report(out, summary, runs, figures, title, sections)
    write_page(out, page_data(records, runs, summary, pairs, title, sections,
                              found.batch_sizes, summary if many_lrs else (),
                              tuning_rows(found.chosen, runs) if tuned else (), images,
                              image, profile))
    write_json(out / "meta.json", meta)
    return found


def write_progress_page(out: str | Path, records: Sequence[RunRecord], title: str,
                        targets: Targets | None = None) -> None:
    """report.html from the runs finished so far (a running study rewrites it after its
    groups, so that a browser's refresh shows the progress); the rest waits for the end."""
    from .page import page_data, write_page

    records = [r for r in records if r.status != "failed"]
    if not records:
        return
    runs = analysis.runs_table(records, targets or Targets())
    summary = analysis.summarize(runs)
    write_page(Path(out), page_data(records, runs, summary, analysis.comparisons(runs),
                                    f"{title} (running: {len(records)} runs finished)", {}))


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
            f"(condition number {L / mu:.4g}). Near W*, on the quadratic model with this "
            f"curvature, gradient descent at its optimal step 2/(L+mu) contracts f - f* by "
            f"{rate['gd_rate'] ** 2:.6g} per step, heavy ball at Polyak's parameters by "
            f"{rate['heavy_ball_rate'] ** 2:.6g} (dashed): L is measured at W*, so these "
            f"rates are local, not guarantees from the start. Measured per step at full "
            f"batch: {measured}. The rates are worst cases set by the flattest direction "
            "(mu); early on, the steep directions dominate f - f* and fall much faster.")
    return lines, ({"How fast can full-batch methods go?": " ".join(sentences)}
                   if sentences else {})


def write_train(out: str | Path, record: RunRecord, split: Split, f_star: FStar | None
                ) -> None:
    """``stochopt train``'s files: history.csv, weights.npy, curves.png, summary.json and,
    when the features form a square image, weights.png and samples.png."""
    from . import plots

    out = Path(out)
    c = record.config
    recorded = [k for k in (record.rows[0] if record.rows else {}) if k not in HISTORY_COLUMNS]
    write_csv(out / "history.csv", _blank(record.timeline()), HISTORY_COLUMNS + recorded)
    write_npy(out / "weights.npy", record.weights.astype(np.float32))
    drawings = [Drawing(out / "curves.png", partial(plots.curves, [record], [c.optimizer]), 4)]
    if split.image_shape:
        side = split.image_shape[0]
        X, y = split.X_train[:32].cpu().numpy(), split.y_train[:32].cpu().numpy()
        drawings += [Drawing(out / "weights.png", partial(
                         plots.weights, record.weights, f"{c.optimizer}: columns of W", side)),
                     Drawing(out / "samples.png", partial(plots.samples, X, y, side=side))]
    save_figures(drawings)
    summary = {"config": asdict(c.resolved()), "status": record.status,
               "diverged_epoch": record.diverged_epoch, "test_loss": record.test_loss,
               "test_acc": record.test_acc, "final": record.rows[-1] if record.rows else {},
               "f_star": None if f_star is None else f_star.value,
               "f_star_attained": None if f_star is None else f_star.attained,
               "data": data_info(split), "versions": versions()}
    write_json(out / "summary.json", summary)


def write_optimum(split: Split, weight_decay: float, out: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Solve (or load) the optimum, evaluate W* on every part of the split, and write
    ``optimum.json`` and ``weights.npy`` to ``out`` when given; returns the summary."""
    Rule.weight_decay.check(weight_decay)  # the declared range of every rule's weight_decay
    folder = prepare_out(out) if out else None
    opt = cached_optimum(split, weight_decay, progress=progress)
    assert opt is not None
    W = opt.W.to(split.X_train.device, split.X_train.dtype).unsqueeze(0)
    result: dict[str, Any] = {
        "objective": opt.objective, "weight_decay": weight_decay,
        "bias": split.source.get("bias", False), "attained": opt.attained,
        "note": "" if opt.attained else "weight decay 0: no minimiser exists (MNIST is "
        "separable along a few pixels); objective is the best value found, an upper bound "
        "on the infimum, and f - f_best may go negative",
        "grad_norm": opt.grad_l2, "grad_max_abs": opt.grad_norm,
        "certified_gap": opt.certified_gap, "converged": opt.converged, "reason": opt.reason,
        "solver": opt.solver, "iterations": opt.iterations, "solve_seconds": opt.seconds,
        **opt.curvature, **rates(opt.curvature.get("L", math.nan),
                                 opt.curvature.get("mu", math.nan))}
    for part in ("train", "val", "test"):
        (loss,), (acc,) = evaluate(W, *split.part(part))
        result[f"{part}_loss"], result[f"{part}_acc"] = loss, acc
    if folder is not None:
        write_npy(folder / "weights.npy", opt.W.cpu().numpy())
        write_json(folder / "optimum.json", {**result, "versions": versions()})
    return result
