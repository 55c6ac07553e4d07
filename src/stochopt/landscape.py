"""The optimisers on 2-D test functions: the exercise's pointer to "the optimisers from ex1".

The update rules are the very classes that train the softmax classifier (:mod:`.optim`),
called on a 2-vector instead of W: ``rule.step(w, g, state, lr)``, a constant lr per step.

    result = run("rosenbrock", ["sgd", "momentum", "adam"])   # paths and f - f* per step
    write(result, "runs/landscape")                           # paths.png, loss.png, paths.gif

Each function comes with its gradient written out by hand (checked against autograd in the
tests), its minima, a start point and per-optimiser learning rates chosen so that the
picture teaches something: plain gradient descent crawls along Rosenbrock's curved valley,
momentum overshoots and swings, Adam's steps are nearly the same length whatever the
gradient's size (it divides by its running RMS), as the sign-based Lion's are exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import StochoptError
from .optim import RULES, get_rule
from .optim.base import StepBatch

Vec = torch.Tensor  # shape (..., 2): x = v[..., 0], y = v[..., 1]

@dataclass
class Function:
    """A 2-D test function with its hand-written gradient, minima and defaults."""

    name: str
    f: Callable[[Vec], torch.Tensor]
    grad: Callable[[Vec], Vec]
    minima: list[tuple[float, float]]
    start: tuple[float, float]
    box: tuple[float, float, float, float]  # x0, x1, y0, y1 of the plot
    lr: float  # for gradient-scaled rules (sgd, momentum, ...)
    lr_scale_free: float  # for the others
    steps: int
    f_star: float = 0.0
    lr_by_rule: dict[str, float] = field(default_factory=dict)

    def lr_for(self, optimizer: str) -> float:
        if optimizer in self.lr_by_rule:
            return self.lr_by_rule[optimizer]
        scale = get_rule(optimizer).landscape_lr  # declared by the rule (Rule.landscape_lr)
        if scale == "lr_free":
            return 1.0
        return self.lr_scale_free if scale == "scale_free" else self.lr


def _rosenbrock() -> Function:
    # f = (1 - x)^2 + 100 (y - x^2)^2
    def f(v):
        x, y = v[..., 0], v[..., 1]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    def grad(v):
        x, y = v[..., 0], v[..., 1]
        return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], -1)

    return Function("rosenbrock", f, grad, [(1.0, 1.0)], (-1.2, 1.0), (-2, 2, -1, 3),
                    lr=1e-3, lr_scale_free=0.05, steps=1000,
                    lr_by_rule={"adadelta": 1.0, "rprop": 0.01, "radam": 5e-3,
                                "adagrad": 0.5})


def _beale() -> Function:
    # f = sum_k (c_k - x + x y^k)^2, c = (1.5, 2.25, 2.625)
    c = (1.5, 2.25, 2.625)

    def f(v):
        x, y = v[..., 0], v[..., 1]
        return sum((ck - x + x * y ** (k + 1)) ** 2 for k, ck in enumerate(c))

    def grad(v):
        x, y = v[..., 0], v[..., 1]
        gx = sum(2 * (ck - x + x * y ** (k + 1)) * (y ** (k + 1) - 1) for k, ck in enumerate(c))
        gy = sum(2 * (ck - x + x * y ** (k + 1)) * (k + 1) * x * y**k for k, ck in enumerate(c))
        return torch.stack([gx, gy], -1)

    return Function("beale", f, grad, [(3.0, 0.5)], (1.0, 1.5), (-1, 4.5, -1.5, 2),
                    lr=1e-2, lr_scale_free=0.05, steps=1000,
                    lr_by_rule={"adadelta": 1.0, "rprop": 0.01, "radam": 5e-3,
                                "adagrad": 0.5, "momentum": 2e-3, "nesterov": 2e-3})


def _himmelblau() -> Function:
    # f = (x^2 + y - 11)^2 + (x + y^2 - 7)^2: four minima, all at f = 0
    def f(v):
        x, y = v[..., 0], v[..., 1]
        return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2

    def grad(v):
        x, y = v[..., 0], v[..., 1]
        a, b = x**2 + y - 11, x + y**2 - 7
        return torch.stack([4 * x * a + 2 * b, 2 * a + 4 * y * b], -1)

    minima = [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186),
              (3.584428, -1.848126)]
    return Function("himmelblau", f, grad, minima, (-0.5, -0.5), (-5, 5, -5, 5),
                    lr=5e-3, lr_scale_free=0.1, steps=500,
                    lr_by_rule={"adadelta": 1.0, "rprop": 0.05, "adagrad": 1.0})


def _quadratic(condition: float) -> Function:
    # f = (x^2 + K y^2) / 2: Hessian diag(1, K), so mu = 1, L = K
    def f(v):
        return (v[..., 0] ** 2 + condition * v[..., 1] ** 2) / 2

    def grad(v):
        return torch.stack([v[..., 0], condition * v[..., 1]], -1)

    # the start is no multiple of the sign-based steps, which would land exactly on 0
    return Function("quadratic", f, grad, [(0.0, 0.0)], (-4.15, 1.35), (-5, 5, -2, 2),
                    lr=1 / condition, lr_scale_free=0.1, steps=500,
                    lr_by_rule={"adadelta": 1.0, "rprop": 0.1, "adagrad": 1.0})


FUNCTIONS = ("rosenbrock", "beale", "himmelblau", "quadratic")


def function(name: str, condition: float = 10.0) -> Function:
    if name not in FUNCTIONS:
        raise StochoptError(f"unknown function {name!r}; choose one of {', '.join(FUNCTIONS)}")
    if not (math.isfinite(condition) and condition >= 1):
        raise StochoptError(f"--condition must be a number >= 1, got {condition}")
    return {"rosenbrock": _rosenbrock, "beale": _beale, "himmelblau": _himmelblau,
            "quadratic": lambda: _quadratic(condition)}[name]()


def polyak(L: float, mu: float) -> tuple[float, float, float]:
    """Heavy ball's optimal (lr, momentum) on a quadratic with curvatures in [mu, L], and
    its rate per step, (sqrt(K) - 1)/(sqrt(K) + 1) for K = L/mu (Polyak 1964)."""
    lr = 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    rate = (math.sqrt(L / mu) - 1) / (math.sqrt(L / mu) + 1)
    return lr, rate**2, rate


@dataclass
class Path2D:
    optimizer: str
    lr: float
    points: np.ndarray  # (steps + 1, 2): the evaluation point after each step
    values: np.ndarray  # f - f* at each point
    diverged: bool = False


@torch.no_grad()
def optimize(fn: Function, optimizer: str, lr: float | None = None, steps: int | None = None,
             noise: float = 0.0, seed: int = 0, start: Sequence[float] | None = None,
             **hyper: float) -> Path2D:
    """Run one rule on ``fn`` from its start; a diverging path stops at its first
    non-finite or huge value."""
    rule = get_rule(optimizer)(**hyper)
    lr = fn.lr_for(optimizer) if lr is None else lr
    steps = fn.steps if steps is None else steps
    w = torch.tensor(start or fn.start, dtype=torch.float64).view(1, 1, 1, 2)
    state = rule.init(w)
    gen = torch.Generator().manual_seed(seed)
    points = [w.flatten().clone()]
    diverged = False
    def loss_at(v: torch.Tensor) -> torch.Tensor:  # for the rules that need f (SPS, Armijo)
        return (fn.f(v) - fn.f_star).reshape(*v.shape[:-2], 1, 1).double()

    for _ in range(steps):
        # mini-batch noise, in miniature: one draw per step, the same at other points
        draw = noise * torch.randn(w.shape, generator=gen, dtype=w.dtype) if noise else 0.0
        g = fn.grad(w) + draw
        batch = StepBatch(loss_at(w), loss_at, gradient_at=lambda v, d=draw: fn.grad(v) + d) \
            if rule.needs_loss else None
        rule.step(w, g, state, lr, batch)
        p = rule.evaluation_point(w, state).flatten().clone()
        if not torch.isfinite(p).all() or float(p.abs().max()) > 1e6:
            diverged = True
            break
        points.append(p)
    pts = torch.stack(points)
    return Path2D(optimizer, lr, pts.numpy(), (fn.f(pts) - fn.f_star).numpy(), diverged)


@dataclass
class Landscape:
    fn: Function
    paths: list[Path2D]
    noise: float
    theory: dict[str, np.ndarray] = field(default_factory=dict)  # label -> f - f* per step


def run(name: str, optimizers: Sequence[str], steps: int | None = None,
        condition: float = 10.0, noise: float = 0.0, seed: int = 0,
        lr: float | None = None) -> Landscape:
    """Every optimiser on one function; on the quadratic, also the f - f* that theory
    predicts for gradient descent at 2/(L + mu) and heavy ball at Polyak's parameters."""
    fn = function(name, condition)
    for o in optimizers:
        get_rule(o)  # an unknown name: one line, before anything runs
    paths = [optimize(fn, o, lr, steps, noise, seed) for o in optimizers]
    out = Landscape(fn, paths, noise)
    if name == "quadratic":  # the two methods of the theory lines, run beside them
        hb_lr, hb_mu, _ = polyak(condition, 1.0)
        for label, path in (("sgd at 2/(L+mu)", optimize(fn, "sgd", 2 / (condition + 1),
                                                         steps, noise, seed)),
                            ("heavy ball at Polyak's", optimize(fn, "momentum", hb_lr, steps,
                                                                noise, seed, momentum=hb_mu))):
            path.optimizer = label
            paths.append(path)
        n = steps or fn.steps
        f0 = float(fn.f(torch.tensor(fn.start, dtype=torch.float64)))
        gd = (condition - 1) / (condition + 1)
        _, _, hb = polyak(condition, 1.0)
        t = np.arange(n + 1)
        out.theory = {f"gradient descent, lr 2/(L+mu): rate {gd:.3f}": f0 * gd ** (2 * t),
                      f"heavy ball, Polyak's lr and momentum: rate {hb:.3f}": f0 * hb ** (2 * t)}
    return out


