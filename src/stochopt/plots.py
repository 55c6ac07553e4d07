"""Figures: training curves side by side, the learned weight images, a grid of digits.

Every function returns a matplotlib Figure; :func:`stochopt.files.save_figure` writes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .config import RunRecord

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


def curves(histories: Sequence[RunRecord], labels: Sequence[str] | None = None,
           reference: Sequence[tuple[str, list[float], list[float]]] = ()) -> Figure:
    """2x2 panels (train loss, train accuracy, validation loss, validation accuracy) per
    epoch, one line per run; a fifth panel with ``f(W) - f*`` when known: on a log axis,
    or a symmetric log axis when a value is not positive (``f - f_best`` below an upper
    bound), so that no point is dropped. ``reference`` lines (label, epochs, values) are
    drawn dashed on that panel. A diverged run ends in an x at its last finite point."""
    labels = labels or [h.config.optimizer for h in histories]
    subs = [r["suboptimality"] for h in histories for r in h.rows
            if math.isfinite(r.get("suboptimality", math.nan))]
    has_sub = bool(subs)
    panels = [*PANELS, ("suboptimality", suboptimality_label(histories))] if has_sub \
        else PANELS
    ncols = 3 if has_sub else 2
    fig, axes = plt.subplots(2, ncols, figsize=(5 * ncols, 7.5), squeeze=False)
    flat = axes.T.flatten() if ncols == 2 else axes.flatten()
    order = [0, 1, 3, 4, 2] if has_sub else [0, 2, 1, 3]
    for (key, title), ax in zip(panels, [flat[i] for i in order], strict=False):
        for h, label in zip(histories, labels, strict=True):
            epochs = [r["epoch"] for r in h.rows if math.isfinite(r.get(key, math.nan))]
            values = [r[key] for r in h.rows if math.isfinite(r.get(key, math.nan))]
            (line,) = ax.plot(epochs, values, marker="o", ms=3, label=label)
            if h.status == "diverged" and epochs:
                ax.plot(epochs[-1], values[-1], "x", ms=10, mew=2, color=line.get_color())
        ax.set_title(title)
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
    fig.tight_layout()
    return fig


def _mosaic(tiles: np.ndarray, labels: Sequence[str], cols: int, width: float, cmap: str,
            vmin: float, vmax: float, fontsize: float) -> Figure:
    """28x28 tiles on one image, labelled above: one imshow instead of an axes per tile,
    which makes the figure several times faster to lay out and save."""
    rows, step = math.ceil(len(tiles) / cols), 28 + 6
    canvas = np.full((rows * step - 6, cols * step - 6), np.nan)  # NaN: the white gaps
    fig, ax = plt.subplots(figsize=(width, width * rows * step / (cols * step) + 0.6))
    colours = plt.get_cmap(cmap).with_extremes(bad="white")
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(i, cols)
        canvas[r * step:r * step + 28, c * step:c * step + 28] = tile
        ax.text(c * step + 13.5, r * step - 1.5, label, ha="center", va="bottom",
                fontsize=fontsize)
    ax.imshow(canvas, cmap=colours, vmin=vmin, vmax=vmax)
    ax.axis("off")
    return fig


def weights(W: np.ndarray, title: str = "") -> Figure:
    """The ten columns of W (784 x 10, a bias row beyond 784 ignored) as 28x28 images,
    titled by their class; red is positive evidence for the class, blue negative (each
    image on its own symmetric scale)."""
    images = W[:784].T.reshape(-1, 28, 28)
    scale = np.abs(images).max(axis=(1, 2), keepdims=True)
    images = images / np.where(scale > 0, scale, 1.0)
    fig = _mosaic(images, [str(c) for c in range(len(images))], 5, 10, "RdBu_r", -1, 1, 12)
    if title:
        fig.axes[0].set_title(title, pad=18)
    return fig


def samples(X: np.ndarray, y: np.ndarray, n: int = 32) -> Figure:
    """The first ``n`` rows of X as 28x28 digits, each titled with its label."""
    n = min(n, len(X))
    images = X[:n, :784].reshape(-1, 28, 28)
    return _mosaic(images, [str(int(v)) for v in y[:n]], 8, 8.8, "gray_r", 0, 1, 9)


def _by(table: Sequence[dict], key: str) -> dict:
    groups: dict = {}
    for row in table:
        groups.setdefault(row[key], []).append(row)
    return groups


def batch_sizes(table: Sequence[dict]) -> Figure:
    """Final validation loss and accuracy, and seconds per epoch, against the batch size,
    one line per optimiser (median over seeds)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("final_val_loss", "final validation loss"),
              ("final_val_acc", "final validation accuracy (%)"),
              ("seconds_per_epoch", "seconds per epoch")]
    for optimizer, rows in _by(table, "optimizer").items():
        sizes = sorted({r["batch_size"] for r in rows})
        for ax, (key, title) in zip(axes, panels, strict=True):
            med = [float(np.nanmedian([r[key] for r in rows if r["batch_size"] == b]))
                   for b in sizes]
            ax.plot(sizes, med, marker="o", label=optimizer)
            ax.set_title(title)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def lr_sensitivity(table: Sequence[dict]) -> Figure:
    """DeepOBS-style: final validation accuracy against the learning rate, the median over
    seeds with the min-max band; a diverged run counts as chance (10%)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for optimizer, rows in _by(table, "optimizer").items():
        lrs = sorted({r["lr"] for r in rows})
        accs = [[r["final_val_acc"] if r["status"] == "ok" else 10.0
                 for r in rows if r["lr"] == lr] for lr in lrs]
        med = [float(np.median(a)) for a in accs]
        (line,) = ax.plot(lrs, med, marker="o", label=optimizer)
        ax.fill_between(lrs, [min(a) for a in accs], [max(a) for a in accs], alpha=0.2,
                        color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
