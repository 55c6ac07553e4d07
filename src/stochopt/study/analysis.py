"""From run records to the tables that answer the exercise's questions.

    runs     = runs_table(records, targets)  one row per run: final metrics, time to target
    summary  = summarize(runs)               one row per configuration: means and intervals
    pairs    = comparisons(runs)             a - b paired by seed, with a verdict
    tuned    = choose_lrs(summary)           per optimiser and batch size: the best lr
    sizes    = batch_size_fit(runs)          steps to target per batch size, McCandlish fit

A *configuration* is a run without its seed; its ``config`` label names the optimizer and
only those settings that tell it apart from the other configurations of that optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..config import Config, RunRecord
from .stats import (
    first_reach,
    holm,
    interval,
    mccandlish_fit,
    p_value,
    paired,
    performance_profile,
    verdict,
)

METRICS = ("final_val_acc", "final_val_loss", "test_acc")
METRIC_COLUMNS = [f"{m}_{s}" for m in METRICS for s in ("mean", "sd", "ci95_low", "ci95_high")]
LOWER_IS_BETTER = {"final_val_acc": False, "final_val_loss": True, "test_acc": False}
TAUS = [1 + 0.05 * i for i in range(61)]  # the performance profile's tau, 1 to 4


@dataclass(frozen=True)
class Targets:
    """What "reached" means: a validation accuracy (percent), and, where f* is attained,
    a suboptimality f - f*."""

    val_acc: float = 92.0
    subopt: float = 1e-2


# --------------------------------------------------------------------------- labels


def _settings(c: Config) -> dict[str, Any]:
    r = c.resolved()
    flat = {k: v for k, v in asdict(r).items() if k not in ("optimizer", "seed", "hyper")}
    return {**flat, **r.hyper}


SHORT = {"batch_size": "bs", "lr_decay": "decay", "weight_decay": "wd"}


def config_labels(configs: Sequence[Config]) -> list[str]:
    """A readable label per configuration (the seed aside), unique among them: the optimizer,
    then each setting that differs between that optimizer's configurations."""
    by_optimizer: dict[str, list[dict[str, Any]]] = {}
    for c in configs:
        by_optimizer.setdefault(c.optimizer, []).append(_settings(c))
    varying = {o: [k for k in s[0] if len({repr(x.get(k)) for x in s}) > 1]
               for o, s in by_optimizer.items()}
    labels = []
    for c in configs:
        s = _settings(c)
        parts = [f"{SHORT.get(k, k)}={s[k]:g}" if isinstance(s[k], float)
                 else f"{SHORT.get(k, k)}={s[k]}" for k in varying[c.optimizer]]
        labels.append(" ".join([c.optimizer, *parts]))
    return labels


# --------------------------------------------------------------------------- per run


def _to_target(rows: list[dict[str, Any]], key: str, target: float, above: bool
               ) -> dict[str, Any]:
    """The first evaluation point (:meth:`RunRecord.timeline`: epoch ends and the points
    inside epochs, in step order) at which ``key`` reaches ``target``."""
    hit = first_reach(rows, key, target, above)
    if hit is None:
        return {"epoch": None, "steps": None, "grad_evals": None, "seconds": None}
    return {"epoch": hit["epoch"], "steps": hit.get("steps"),
            "grad_evals": hit.get("grad_evals"), "seconds": hit["elapsed"]}


def runs_table(records: Sequence[RunRecord], targets: Targets = Targets()
               ) -> list[dict[str, Any]]:
    """One row per run: final and best-epoch validation metrics, test metrics, time, and
    the first epoch/step/gradient evaluation/second at which each target is reached (None
    when never)."""
    labels = config_labels([r.config for r in records])
    table = []
    for r, label in zip(records, labels, strict=True):
        hist, c = r.rows, r.config
        finite = [h for h in hist if math.isfinite(h["val_loss"])]
        best = min(finite, key=lambda h: h["val_loss"]) if finite else None
        ok = r.status == "ok"
        last = hist[-1] if hist else {}
        timeline = r.timeline()
        acc = _to_target(timeline, "val_acc", targets.val_acc, above=True)
        attained = r.f_star is not None and r.f_star.attained
        sub = _to_target(timeline if attained else [], "suboptimality", targets.subopt,
                         above=False)
        table.append({
            "run": r.run, "config": label, "optimizer": c.optimizer, "lr": c.base_lr,
            "batch_size": c.batch_size, "seed": c.seed, "status": r.status,
            # a diverged run has no final metrics: its last numbers are those of a blow-up
            "final_val_loss": last.get("val_loss", math.nan) if ok else math.nan,
            "final_val_acc": last.get("val_acc", math.nan) if ok else math.nan,
            "best_epoch": best["epoch"] if best else None,
            "test_acc": r.test_acc, "test_loss": r.test_loss,
            "suboptimality": last.get("suboptimality", math.nan),
            "f_star_attained": None if r.f_star is None else r.f_star.attained,
            "weight_decay": c.weight_decay,
            "decoupled_decay": c.decoupled_decay and c.weight_decay != 0,
            "noise_scale": last.get("noise_scale", math.nan),
            "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(1, len(hist)),
            # the wall time of the batch it trained in (its runs' seconds sum to it)
            "batch_seconds_per_epoch": sum(h.get("batch_seconds", h["seconds"]) for h in hist)
            / max(1, len(hist)),
            "total_seconds": sum(h["seconds"] for h in hist),
            **{f"{k}_to_target": v for k, v in acc.items()},
            **{f"{k}_to_subopt": v for k, v in sub.items()},
        })
    return table