# --------------------------------------------------------------------------- figures


def _contours(ax, fn: Function) -> None:
    from matplotlib.colors import LogNorm

    x0, x1, y0, y1 = fn.box
    X, Y = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    Z = fn.f(torch.from_numpy(np.stack([X, Y], -1))).numpy() - fn.f_star
    levels = np.geomspace(max(Z.min(), 1e-3), Z.max(), 25)
    ax.contour(X, Y, np.maximum(Z, 1e-3), levels=levels, cmap="Greys", linewidths=0.6,
               norm=LogNorm())
    for m in fn.minima:
        ax.plot(*m, "*", ms=14, color="gold", mec="black", zorder=5)
    ax.plot(*fn.start, "o", ms=7, color="black", zorder=5)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y")


def paths_figure(land: Landscape, upto: int | None = None):
    import matplotlib.pyplot as plt

    from .study.plots import fixed_margins

    fig, ax = plt.subplots(figsize=(7, 6))
    _contours(ax, land.fn)
    for p in land.paths:
        pts = p.points[: None if upto is None else upto + 1]
        ax.plot(pts[:, 0], pts[:, 1], ".-", ms=2, lw=1.2,
                label=f"{p.optimizer} (lr {p.lr:g})" + (" diverged" if p.diverged else ""))
    noise = f", gradient noise {land.noise:g}" if land.noise else ""
    ax.set_title(f"{land.fn.name}: paths from {land.fn.start} (star: minimum{noise})")
    ax.legend(fontsize=8, loc="upper right")
    fixed_margins(fig, bottom=0.55)  # drawn once, not measured and cropped
    return fig


