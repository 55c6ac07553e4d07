"""Figures: training curves side by side, the learned weight images, a grid of digits.

Every function returns a matplotlib Figure; :func:`stochopt.files.save_figure` writes it.
The figures are matplotlib's objects alone, without pyplot: no display, no global list of
open figures to close, and half the import time (pyplot's 0.6 s); matplotlib is imported
when the first figure is drawn, in the process that draws it
(:func:`stochopt.files.save_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported for the annotations alone: the drawing process has no torch
    from matplotlib.figure import Figure

    from ..config import RunRecord


def _subplots(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1,
              **kwargs: Any) -> tuple[Figure, Any]:
    """pyplot.subplots without pyplot: a Figure and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def fixed_margins(fig: Figure, left: float = 0.75, right: float = 0.2, bottom: float = 0.6,
                  top: float = 0.4, wgap: float = 0.75, hgap: float = 0.8) -> None:
    """Fixed margins and gaps between panels, in inches, enough for the tick labels, axis
    labels and titles these figures carry, so that saving draws the figure once: matplotlib's
    tight_layout measured every text first (0.25-0.5 s of the curves figure) and cropping on
    save (``bbox_inches="tight"``) drew it twice. :func:`stochopt.files.save_figure` saves a
    figure marked so as it is."""
    width, height = fig.get_size_inches()
    grid = fig.axes[0].get_subplotspec().get_gridspec()
    rows, cols = grid.get_geometry()
    panel_w = (width - left - right - (cols - 1) * wgap) / cols
    panel_h = (height - bottom - top - (rows - 1) * hgap) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wgap / panel_w, hspace=hgap / panel_h)
    fig.laid_out = True  # type: ignore[attr-defined]


PANELS = [("train_loss", "train loss"), ("train_acc", "train accuracy (%)"),
          ("val_loss", "validation loss"), ("val_acc", "validation accuracy (%)")]


def suboptimality_label(records: Sequence[RunRecord]) -> str:
    """What the suboptimality column measures for these runs (see FStar)."""
    kinds = {r.f_star.attained for r in records if r.f_star is not None}
    if kinds == {False}:
        return "f(W) - f_best (upper bound)"
    if kinds == {True, False}:
        return "f(W) - f* (f - f_best, an upper bound, at wd 0)"
    return "suboptimality f(W) - f*"


