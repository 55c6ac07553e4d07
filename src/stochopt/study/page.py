"""The results page, ``report.html``: interactive, self-contained, built from the run's tables.

It opens from ``file://`` with no network: Plotly's JavaScript is written once beside it
(``plotly.min.js``, from the ``plotly`` package), the data inline as JSON. A reader chooses
the metric and the x-axis of the curves, log or linear axes, the band (the 95% t-interval
over seeds at each point, or min-max), hides a configuration by its legend entry (double
click isolates it), filters configurations and table rows by text, and sorts every table by
any column. Stable hooks for scripts and tests: ``select#metric``, ``select#x-axis``,
``select#band``, ``input#filter``, ``input#log-y``, each figure a
``div.plot[data-figure=NAME]``, each table a ``table[data-table=NAME]``.

Curves are drawn as means and bands per configuration, never per seed, and at most
:data:`SHOWN` configurations at first (the best by final validation loss; the filter
reaches the others), so a study of a thousand configurations opens in a second or two.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunRecord
from ..files import atomic_write, write_text
from .stats import t_quantile

SHOWN = 40  # configurations drawn at first; the filter shows any others
METRICS = {"val_acc": "validation accuracy (%)", "val_loss": "validation loss",
           "train_acc": "train accuracy (%)", "train_loss": "train loss",
           "suboptimality": "f - f*", "noise_scale": "noise scale B_simple",
           "lr": "learning rate"}
AXES = {"epoch": "epoch", "steps": "steps", "grad_evals": "gradient evaluations",
        "elapsed": "seconds (the run's own cost)"}
LOG_METRICS = ("suboptimality", "noise_scale")  # drawn on a log axis by default
DIAGNOSTICS = ("d_estimate", "step_size", "line_search_gave_up")  # rules' own columns


def _round(x: float) -> float | None:
    """A JSON number with 6 significant digits (None for NaN and infinities): what
    :func:`write_page` makes of every number of the page's data."""
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def curves(records: Sequence[RunRecord], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per configuration, at each evaluated step its seeds share: the x values (epoch,
    steps, gradient evaluations, elapsed seconds: the mean over seeds) and, per metric,
    the mean, the 95% t-interval and the min-max over the seeds."""
    by_config: dict[str, list[RunRecord]] = {}
    for record, label in zip(records, labels, strict=True):
        if record.status != "failed":
            by_config.setdefault(label, []).append(record)
    found = []
    for label, runs in by_config.items():
        points: dict[float, list[dict[str, Any]]] = {}
        for r in runs:
            for row in r.timeline():
                points.setdefault(row["steps"], []).append({**row, "lr": row["lr"]})
        steps = sorted(s for s, rows in points.items() if len(rows) == len(runs))
        metrics = [m for m in (*METRICS, *DIAGNOSTICS)
                   if any(math.isfinite(row.get(m, math.nan)) for s in steps
                          for row in points[s])]
        series: dict[str, Any] = {a: [float(np.mean([row[a] for row in points[s]]))
                                      for s in steps] for a in AXES}
        for m in metrics:
            stats: dict[str, list[float | None]] = {k: [] for k in ("mean", "low", "high",
                                                                    "min", "max")}
            for s in steps:
                v = np.array([row.get(m, math.nan) for row in points[s]], dtype=float)
                v = v[np.isfinite(v)]
                if len(v) == 0:
                    for k in stats:
                        stats[k].append(None)
                    continue
                mean = float(v.mean())
                half = (t_quantile(0.975, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
                        if len(v) > 1 else 0.0)
                for k, x in (("mean", mean), ("low", mean - half), ("high", mean + half),
                             ("min", float(v.min())), ("max", float(v.max()))):
                    stats[k].append(x)
            series[m] = stats
        last = runs[0].rows[-1] if runs[0].rows else {}
        found.append({"name": label, "optimizer": runs[0].config.optimizer,
                      "batch_size": runs[0].config.batch_size, "seeds": len(runs),
                      "final_val_loss": _round(float(np.mean([r.rows[-1]["val_loss"]
                                                               for r in runs if r.rows])))
                      if last else None, "series": series})
    # the best first: the first SHOWN are drawn at open
    found.sort(key=lambda c: math.inf if c["final_val_loss"] is None else c["final_val_loss"])
    return found


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]
           ) -> dict[str, Any]:
    def value(v: Any) -> Any:  # numbers as they are (write_page rounds them), else text
        return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return {"columns": [c for c, _ in columns], "headers": [h for _, h in columns],
            "rows": [[value(r.get(c)) for c, _ in columns] for r in rows]}


SUMMARY = [("config", "configuration"), ("batch_size", "batch"), ("n_seeds", "seeds"),
           ("n_diverged", "diverged"), ("final_val_acc_mean", "val acc %"),
           ("final_val_acc_ci95_low", "95% CI low"), ("final_val_acc_ci95_high", "95% CI high"),
           ("final_val_loss_mean", "val loss"), ("test_acc_mean", "test acc %"),
           ("suboptimality_median", "f - f*"), ("median_steps_to_target", "steps to target"),
           ("seconds_per_epoch", "own s/epoch")]
COMPARISONS = [("batch_size", "batch"), ("metric", "metric"), ("a", "a"), ("b", "b"),
               ("n", "seeds"), ("mean_diff", "a - b"), ("ci95_low", "95% CI low"),
               ("ci95_high", "95% CI high"), ("p_value", "p"), ("p_holm", "p (Holm)"),
               ("verdict", "verdict")]
TUNING = [("optimizer", "optimizer"), ("batch_size", "batch"), ("chosen_lr", "chosen lr"),
          ("at_grid_edge", "at the grid's edge"), ("config", "configuration")]


PAIRS = 1000  # comparisons shown on the page (comparisons.csv has them all)


def _strongest(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most :data:`PAIRS` comparisons, the most significant (Holm) first when cut."""
    if len(pairs) <= PAIRS:
        return list(pairs)
    def key(c: dict[str, Any]) -> float:
        p = c.get("p_holm", math.nan)
        return p if isinstance(p, float) and math.isfinite(p) else math.inf
    return sorted(pairs, key=key)[:PAIRS]


def page_data(records: Sequence[RunRecord], runs: Sequence[dict[str, Any]],
              summary: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]],
              title: str, sections: dict[str, str], batch_sizes: dict[str, Any] | None = None,
              lr_rows: Sequence[dict[str, Any]] = (), tuning: Sequence[dict[str, Any]] = (),
              weights: dict[str, np.ndarray] | None = None, image: tuple[int, int] | None = None,
              profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data."""
    attained = {r.get("f_star_attained") for r in runs} - {None}
    data: dict[str, Any] = {
        "title": title, "sections": sections, "shown": SHOWN, "metrics": METRICS,
        "axes": AXES, "log_metrics": list(LOG_METRICS),
        "upper_bound": attained == {False},  # f - f_best: it may go negative
        "curves": curves(records, [r["config"] for r in runs]),
        "tables": {"summary": _table(summary, SUMMARY),
                   "comparisons": _table(_strongest(comparisons), COMPARISONS)},
        "comparisons_total": len(comparisons)}
    if tuning:
        data["tables"]["tuning"] = _table(tuning, TUNING)
    if batch_sizes:
        data["batch_sizes"] = batch_sizes
    if lr_rows:
        data["lr"] = [{"config": r["config"], "optimizer": r["optimizer"],
                       "batch_size": r["batch_size"], "lr": r["lr"],
                       "loss": r["final_val_loss_mean"],
                       "low": r.get("final_val_loss_ci95_low", math.nan),
                       "high": r.get("final_val_loss_ci95_high", math.nan)}
                      for r in lr_rows]
    if profile:
        data["profile"] = profile
    if weights and image:
        scale = max(float(np.abs(w).max()) for w in weights.values()) or 1.0
        # in hundredths of the largest |w| of all: a colour scale shows no more, and the
        # main job's page (three optimisers' 7,840 weights) stays small
        data["weights"] = {"scale": scale, "side": list(image), "images": {
            name: [np.rint(99 * w[:, c] / scale).astype(int).tolist()
                   for c in range(w.shape[1])] for name, w in weights.items()}}
    return data


def _clean(obj: Any) -> Any:
    """JSON for a browser: NaN and infinities as null, NumPy numbers as Python's."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _round(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plotly_js() -> Path:
    """Plotly's JavaScript as the ``plotly`` package ships it."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def write_page(out: Path, data: dict[str, Any]) -> None:
    """``report.html`` and, once, ``plotly.min.js`` beside it."""
    js = out / "plotly.min.js"
    source = plotly_js()
    if not js.is_file() or js.stat().st_size != source.stat().st_size:
        atomic_write(js, lambda f: shutil.copyfileobj(source.open("rb"), f), binary=True)
    payload = json.dumps(_clean(data), separators=(",", ":"), allow_nan=False
                         ).replace("</", "<\\/")
    write_text(out / "report.html", TEMPLATE.replace("__TITLE__", html.escape(data["title"]))
               .replace("__DATA__", payload))


TEMPLATE = (Path(__file__).parent / "page.html").read_text() if (
    Path(__file__).parent / "page.html").is_file() else ""