def loss_figure(land: Landscape):
    import matplotlib.pyplot as plt

    from .study.plots import fixed_margins

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in land.paths:
        ax.plot(np.maximum(p.values, 1e-300), lw=1.2, label=p.optimizer)
    for i, (label, v) in enumerate(land.theory.items()):
        ax.plot(v, ("--", ":")[i % 2], color="grey", lw=1.5, label=label + " (theory)")
    ax.set(yscale="log", xlabel="step", ylabel="f(x_t) - f*", title=f"{land.fn.name}: f - f*")
    values = np.concatenate([p.values for p in land.paths])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):  # down to 1e-16 at most: below, float64 rounding is all there is
        ax.set_ylim(max(1e-16, values.min() / 3), values.max() * 3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fixed_margins(fig, bottom=0.55)
    return fig


def write(land: Landscape, out: str | Path, frames: int = 60) -> list[Path]:
    """paths.png, loss.png and an animated paths.gif, each written atomically. The GIF's
    frames are blitted (the contours drawn once, only the paths redrawn per frame) and
    written by Pillow, matplotlib's own image dependency."""
    import io

    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from PIL import Image

    from .files import atomic_write, prepare_out, save_figure

    out = prepare_out(out)
    save_figure(out / "paths.png", paths_figure(land))
    save_figure(out / "loss.png", loss_figure(land))
    n = max(len(p.points) for p in land.paths)
    steps = np.unique(np.geomspace(1, n - 1, frames).astype(int)) if n > 1 else np.array([0])
    fig = paths_figure(land, upto=0)
    fig.set_dpi(80)
    ax = fig.axes[0]
    lines = ax.get_legend_handles_labels()[0]  # the paths' lines, in order
    clock = ax.text(0.02, 0.03, "", transform=ax.transAxes, fontsize=11)
    for artist in [*lines, clock]:
        artist.set_animated(True)  # left out of the background, drawn per frame
    fig.canvas.draw()
    background = fig.canvas.copy_from_bbox(fig.bbox)
    frames_rgb = []
    for step in steps:
        fig.canvas.restore_region(background)
        for line, p in zip(lines, land.paths, strict=True):
            pts = p.points[: step + 1]
            line.set_data(pts[:, 0], pts[:, 1])
            ax.draw_artist(line)
        clock.set_text(f"step {step}")
        ax.draw_artist(clock)
        rgba = np.asarray(fig.canvas.buffer_rgba())
        frames_rgb.append(Image.fromarray(rgba[..., :3].copy()))
    plt.close(fig)
    # One palette of 64 colours for every frame: the paths' own colours, then the rest chosen
    # from the last frame (median cut). A palette chosen from the pixels alone has no entry
    # for a thin line's colour (the contours outnumber it), so the paths came out in a
    # neighbour's; and mapping a frame to a given palette is about 30x quicker than choosing
    # each frame's own (1 against 32 ms).
    own = [to_rgb(line.get_color()) for line in lines[:32]]
    n_rest = 64 - len(own)
    rest = frames_rgb[-1].quantize(n_rest).getpalette()[: 3 * n_rest]  # flat R, G, B values
    palette = Image.new("P", (1, 1))
    palette.putpalette([round(255 * v) for rgb in own for v in rgb] + rest)
    none = getattr(Image, "Dither", Image).NONE  # Pillow before 9.1 has no Image.Dither
    images = [f.quantize(palette=palette, dither=none) for f in frames_rgb]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=80,
                   loop=0)
    atomic_write(out / "paths.gif", lambda f: f.write(buf.getvalue()), binary=True)
    return [out / "paths.png", out / "loss.png", out / "paths.gif"]


