"""The true optimum of the convex problem, so optimisers can be compared by ``f(W_t) - f*``.

    f(W) = -(1/N) sum_i y*_i . log softmax(x_i W) + (wd / 2) ||W||_F^2

is smooth and convex. For wd > 0 it is wd-strongly convex, so every W carries a certificate,

    f(W) - f* <= ||grad f(W)||^2 / (2 wd),

and :func:`newton` solves it (float64, line-search Newton-CG) until that bound is below
1e-12 of f. With wd = 0, MNIST's f has no minimiser (a few pixels are lit in one class only,
so f keeps falling as those weights grow): :func:`lbfgs` then returns the best value it
reaches within its iteration cap, an *upper bound* on the infimum (``attained = False``).

The Hessian is applied without being formed, two passes over X per product:

    H[V] = (1/N) X^T S + wd V,   S = P * (X V - rowsum(P * X V)),   P = softmax(X W),

with X as a CSR matrix when at most half its entries are nonzero (MNIST: 19%), which reads
a fifth of the bytes. ``f*`` and ``W*`` are cached per (data set, split, wd, bias).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import N_CLASSES, Split, cache_dir
from .files import atomic_write
from .model import cross_entropy, logits, one_hot, residuals, softmax, xt_r

CACHE_VERSION = 3
RTOL_GAP = 1e-12  # stop when the certified gap is below this fraction of f


@dataclass
class Optimum:
    """A solve's result. ``grad_norm`` is ``max |grad f(W)|``, ``grad_l2`` its Frobenius
    norm; ``certified_gap`` bounds ``f(W) - f*`` (None when wd = 0, where no minimiser
    exists and ``objective`` is an upper bound on the infimum: ``attained`` is False).
    ``history`` holds ``(f, ||grad f||)`` at every iterate."""

    W: torch.Tensor  # (d, C) float64
    objective: float
    grad_norm: float
    iterations: int
    seconds: float
    grad_l2: float = math.nan
    certified_gap: float | None = None
    attained: bool = True
    converged: bool = True
    reason: str = ""
    solver: str = "newton"
    history: list[tuple[float, float]] = field(default_factory=list)
    curvature: dict[str, float] = field(default_factory=dict)  # see curvature()

    SCALARS = ("objective", "grad_norm", "iterations", "seconds", "grad_l2", "certified_gap",
               "attained", "converged", "reason", "solver")


class Problem:
    """``f``, its gradient and Hessian-vector products for ``(X, y, wd)``, in float64.

    Products inside conjugate gradients may use a float32 copy of X (``exact=False``):
    their error only slows the inexact Newton iteration, whose gradient stays float64."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, weight_decay: float,
                 n_classes: int | None = None) -> None:
        n_classes = n_classes or max(N_CLASSES if len(y) == 0 else int(y.max()) + 1, 2)
        self.N, self.wd, self.y = len(X), weight_decay, y
        self.Y = one_hot(y, n_classes, torch.float64)
        self.dense = X.double()
        self.X64 = _Products(self.dense)
        self.X32 = self.X64.to(torch.float32)
        self._gram: torch.Tensor | None = None

    def value_grad(self, W: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``f(W)``, ``grad f(W)`` and the probabilities ``P = softmax(XW)``."""
        Z = self.X64.xw(W)
        f = cross_entropy(Z, self.y).item() + self.wd / 2 * (W * W).sum().item()
        P = softmax(Z)
        return f, self.X64.xtr(P - self.Y) / self.N + self.wd * W, P

    def hvp(self, P: torch.Tensor, V: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """``H[V]`` at the point whose probabilities are ``P``."""
        X = self.X64 if exact else self.X32
        P, Vx = P.to(X.dtype), V.to(X.dtype)
        Zv = X.xw(Vx)
        S = P * (Zv - (P * Zv).sum(dim=1, keepdim=True))
        return (X.xtr(S) / self.N).double() + self.wd * V

    def gram(self) -> torch.Tensor:
        """``X^T X / N`` in float64 (dense: a sparse product with a wide matrix is slow)."""
        if self._gram is None:
            self._gram = self.dense.T @ self.dense / self.N
        return self._gram


class _Products:
    """``X V`` and ``X^T R`` for one X: CSR (of X and of X^T) when at most half of X is
    nonzero, else dense."""

    def __init__(self, X: torch.Tensor, At: torch.Tensor | None = None) -> None:
        self.sparse = X.layout == torch.sparse_csr or X.count_nonzero().item() <= X.numel() / 2
        if self.sparse and X.layout != torch.sparse_csr:
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                csc = X.to_sparse_csc()  # X's columns are X^T's rows: X^T as CSR for free
                At = torch.sparse_csr_tensor(csc.ccol_indices(), csc.row_indices(),
                                             csc.values(), (X.shape[1], X.shape[0]))
                X = X.to_sparse_csr()
        self.A, self.At, self.dtype = X, At, X.dtype

    def to(self, dtype: torch.dtype) -> _Products:
        if not self.sparse:
            return _Products(self.A.to(dtype))

        def cast(M):
            return torch.sparse_csr_tensor(M.crow_indices(), M.col_indices(),
                                           M.values().to(dtype), M.shape)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _Products(cast(self.A), cast(self.At))

    def xw(self, V: torch.Tensor) -> torch.Tensor:
        return self.A @ V

    def xtr(self, R: torch.Tensor) -> torch.Tensor:
        return self.At @ R if self.sparse else xt_r(self.A, R)


def objective_and_gradient(W, X, y, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(W)`` and its gradient from one pass of logits."""
    Z = logits(W, X)
    f = cross_entropy(Z, y) + weight_decay / 2 * (W * W).sum()
    R = residuals(Z, one_hot(y, W.shape[-1], X.dtype))
    return f, xt_r(X, R, 1 / len(X)) + weight_decay * W


@torch.no_grad()
def newton(X: torch.Tensor, y: torch.Tensor, weight_decay: float, gtol: float = 1e-8,
           max_iter: int = 100, rtol: float = RTOL_GAP, problem: Problem | None = None
           ) -> Optimum:
    """Line-search Newton-CG from W = 0, for wd > 0, until the certified gap
    ``||g||^2 / (2 wd)`` is below ``rtol |f|`` and ``max |g| <= gtol``.

    Each Newton step solves ``H d = -g`` by preconditioned conjugate gradients to a relative
    residual ``min(0.5, sqrt ||g||)`` (superlinear convergence), never tighter than needed
    for the target nor than float32 products allow. The preconditioner is Kronecker
    factored, ``A (x) B + wd I`` with ``A = mean_i (diag(p_i) - p_i p_i^T)`` (C x C, renewed
    every step) and ``B = X^T X / N`` (d x d, once): one eigendecomposition of each inverts
    it. Armijo backtracking from the full step; once f no longer resolves the decrease
    (float64 rounding), a step is accepted when it shrinks the gradient."""
    if weight_decay <= 0:
        raise ValueError("newton needs weight_decay > 0 (strong convexity); use lbfgs")
    start = time.perf_counter()
    problem = problem or Problem(X, y, weight_decay)
    lam_B, U_B = torch.linalg.eigh(problem.gram())  # once: B = X^T X / N
    lam_B = lam_B.clamp(min=0)
    W = torch.zeros(X.shape[1], problem.Y.shape[1], dtype=torch.float64, device=X.device)
    f, G, P = problem.value_grad(W)
    history, reason, converged = [], "", False
    for k in range(max_iter + 1):
        g2 = G.norm().item()
        history.append((f, g2))
        target = min(math.sqrt(2 * weight_decay * rtol * abs(f)), gtol)
        if g2 <= target or (g2 * g2 / (2 * weight_decay) <= rtol * abs(f)
                            and G.abs().max().item() <= gtol):
            converged = True
            break
        if k == max_iter:
            reason = f"stopped at the iteration cap ({max_iter})"
            break
        d = _pcg(problem, P, -G, lam_B, U_B,
                 tol=max(max(min(0.5, math.sqrt(g2)), 1e-5) * g2, 0.3 * target))
        step = _line_search(problem, W, f, G, d)
        if step is None:
            reason = "no step decreases f or the gradient further (float64 rounding)"
            break
        W, f, G, P = step
    # the reported figures come from the plain dense formula, not the sparse products
    f_t, G_t = objective_and_gradient(W, problem.dense, y, weight_decay)
    g2 = G_t.norm().item()
    return Optimum(W, f_t.item(), G_t.abs().max().item(), len(history) - 1,
                   time.perf_counter() - start, grad_l2=g2,
                   certified_gap=g2 * g2 / (2 * weight_decay), attained=True,
                   converged=converged, reason=reason, solver="newton", history=history)


def _pcg(problem: Problem, P, b, lam_B, U_B, tol: float, max_iter: int = 250) -> torch.Tensor:
    """Preconditioned conjugate gradients for ``H x = b`` (float32 products)."""
    A = (torch.diag(P.sum(dim=0)) - P.T @ P) / problem.N
    lam_A, U_A = torch.linalg.eigh(A)
    denom = lam_B[:, None] * lam_A.clamp(min=0)[None, :] + problem.wd

    def precondition(R):
        return U_B @ (((U_B.T @ R @ U_A) / denom) @ U_A.T)

    x = torch.zeros_like(b)
    r = b.clone()
    z = precondition(r)
    p, rz = z.clone(), (r * z).sum()
    for _ in range(max_iter):
        Hp = problem.hvp(P, p, exact=False)
        curvature = (p * Hp).sum()
        if curvature <= 0:  # only rounding can do this to a positive definite H
            break
        alpha = rz / curvature
        x.add_(p, alpha=alpha.item())
        r.sub_(Hp, alpha=alpha.item())
        if r.norm().item() <= tol:
            break
        z = precondition(r)
        rz, rz_old = (r * z).sum(), rz
        p = z + (rz / rz_old) * p
    return x if x.abs().max() > 0 else b


def _line_search(problem: Problem, W, f: float, G, d, c: float = 1e-4):
    """Armijo backtracking from the full step: the new point, its f, gradient and P."""
    slope, g2 = (G * d).sum().item(), G.norm().item()
    t = 1.0
    for _ in range(40):
        W_new = W + t * d
        f_new, G_new, P_new = problem.value_grad(W_new)
        if f_new <= f + c * t * slope:
            return W_new, f_new, G_new, P_new
        # near W*, f's change falls below its rounding: then the gradient decides
        if abs(f_new - f) <= 1e-14 * abs(f) and G_new.norm().item() < g2:
            return W_new, f_new, G_new, P_new
        t /= 2
    return None


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
def lbfgs(X: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0, gtol: float = 1e-8,
          max_iter: int = 1000, n_classes: int | None = None) -> Optimum:
    """Minimise f from W = 0 in float64 by L-BFGS (strong Wolfe) on the whitened problem
    ``V -> f(P V)``, until ``max |grad_W f| <= gtol`` or ``max_iter`` iterations (the solver
    before :func:`newton`, kept for wd = 0, where Newton's Hessian is singular at infinity).

    With wd = 0 the result is an upper bound on the infimum (``attained = False``)."""
    start = time.perf_counter()
    X = X.double()
    P, P_inv = whitener(X, weight_decay)
    # grad_V = P grad_W, so |grad_W|_max <= |P^-1|_inf |grad_V|_max: stop on grad_V accordingly
    v_tol = gtol / P_inv.abs().sum(dim=1).max().item()
    C = n_classes or int(y.max()) + 1
    Xp, Y = X @ P, one_hot(y, C, X.dtype)
    V = torch.nn.Parameter(torch.zeros(X.shape[1], C, dtype=torch.float64, device=X.device))
    opt = torch.optim.LBFGS([V], lr=1, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=v_tol, tolerance_change=1e-16, history_size=30,
                            line_search_fn="strong_wolfe")
    history: list[tuple[float, float]] = []

    def closure():
        Z = logits(V.detach(), Xp)
        W = P @ V.detach()
        f = cross_entropy(Z, y) + weight_decay / 2 * (W * W).sum()
        g = xt_r(Xp, residuals(Z, Y), 1 / len(X)) + weight_decay * (P @ W)
        V.grad = g.contiguous()  # L-BFGS flattens it with view()
        return f

    opt.step(closure)
    W = P @ V.detach()
    f, g = objective_and_gradient(W, X, y, weight_decay)
    g2 = g.norm().item()
    history.append((f.item(), g2))
    iterations = opt.state[V]["n_iter"]
    converged = g.abs().max().item() <= gtol
    return Optimum(W, f.item(), g.abs().max().item(), iterations, time.perf_counter() - start,
                   grad_l2=g2, certified_gap=g2 * g2 / (2 * weight_decay) if weight_decay > 0
                   else None, attained=weight_decay > 0, converged=converged,
                   reason="" if converged else f"stopped at the iteration cap ({max_iter})",
                   solver="lbfgs", history=history)


def solve(X: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0, gtol: float = 1e-8,
          max_iter: int | None = None, method: str = "auto", n_classes: int | None = None
          ) -> Optimum:
    """The optimum by ``method``: "newton" (the default for wd > 0) or "lbfgs" (for wd = 0,
    where no minimiser exists and the result is an upper bound, ``attained`` False).
    ``n_classes`` (default: ``max(y) + 1``) counts a class no training label has."""
    if method == "auto":
        method = "newton" if weight_decay > 0 else "lbfgs"
    if method == "newton":
        return newton(X, y, weight_decay, gtol, max_iter or 100,
                      problem=Problem(X, y, weight_decay, n_classes) if n_classes else None)
    return lbfgs(X, y, weight_decay, gtol, max_iter or 1000, n_classes)


@torch.no_grad()
def curvature(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, weight_decay: float,
              max_iter: int = 100, tol: float = 1e-10, seed: int = 0,
              problem: Problem | None = None) -> dict[str, float]:
    """The Hessian's extreme eigenvalues at W and what they imply.

    ``L``, the largest, by Lanczos on float64 Hessian-vector products (full
    reorthogonalisation, until its Ritz value moves less than ``tol`` relative). ``mu``, the
    smallest, is exactly wd: the cross-entropy's Hessian is positive semi-definite, so
    H >= wd I, and it vanishes along ``W -> W + a 1^T`` (softmax does not change when one
    vector is added to every class's weights), so the bound is attained. Also the condition
    number L/mu and Böhning's global bound ``lambda_max(X^T X) / (2N) + wd`` on the largest
    eigenvalue anywhere."""
    problem = problem or Problem(X, y, weight_decay, W.shape[1])
    _, _, P = problem.value_grad(W)
    n = W.numel()
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(W.shape, generator=g, dtype=torch.float64).to(W.device)
    Q = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    L = math.nan
    for j in range(min(max_iter, n)):
        w = problem.hvp(P, Q[j])
        alphas.append((w * Q[j]).sum().item())
        for _ in range(2):  # full reorthogonalisation, twice is enough
            for qi in Q:
                w -= (w * qi).sum() * qi
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        top = torch.linalg.eigvalsh(T)[-1].item()
        done, L = j >= 2 and abs(top - L) <= tol * abs(top), top
        beta = w.norm().item()
        if done or beta <= 1e-13 * abs(L):
            break
        betas.append(beta)
        Q.append(w / beta)
    mu = weight_decay
    lam_max = torch.linalg.eigvalsh(problem.gram())[-1].item()
    return {"L": L, "mu": mu, "condition_number": L / mu if mu > 0 else math.inf,
            "boehning_bound": lam_max / 2 + weight_decay, "lanczos_steps": len(alphas)}


def rates(L: float, mu: float) -> dict[str, float]:
    """Per-step contraction of the distance to W* at the optimal step sizes on a quadratic
    of this curvature: gradient descent (step 2/(L+mu)) ``(k-1)/(k+1)``, heavy ball
    (Polyak's step and momentum) ``(sqrt k - 1)/(sqrt k + 1)``, k = L/mu. f - f* contracts
    as their squares."""
    k = L / mu if mu > 0 else math.inf
    if not math.isfinite(k):
        return {"gd_rate": 1.0, "heavy_ball_rate": 1.0}
    return {"gd_rate": (k - 1) / (k + 1), "heavy_ball_rate": (k**0.5 - 1) / (k**0.5 + 1)}


def _fingerprint(split: Split, weight_decay: float) -> str:
    h = hashlib.md5()
    # X in its own dtype: a float64 split's f* is not a float32 split's (the solver reads
    # X as float64, so X's own rounding is part of the problem)
    for t in (split.X_train[::97], split.y_train.float(), split.X_val[:100]):
        h.update(t.detach().cpu().numpy().tobytes())
    h.update(f"{split.X_train.shape}|{weight_decay!r}|{CACHE_VERSION}".encode())
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in split.name)[-40:]
    return f"{name}-wd{weight_decay:g}-{'bias-' if split.n_features % 784 else ''}" \
           f"{h.hexdigest()[:12]}"