# --------------------------------------------------------------------------- per config


def _groups(runs: Sequence[dict[str, Any]], key: str = "config") -> dict[Any, list[dict]]:
    groups: dict[Any, list[dict]] = {}
    for row in runs:
        groups.setdefault(row[key], []).append(row)
    return groups


def _median(values: list[float | None]) -> float | None:
    """The median over seeds, a seed that never reached the target counting as infinite;
    None when that median is infinite (most seeds did not reach it) or a value is NaN. By
    sorting: numpy's median to the bit (the middle value, or the two middle ones' sum
    halved), about 20x quicker on a handful of values, which the bootstrap's thousands of
    draws add up."""
    s = sorted(math.inf if v is None else float(v) for v in values)
    if not s or any(math.isnan(x) for x in s):
        return None
    n = len(s)
    x = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return x if math.isfinite(x) else None


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: for each of :data:`METRICS` the mean, sample sd and
    Student-t 95% interval over its seeds (empty where a seed diverged), the fraction of
    seeds that reach each target and the median time to it."""
    table = []
    for label, rows in _groups(runs).items():
        r0 = rows[0]
        row: dict[str, Any] = {
            "config": label, "optimizer": r0["optimizer"], "lr": r0["lr"],
            "batch_size": r0["batch_size"], "weight_decay": r0["weight_decay"],
            "n_seeds": len(rows), "n_diverged": sum(r["status"] != "ok" for r in rows)}
        for metric in METRICS:
            iv = interval(r[metric] for r in rows)
            row.update({f"{metric}_mean": iv.mean, f"{metric}_sd": iv.sd,
                        f"{metric}_ci95_low": iv.low, f"{metric}_ci95_high": iv.high})
        row["suboptimality_median"] = float(np.median([r["suboptimality"] for r in rows]))
        for what in ("target", "subopt"):
            row[f"reached_{what}"] = sum(r[f"epoch_to_{what}"] is not None
                                         for r in rows) / len(rows)
            for unit in ("epoch", "steps", "grad_evals", "seconds"):
                row[f"median_{unit}_to_{what}"] = _median([r[f"{unit}_to_{what}"]
                                                           for r in rows])
        row["noise_scale_median"] = float(np.median([r["noise_scale"] for r in rows]))
        row["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in rows]))
        row["batch_seconds_per_epoch"] = float(np.mean([r["batch_seconds_per_epoch"]
                                                        for r in rows]))
        table.append(row)
    return table


def comparisons(runs: Sequence[dict[str, Any]],
                metrics: Sequence[str] = ("final_val_acc", "final_val_loss")
                ) -> list[dict[str, Any]]:
    """A row per pair of configurations at the same batch size and per metric: ``a - b``
    over the seeds both finished, its paired t interval (unadjusted), the paired t-test's
    ``p_value``, ``p_holm`` (Holm-Bonferroni over the family a table or sentence compares:
    every pair at that batch size, for that metric) and the verdict, at 5% on ``p_holm``.
    ``family_size``: the number of pairs with a test in that family."""
    table = []
    configs = _groups(runs)
    labels = list(configs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            size = configs[a][0]["batch_size"]
            if configs[b][0]["batch_size"] != size:
                continue
            for metric in metrics:
                values = [{r["seed"]: r[metric] for r in configs[x]} for x in (a, b)]
                diff = paired(*values)
                table.append({"batch_size": size, "a": a, "b": b, "metric": metric,
                              "n": diff.n, "mean_diff": diff.mean, "ci95_low": diff.low,
                              "ci95_high": diff.high, "p_value": p_value(diff),
                              "_diff": diff})
    families: dict[tuple, list[dict[str, Any]]] = {}
    for row in table:
        families.setdefault((row["batch_size"], row["metric"]), []).append(row)
    for rows in families.values():
        adjusted = holm([r["p_value"] for r in rows])
        tested = sum(math.isfinite(p) for p in adjusted)
        for row, p in zip(rows, adjusted, strict=True):
            diff = row.pop("_diff")
            row.update(p_holm=p, family_size=tested,
                       verdict=verdict(diff, LOWER_IS_BETTER[row["metric"]],
                                       p if math.isfinite(p) else None))
    return table


# --------------------------------------------------------------------------- tuning


def _without(label: str, key: str) -> str:
    return " ".join(p for p in label.split() if not p.startswith(f"{key}="))


def tuned_label(label: str) -> str:
    """What a tuning chooses an lr for: the configuration without its lr and batch size."""
    return _without(_without(label, "lr"), "bs")


def choose_lrs(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each optimizer (with its other settings) and batch size: the lr of lowest mean
    final validation loss over the seeds. A configuration with a diverged seed has no mean
    and is never chosen. ``at_grid_edge`` flags a choice at the smallest or largest lr
    tried: the best lr may lie beyond the grid."""
    groups: dict[tuple, list[dict]] = {}
    for row in summary:
        key = (tuned_label(row["config"]), row["batch_size"])
        groups.setdefault(key, []).append(row)
    chosen = []
    for (label, size), rows in groups.items():
        ok = [r for r in rows if math.isfinite(r["final_val_loss_mean"])]
        lrs = sorted(r["lr"] for r in rows)
        best = min(ok, key=lambda r: r["final_val_loss_mean"]) if ok else None
        chosen.append({"tuned": label, "batch_size": size, "best": best, "grid": lrs,
                       "at_grid_edge": best is not None and best["lr"] in (lrs[0], lrs[-1])})
    return chosen