def steps_to(path: Path2D, tol: float) -> int | None:
    """The first step at which f - f* < tol (None if never)."""
    hit = np.nonzero(path.values < tol)[0]
    return int(hit[0]) if len(hit) else None


def convergence_table(tol: float = 1e-6) -> str:
    """The table of docs/landscapes.md: every registered rule on the quadratic (condition
    10) from its start, at its landscape lr: the first step at which f - f* < tol, or where
    it ends."""
    fn = function("quadratic")
    lines = [f"| optimizer | lr | steps to f - f* < {tol:g} |", "|---|---|---|"]
    for name in RULES:
        p = optimize(fn, name)
        hit = steps_to(p, tol)
        if hit is not None:
            cell = str(hit)
        elif p.diverged:
            # no "|" in a cell: Markdown would split the column there
            cell = f"diverges (a coordinate past 1e6 after {len(p.values) - 1} steps)"
        else:
            tail = p.values[-100:]
            low, high = float(np.min(tail)), float(np.max(tail))
            if high > 10 * low:  # still circling: its last value is the luck of the phase,
                # which the last digits of the machine's arithmetic decide (Kron's is 1e-3
                # on one CPU and 1e-2 on another); the decades it moves between are not
                cell = (f"not reached in {fn.steps} steps (f - f* moves between "
                        f"1e{math.floor(math.log10(low))} and 1e{math.ceil(math.log10(high))} "
                        "in its last 100)")
            else:
                cell = f"not reached in {fn.steps} steps (f - f* = {p.values[-1]:.2g} at the end)"
        lines.append(f"| `{name}` | {p.lr:g} | {cell} |")
    return "\n".join(lines) + "\n"
