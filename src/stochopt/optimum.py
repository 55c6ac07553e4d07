"""The true optimum of the convex problem, so optimisers can be compared by ``f(W_t) - f*``.

    f(W) = -(1/N) sum_i y*_i . log softmax(x_i W) + (lambda / 2) ||W||_F^2

is smooth and convex (strictly convex for lambda > 0). It is solved in float64 by L-BFGS
with a strong-Wolfe line search on the analytic gradient (no autograd), after whitening
the pixels.
``f*`` and ``W*`` are cached per (data set, split, lambda, bias).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Split, cache_dir
from .files import atomic_write
from .model import cross_entropy, logits, one_hot, residuals, xt_r

CACHE_VERSION = 2


@dataclass
class Optimum:
    W: torch.Tensor  # (d, C) float64
    objective: float
    grad_norm: float
    iterations: int
    seconds: float


def objective_and_gradient(W, X, y, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(W)`` and its gradient from one pass of logits."""
    Z = logits(W, X)
    f = cross_entropy(Z, y) + weight_decay / 2 * (W * W).sum()
    R = residuals(Z, one_hot(y, W.shape[-1], X.dtype))
    return f, xt_r(X, R, 1 / len(X)) + weight_decay * W


def whitener(X: torch.Tensor, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``P = (X^T X / N + delta I)^(-1/2)`` and its inverse: in ``W = P V`` the pixels'
    correlations no longer slow L-BFGS down. The Hessian is roughly ``s X^T X / N + wd I``
    with s, the softmax variance, around 0.05 near the optimum: hence ``delta = 20 wd``
    (plus a floor)."""
    lam, U = torch.linalg.eigh(X.T @ X / len(X))
    delta = 20 * weight_decay + 1e-4 * lam.mean().item()
    scale = (lam.clamp(min=0) + delta).sqrt()
    return (U / scale) @ U.T, (U * scale) @ U.T


@torch.no_grad()
def solve(X: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0, gtol: float = 1e-8,
          max_iter: int = 1000) -> Optimum:
    """Minimise f from W = 0 in float64 by L-BFGS (strong Wolfe) on the whitened problem
    ``V -> f(P V)``, until ``max |grad_W f| <= gtol`` or ``max_iter`` iterations.

    With ``weight_decay > 0`` this converges in a few hundred iterations. With 0, MNIST's f
    has no minimiser (a few pixels are lit in one class only, so f keeps falling as those
    weights grow): ``f*`` is then an infimum and the result an upper bound on it, whose
    closeness ``grad_norm`` reports.
    """
    start = time.perf_counter()
    X = X.double()
    P, P_inv = whitener(X, weight_decay)
    # grad_V = P grad_W, so |grad_W|_max <= |P^-1|_inf |grad_V|_max: stop on grad_V accordingly
    v_tol = gtol / P_inv.abs().sum(dim=1).max().item()
    Xp, Y = X @ P, one_hot(y, 10, X.dtype)
    V = torch.nn.Parameter(torch.zeros(X.shape[1], 10, dtype=torch.float64, device=X.device))
    lbfgs = torch.optim.LBFGS([V], lr=1, max_iter=max_iter, max_eval=2 * max_iter,
                              tolerance_grad=v_tol, tolerance_change=1e-16, history_size=30,
                              line_search_fn="strong_wolfe")

    def closure():
        Z = logits(V.detach(), Xp)
        W = P @ V.detach()
        f = cross_entropy(Z, y) + weight_decay / 2 * (W * W).sum()
        g = xt_r(Xp, residuals(Z, Y), 1 / len(X)) + weight_decay * (P @ W)
        V.grad = g.contiguous()  # L-BFGS flattens it with view()
        return f

    lbfgs.step(closure)
    W = P @ V.detach()
    f, g = objective_and_gradient(W, X, y, weight_decay)
    return Optimum(W, f.item(), g.abs().max().item(), lbfgs.state[V]["n_iter"],
                   time.perf_counter() - start)


def _fingerprint(split: Split, weight_decay: float) -> str:
    h = hashlib.md5()
    for t in (split.X_train[::97], split.y_train, split.X_val[:100]):
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(f"{split.X_train.shape}|{weight_decay!r}|{CACHE_VERSION}".encode())
    return f"{split.name}-wd{weight_decay:g}-{'bias-' if split.n_features % 784 else ''}" \
           f"{h.hexdigest()[:12]}"


def optimum_cache_dir() -> Path:
    return Path(os.environ.get("STOCHOPT_CACHE") or cache_dir().parent) / "optimum"


def cached_optimum(split: Split, weight_decay: float = 0.0, compute: bool = True,
                   progress: bool = False) -> Optimum | None:
    """``W*`` and ``f*`` for ``split`` and ``weight_decay``: from the cache, or solved (and
    cached) when ``compute``; None if neither."""
    path = optimum_cache_dir() / f"{_fingerprint(split, weight_decay)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return Optimum(torch.from_numpy(z["W"]), float(z["objective"]),
                               float(z["grad_norm"]), int(z["iterations"]), float(z["seconds"]))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    if not compute:
        return None
    if progress:
        print(f"solving for the optimum f* (weight decay {weight_decay:g}) once; it is cached")
    opt = solve(split.X_train, split.y_train, weight_decay)
    if math.isfinite(opt.objective):
        path.parent.mkdir(parents=True, exist_ok=True)
        W = opt.W.cpu().numpy()
        atomic_write(path, lambda f: np.savez(f, W=W, objective=opt.objective,
                                              grad_norm=opt.grad_norm,
                                              iterations=opt.iterations,
                                              seconds=opt.seconds), binary=True)
    return opt


def write_optimum(split: Split, weight_decay: float, out: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Solve (or load) the optimum, evaluate W* on every part of the split, and write
    ``optimum.json`` and ``weights.npy`` to ``out`` when given; returns the summary."""
    from .artefacts import versions
    from .files import prepare_out, write_json, write_npy
    from .optim import Rule
    from .train import evaluate

    Rule.weight_decay.check(weight_decay)  # the declared range of every rule's weight_decay
    folder = prepare_out(out) if out else None
    opt = cached_optimum(split, weight_decay, progress=progress)
    W = opt.W.to(split.X_train.device, split.X_train.dtype).unsqueeze(0)
    result = {"objective": opt.objective, "weight_decay": weight_decay,
              "bias": split.source.get("bias", False), "grad_max_abs": opt.grad_norm,
              "iterations": opt.iterations, "solve_seconds": opt.seconds}
    for part in ("train", "val", "test"):
        (loss,), (acc,) = evaluate(W, *split.part(part))
        result[f"{part}_loss"], result[f"{part}_acc"] = loss, acc
    if folder is not None:
        write_npy(folder / "weights.npy", opt.W.numpy())
        write_json(folder / "optimum.json", {**result, "versions": versions()})
    return result