def optimum_cache_dir() -> Path:
    return Path(os.environ.get("STOCHOPT_CACHE") or cache_dir().parent) / "optimum"


def cached_optimum(split: Split, weight_decay: float = 0.0, compute: bool = True,
                   progress: bool = False) -> Optimum | None:
    """``W*`` and ``f*`` for ``split`` and ``weight_decay``, with the Hessian's curvature at
    W* (:func:`curvature`): from the cache, or solved (and cached) when ``compute``; None if
    neither."""
    path = optimum_cache_dir() / f"{_fingerprint(split, weight_decay)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                scalars = json.loads(str(z["scalars"]))
                opt = Optimum(torch.from_numpy(z["W"]), **scalars,
                              history=[tuple(h) for h in z["history"].tolist()])
                opt.curvature = json.loads(str(z["curvature"]))
                return opt
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    if not compute:
        return None
    if progress:
        print(f"solving for the optimum f* (weight decay {weight_decay:g}) once; it is cached")
    X, y = split.X_train, split.y_train
    problem = Problem(X, y, weight_decay, split.n_classes)
    opt = newton(X, y, weight_decay, problem=problem) if weight_decay > 0 else lbfgs(
        X, y, weight_decay, n_classes=split.n_classes)  # a class absent from training too
    opt.curvature = curvature(X, y, opt.W.to(X.device), weight_decay, problem=problem)
    if math.isfinite(opt.objective):
        path.parent.mkdir(parents=True, exist_ok=True)
        W = opt.W.cpu().numpy()
        scalars = json.dumps({k: getattr(opt, k) for k in Optimum.SCALARS})
        atomic_write(path, lambda f: np.savez(
            f, W=W, scalars=scalars, curvature=json.dumps(opt.curvature),
            history=np.array(opt.history, dtype=np.float64).reshape(-1, 2)), binary=True)
    return opt