def _mean_band(runs: Sequence[RunRecord], key: str
               ) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Epochs and the mean, min and max of ``key`` over runs, at the epochs every run
    reached with a finite value (a diverged seed ends the band where it blew up)."""
    epochs = [r["epoch"] for r in runs[0].rows]
    values = {e: [] for e in epochs}
    for run in runs:
        for r in run.rows:
            if r["epoch"] in values and math.isfinite(r.get(key, math.nan)):
                values[r["epoch"]].append(r[key])
    kept = [e for e in epochs if len(values[e]) == len(runs)]
    v = np.array([values[e] for e in kept]).reshape(len(kept), len(runs))
    return kept, v.mean(axis=1), v.min(axis=1), v.max(axis=1)


def curves(histories: Sequence[RunRecord], labels: Sequence[str] | None = None,
           reference: Sequence[tuple[str, list[float], list[float]]] = ()) -> Figure:
    """2x2 panels (train loss, train accuracy, validation loss, validation accuracy) per
    epoch; runs that share a label (the seeds of one configuration) are one line, their
    mean, with a band from their min to their max. A fifth panel shows ``f(W) - f*`` when
    known: on a log axis, or a symmetric log axis when a value is not positive (``f -
    f_best`` below an upper bound), so that no point is dropped. ``reference`` lines
    (label, epochs, values) are drawn dashed on that panel. A diverged run ends in an x
    at its last finite point."""
    labels = labels or [h.config.optimizer for h in histories]
    groups: dict[str, list[RunRecord]] = {}
    for h, label in zip(histories, labels, strict=True):
        groups.setdefault(label, []).append(h)
    subs = [r["suboptimality"] for h in histories for r in h.rows
            if math.isfinite(r.get("suboptimality", math.nan))]
    has_sub = bool(subs)
    panels = [*PANELS, ("suboptimality", suboptimality_label(histories))] if has_sub \
        else PANELS
    ncols = 3 if has_sub else 2
    fig, axes = _subplots((5 * ncols, 7.5), 2, ncols, squeeze=False)
    flat = axes.T.flatten() if ncols == 2 else axes.flatten()
    order = [0, 1, 3, 4, 2] if has_sub else [0, 2, 1, 3]
    n_seeds = max(len(g) for g in groups.values())
    for (key, title), ax in zip(panels, [flat[i] for i in order], strict=False):
        for label, runs in groups.items():
            epochs, mean, low, high = _mean_band(runs, key)
            (line,) = ax.plot(epochs, mean, marker="o", ms=3, label=label)
            if len(runs) > 1:
                ax.fill_between(epochs, low, high, alpha=0.2, color=line.get_color(), lw=0)
            for h in runs:
                finite = [r for r in h.rows if math.isfinite(r.get(key, math.nan))]
                if h.status == "diverged" and finite:
                    ax.plot(finite[-1]["epoch"], finite[-1][key], "x", ms=10, mew=2,
                            color=line.get_color())
        ax.set_title(title + (f" (mean, band: min-max over {n_seeds} seeds)"
                              if n_seeds > 1 and key == "val_acc" else ""), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key == "suboptimality":
            for i, (label, epochs, values) in enumerate(reference):
                ax.plot(epochs, values, ("--", ":")[i % 2], lw=1.2, color="grey", label=label)
            if min(subs) > 0:
                ax.set_yscale("log")
            else:  # f - f_best went below the bound: keep those points in sight
                tiny = min((abs(v) for v in subs if v != 0), default=1e-8)
                ax.set_yscale("symlog", linthresh=tiny)
                ax.axhline(0, color="black", lw=0.8)
            if reference:
                ax.legend(fontsize=7)
    if has_sub:
        axes[1, 2].axis("off")
    flat[0].legend(fontsize=8)
    # no axis labels: tick labels alone, the widest the f - f* panel's (2 x 10^-1)
    fixed_margins(fig, left=0.6, wgap=0.95 if has_sub else 0.6)
    return fig


def _mosaic(tiles: np.ndarray, labels: Sequence[str], cols: int, width: float, cmap: str,
            vmin: float, vmax: float, fontsize: float, title: str = "",
            right: float = 0.1) -> Figure:
    """Square tiles on one image, labelled above: one imshow instead of an axes per tile,
    which makes the figure several times faster to lay out and save. Laid out in inches, as
    :func:`fixed_margins` lays out the panels, so that saving draws it once: the image
    fills its axes (its height follows from the width), with room above for the first
    row's labels and ``title``, and ``right`` inches beside it (a colour bar's)."""
    import matplotlib
    from matplotlib.figure import Figure

    side = tiles.shape[-1]
    gap = max(2, side // 5)
    rows, step = math.ceil(len(tiles) / cols), side + gap
    canvas = np.full((rows * step - gap, cols * step - gap), np.nan)  # NaN: the white gaps
    margin = 0.1  # left and below the image, above the title or labels
    inner = width - margin - right
    height = inner * canvas.shape[0] / canvas.shape[1]  # the image's, at its aspect
    unit = inner / canvas.shape[1]  # inches per pixel of the canvas
    label = (0.05 * side + 0.5) * unit + 1.3 * fontsize / 72  # a label's top above the image
    pad = label * 72 + 4  # the title's, in points, clear of the labels
    points = 12  # the title's size, matplotlib's default ("large")
    top = (pad + 1.3 * points) / 72 if title else label
    total = margin + height + top + margin
    fig = Figure(figsize=(width, total))
    ax = fig.add_axes((margin / width, margin / total, inner / width, height / total))
    colours = matplotlib.colormaps[cmap].with_extremes(bad="white")
    for i, (tile, text) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(i, cols)
        canvas[r * step:r * step + side, c * step:c * step + side] = tile
        ax.text(c * step + (side - 1) / 2, r * step - 0.05 * side, text, ha="center",
                va="bottom", fontsize=fontsize)
    ax.imshow(canvas, cmap=colours, vmin=vmin, vmax=vmax)
    ax.axis("off")
    if title:
        ax.set_title(title, pad=pad, fontsize=points)
    fig.laid_out = True  # type: ignore[attr-defined]
    return fig


def weights(W: np.ndarray, title: str = "", side: int = 28) -> Figure:
    """The ten columns of W (784 x 10, a bias row beyond 784 ignored) as 28x28 images,
    titled by their class, on one symmetric colour scale with its colour bar: red pixels
    are evidence for the class (a lit pixel raises its logit), blue against, white none.
    The scale ends at the 99th percentile of |W|: a few rarely lit border pixels carry the
    largest weights and would otherwise wash out the digits (beyond it, the end colours)."""
    images = W[:side * side].T.reshape(-1, side, side)
    scale = float(np.percentile(np.abs(images), 99)) or 1.0
    # the bar (0.2 in), 0.15 in from the image; its tick labels and label to its right
    fig = _mosaic(images, [str(c) for c in range(len(images))], 5, 10, "RdBu_r", -scale,
                  scale, 12, title, right=1.2)
    ax = fig.axes[0]
    box = ax.get_position()
    width = fig.get_figwidth()
    bar = fig.colorbar(ax.images[0], cax=fig.add_axes(
        (box.x1 + 0.15 / width, box.y0, 0.2 / width, box.height)), extend="both")
    bar.set_label("weight (red +: for the class, blue -: against)")
    return fig


def samples(X: np.ndarray, y: np.ndarray, n: int = 32, side: int = 28) -> Figure:
    """The first ``n`` rows of X as side x side images, each titled with its label."""
    n = min(n, len(X))
    images = X[:n, :side * side].reshape(-1, side, side)
    return _mosaic(images, [str(int(v)) for v in y[:n]], 8, 8.8, "gray_r", 0, 1, 9)


def _by(table: Sequence[dict], key: str) -> dict:
    groups: dict = {}
    for row in table:
        groups.setdefault(row[key], []).append(row)
    return groups


def batch_sizes(fit: dict[str, dict], noise0: float | None, summary: Sequence[dict]
                ) -> Figure:
    """Left: median steps to the accuracy target against the batch size, per solver, with
    McCandlish et al.'s fitted curve ``S = S_min / (1 - E_min / (B S))`` and B_crit, and the
    noise scale B_simple marked. Right: seconds per epoch against the batch size."""
    fig, (ax, ax2) = _subplots((12, 4.5), 1, 2)
    for solver, f in fit.items():
        pts = [p for p in f["points"] if p["steps"] is not None]
        (line,) = ax.plot([p["batch_size"] for p in pts], [p["steps"] for p in pts], "o",
                          label=solver)
        if f["b_crit"] is not None:
            # on the curve, examples E = B S: S_min / S + E_min / (B S) = 1
            b = np.geomspace(min(p["batch_size"] for p in f["points"]) / 2,
                             max(p["batch_size"] for p in f["points"]) * 2, 100)
            ax.plot(b, f["s_min"] + f["e_min"] / b, "-", color=line.get_color(), lw=1,
                    label=f"{solver}: fit, B_crit = {f['b_crit']:,.0f}")
            ax.axvline(f["b_crit"], color=line.get_color(), ls=":", lw=1)
        ends = [p["noise_scale_end"] for p in f["points"] if math.isfinite(p["noise_scale_end"])]
        if ends:
            ax.axvline(float(np.median(ends)), color=line.get_color(), ls="--", lw=1,
                       label=f"{solver}: B_simple at the end, {np.median(ends):,.0f}")
    if noise0 is not None:
        ax.axvline(noise0, color="grey", ls="--", lw=1, label=f"B_simple at W = 0, {noise0:,.1f}")
    if any(p["steps"] is not None for f in fit.values() for p in f["points"]):
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no batch size reached the target", transform=ax.transAxes,
                ha="center")
    ax.set(xscale="log", xlabel="batch size", ylabel="steps to target (median)",
           title="steps to the accuracy target")
    ax.legend(fontsize=7)
    for optimizer, rows in _by(summary, "optimizer").items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        ax2.plot([r["batch_size"] for r in rows], [r["seconds_per_epoch"] for r in rows],
                 marker="o", label=optimizer)
    ax2.set(xscale="log", yscale="log", xlabel="batch size", ylabel="seconds per epoch",
            title="cost of an epoch")
    ax2.legend(fontsize=8)
    sizes = sorted({p["batch_size"] for f in fit.values() for p in f["points"]})
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
        a.set_xticks(sizes, [str(b) for b in sizes])  # the batch sizes run, not powers of 10
        a.minorticks_off()
    fixed_margins(fig)
    return fig


def lr_sensitivity(summary: Sequence[dict], chosen: Sequence[dict] = ()) -> Figure:
    """DeepOBS-style: final validation loss against the learning rate, the mean over seeds
    with its 95% interval as a band; a configuration with a diverged seed is an x on the top
    edge, and each chosen lr a star."""
    fig, ax = _subplots((7, 4.5))
    picked = {c["best"]["config"] for c in chosen if c["best"] is not None}
    finite = [r["final_val_loss_mean"] for r in summary
              if math.isfinite(r["final_val_loss_mean"])]
    top = max(finite) * 1.1 if finite else 1.0
    keyed = [{**r, "_key": (r["optimizer"], r["batch_size"])} for r in summary]
    for (optimizer, size), rows in _by(keyed, "_key").items():
        rows = sorted(rows, key=lambda r: r["lr"])
        ok = [r for r in rows if math.isfinite(r["final_val_loss_mean"])]
        label = optimizer if len({r["batch_size"] for r in summary}) == 1 \
            else f"{optimizer} bs={size}"
        (line,) = ax.plot([r["lr"] for r in ok], [r["final_val_loss_mean"] for r in ok],
                          marker="o", ms=3, label=label)
        ax.fill_between([r["lr"] for r in ok], [r["final_val_loss_ci95_low"] for r in ok],
                        [r["final_val_loss_ci95_high"] for r in ok], alpha=0.2, lw=0,
                        color=line.get_color())
        bad = [r["lr"] for r in rows if not math.isfinite(r["final_val_loss_mean"])]
        ax.plot(bad, [top] * len(bad), "x", ms=8, mew=2, color=line.get_color())
        for r in ok:
            if r["config"] in picked:
                ax.plot(r["lr"], r["final_val_loss_mean"], "*", ms=16, mec="black",
                        color=line.get_color())
    ax.set(xscale="log", xlabel="learning rate", ylabel="final validation loss (mean)",
           title="lr sensitivity (band: 95% CI over seeds; x: diverged; *: chosen)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fixed_margins(fig)
    return fig


def profile(fractions: dict[str, list[float]], taus: Sequence[float], unit: str) -> Figure:
    """An AlgoPerf-style performance profile: for each solver, the fraction of problems
    solved within tau times the best solver's cost."""
    fig, ax = _subplots((6.5, 4.5))
    for solver, f in fractions.items():
        ax.step(taus, f, where="post", label=solver)
    ax.set(xlabel=f"tau (x the fewest {unit} to the target on the problem)",
           ylabel="fraction of problems", ylim=(-0.02, 1.02),
           title="performance profile (problems: batch size x seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fixed_margins(fig)
    return fig