# --------------------------------------------------------------------------- batch sizes


def solver_key(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """config label -> the solver it is in a performance profile over batch sizes x seeds:
    the label without the batch size, and without the lr when each batch size has one lr
    per solver (the linear scaling rule, or a tuned lr)."""
    configs = {r["config"]: r for r in runs}
    key = {c: _without(c, "bs") for c in configs}
    no_lr = {c: _without(k, "lr") for c, k in key.items()}
    seen = {(no_lr[c], r["batch_size"]) for c, r in configs.items()}
    if len(seen) == len(configs):
        key = no_lr
    return key


def profile(runs: Sequence[dict[str, Any]], unit: str = "steps", taus: Sequence[float] = TAUS
            ) -> dict[str, list[float]]:
    """The performance profile over problems (batch size, seed): the fraction a solver
    reaches the accuracy target within tau times the fewest ``unit`` any solver needed."""
    key = solver_key(runs)
    costs: dict[str, dict[tuple, float]] = {}
    for r in runs:
        cost = r[f"{unit}_to_target"]
        costs.setdefault(key[r["config"]], {})[(r["batch_size"], r["seed"])] = (
            math.inf if cost is None else float(cost))
    return performance_profile(costs, taus)


def steps_to(record: RunRecord, target: float) -> float | None:
    """The step of the first evaluation point (epoch ends and points inside epochs) whose
    validation accuracy reaches ``target``; None when none does."""
    hit = first_reach(record.timeline(), "val_acc", target)
    return None if hit is None else float(hit["steps"])


def common_target(records: Sequence[RunRecord]) -> float | None:
    """The highest validation accuracy, in tenths of a point, that the median seed reaches
    at every batch size of ``records`` (one solver's): a target every batch size reaches,
    so that each gives a point to fit."""
    best_by_size: dict[int, list[float]] = {}
    for r in records:
        accs = [x["val_acc"] for x in r.timeline() if math.isfinite(x["val_acc"])]
        best_by_size.setdefault(r.config.batch_size, []).append(max(accs, default=-math.inf))
    lowest = min(float(np.median(v)) for v in best_by_size.values())
    return math.floor(lowest * 10) / 10 if math.isfinite(lowest) else None


def _fit(steps: dict[int, float | None]) -> tuple[float, float]:
    """S_min, E_min through the batch sizes whose median reached (E = B S)."""
    ok = [(b, s) for b, s in steps.items() if s is not None]
    return mccandlish_fit([s for _, s in ok], [b * s for b, s in ok])


def bootstrap_fit(steps: dict[int, list[float | None]], resamples: int = 2000,
                  level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of S_min, E_min and B_crit = E_min / S_min over the
    seeds: each resample draws, at every batch size independently, as many runs as it has
    with replacement, takes each size's median steps to target and fits. A resample the fit
    is not valid for (fewer than two sizes reached, S_min or E_min not positive) counts as
    infinite, so the interval says when the answer is fragile."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[float]] = {"s_min": [], "e_min": [], "b_crit": []}
    # each size's median is one of its few runs' values (or the mean of two), so the
    # resamples repeat a few hundred sets of medians at most: each is fitted once
    fits: dict[tuple[float | None, ...], tuple[float, float]] = {}
    for _ in range(resamples):
        medians = {b: _median([v[i] for i in rng.integers(0, len(v), len(v))])
                   for b, v in steps.items()}
        key = tuple(medians.values())
        if key not in fits:
            fits[key] = _fit(medians)
        s_min, e_min = fits[key]
        valid = math.isfinite(s_min) and s_min > 0 and e_min > 0
        drawn["s_min"].append(s_min if valid else math.inf)
        drawn["e_min"].append(e_min if valid else math.inf)
        drawn["b_crit"].append(e_min / s_min if valid else math.inf)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: (float(np.percentile(v, q[0])), float(np.percentile(v, q[1])))
            for k, v in drawn.items()}


def batch_size_fit(runs: Sequence[dict[str, Any]], records: Sequence[RunRecord],
                   n_train: int, resamples: int = 2000) -> dict[str, dict[str, Any]]:
    """Per solver run at two or more batch sizes: McCandlish et al.'s fit (``S_min`` steps,
    ``E_min`` examples, ``B_crit = E_min / S_min``) through the median steps to a target
    every batch size reaches (:func:`common_target`), read at the runs' evaluation points,
    each with a 95% bootstrap interval over the seeds; the median steps to the study's own
    accuracy target at each size (``fixed_steps``); B_simple at the end and along the run
    (the median over seeds at each evaluated step, where measured). ``runs`` is
    :func:`runs_table` of ``records``."""
    key = solver_key(runs)
    out: dict[str, dict[str, Any]] = {}
    by_solver: dict[str, list[tuple[dict[str, Any], RunRecord]]] = {}
    for row, record in zip(runs, records, strict=True):
        by_solver.setdefault(key[row["config"]], []).append((row, record))
    for solver, pairs in by_solver.items():
        sizes = sorted({r["batch_size"] for r, _ in pairs})
        if len(sizes) < 2:
            continue
        target = common_target([rec for _, rec in pairs])
        steps = {b: [None if target is None else steps_to(rec, target)
                     for r, rec in pairs if r["batch_size"] == b] for b in sizes}
        points = []
        for b in sizes:
            at = [(r, rec) for r, rec in pairs if r["batch_size"] == b]
            median = _median(steps[b])
            along: dict[float, list[float]] = {}
            for _, rec in at:
                for x in rec.timeline():
                    if math.isfinite(x.get("noise_scale", math.nan)):
                        along.setdefault(x["steps"], []).append(x["noise_scale"])
            points.append({
                "batch_size": b, "n_seeds": len(at),
                "reached": sum(v is not None for v in steps[b]), "steps": median,
                "examples": None if median is None else median * b,
                "epochs": None if median is None or not n_train else median * b / n_train,
                "fixed_steps": _median([r["steps_to_target"] for r, _ in at]),
                "noise_scale_end": float(np.median([r["noise_scale"] for r, _ in at])),
                "noise_scale_along": [[t, float(np.median(v))] for t, v in sorted(along.items())
                                      if len(v) == len(at)]})
        s_min, e_min = _fit({p["batch_size"]: p["steps"] for p in points})
        valid = math.isfinite(s_min) and s_min > 0 and e_min > 0
        ci = bootstrap_fit(steps, resamples) if valid else {}
        out[solver] = {"target": target, "points": points,
                       "s_min": s_min if valid else None, "e_min": e_min if valid else None,
                       "e_min_epochs": e_min / n_train if valid and n_train else None,
                       "b_crit": e_min / s_min if valid else None,
                       **{f"{k}_ci95": list(v) for k, v in ci.items()},
                       "n_points": sum(p["steps"] is not None for p in points)}
    return out
