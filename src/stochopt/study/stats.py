"""The statistics behind the answers, as small pure functions over plain numbers.

    interval([91.6, 92.1, 91.9])        mean, sample sd and Student-t 95% interval over seeds
    paired({0: a0, 1: a1}, {0: b0, 1: b1})   a - b paired by seed, with its t interval
    p_value(diff)                       the paired t-test's two-sided p
    holm([p1, p2, ...])                 Holm-Bonferroni adjusted p over a family of tests
    first_reach(rows, "val_acc", 92.0)  the first epoch row at or beyond a target
    mccandlish_fit(steps, examples)     S_min, E_min of (S/S_min - 1)(E/E_min - 1) = 1
    performance_profile(costs, taus)    AlgoPerf-style: the fraction solved within tau x best
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


# Student's t for an integer number of degrees of freedom (the seeds less one), in closed
# form: importing scipy.special for it took 0.3-0.45 s of every study's wall time.
def t_two_sided(t: float, df: int) -> float:
    """``P(|T| > t)`` for Student's T with ``df`` (a positive integer) degrees of freedom.

    With ``x = df / (df + t^2)`` it is ``I_x(df/2, 1/2)``, whose series for an integer df
    are finite (Abramowitz & Stegun 26.7.3-4): for df = 2m, ``1 - sqrt(1-x) sum_{k<m} a_k
    x^k`` with ``a_k = prod_{j<=k} (2j-1)/(2j)``; for df = 2m+1, ``(2/pi) (asin(sqrt x) -
    sqrt(x(1-x)) sum_{k<m} b_k x^k)`` with ``b_k = prod_{j<=k} 2j/(2j+1)``. Both sums are
    the first m terms of ``1/sqrt(1-x)`` and of ``asin(sqrt x)/sqrt(x(1-x))``, so in the
    tail (where the difference would lose digits) it is summed as the series' remaining
    terms instead, all positive: no cancellation, however small the probability."""
    if df < 1 or df != int(df):
        raise ValueError(f"degrees of freedom must be a positive integer, not {df}")
    df, t = int(df), abs(t)
    if math.isinf(t):
        return 0.0
    r = math.hypot(math.sqrt(df), t)  # x and 1 - x as ratios, not one from the other
    x, c, s = df / (r * r), math.sqrt(df) / r, t / r  # x = c^2, 1 - x = s^2
    m, odd = df // 2, df % 2 == 1

    def ratio(k: int) -> float:  # a_{k+1} / a_k (even df) or b_{k+1} / b_k (odd)
        return (2 * k + 2) / (2 * k + 3) if odd else (2 * k + 1) / (2 * k + 2)

    coef = 1.0  # a_k or b_k, from k = 0
    head = 0.0
    for k in range(m):
        head += coef * x**k
        coef *= ratio(k)
    front = c * s * 2 / math.pi if odd else s
    # asin(sqrt x) = atan2(sqrt df, t), well conditioned near x = 1
    whole = 2 / math.pi * math.atan2(math.sqrt(df), t) if odd else 1.0
    if (direct := whole - front * head) > 0.1:  # cancels away at most a digit
        return direct
    tail, k, term = 0.0, m, coef * x**m
    # each term is less than x times the one before, so what is left after a term is less
    # than term * x / (1 - x)
    while term > tail * 1e-17 * (1 - x):
        tail += term
        coef *= ratio(k)
        k += 1
        term = coef * x**k
    return front * tail


@functools.cache  # a study asks for a few (q, df) pairs, thousands of times
def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` (a positive integer) degrees of freedom:
    the t where ``P(T <= t) = q``, by Newton's method on :func:`t_two_sided` in the tail's
    own terms (so that q near 0 or 1 keeps its relative precision)."""
    if not 0 < q < 1:
        return -math.inf if q == 0 else math.inf if q == 1 else math.nan
    if q == 0.5:
        return 0.0
    p = 2 * min(q, 1 - q)  # the two-sided tail the quantile leaves, P(|T| > t)
    log_density = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                   - 0.5 * math.log(df * math.pi))
    t = 1.0  # P(|T| > t) falls from 1 at 0 and is convex there: Newton's steps from the
    for _ in range(200):  # left never overshoot; from the right they are halved if they do
        tail = t_two_sided(t, df)
        density = math.exp(log_density - (df + 1) / 2 * math.log1p(t * t / df))
        step = (tail - p) / (2 * density)
        if t + step <= 0:
            step = -t / 2
        t += step
        if abs(step) <= 4 * math.ulp(t):
            break
    return t if q > 0.5 else -t


@dataclass(frozen=True)
class Interval:
    """Mean, sample sd (n - 1) and the two-sided 95% Student-t interval of n values; with
    one value the interval is that value and sd is undefined (NaN)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def interval(values: Iterable[float], level: float = 0.95) -> Interval:
    v = np.asarray(list(values), dtype=np.float64)
    n = len(v)
    if n == 0 or not np.isfinite(v).all():
        return Interval(n, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return Interval(1, mean, math.nan, mean, mean)
    sd = float(v.std(ddof=1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def paired(a: Mapping[Any, float], b: Mapping[Any, float]) -> Interval:
    """The interval of ``a[s] - b[s]`` over the keys (seeds) both have with finite values:
    the paired t interval, since runs with one seed saw the same data order."""
    common = [s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s])]
    return interval(a[s] - b[s] for s in common)


def p_value(diff: Interval) -> float:
    """The two-sided p of the t-test that ``diff``'s mean is 0 (the paired t-test when
    ``diff`` is :func:`paired`'s): p < 0.05 exactly when the 95% interval excludes 0. NaN
    with fewer than two values; 0 or 1 when they are all equal (sd 0)."""
    if diff.n < 2 or not math.isfinite(diff.mean):
        return math.nan
    if diff.sd == 0:
        return 1.0 if diff.mean == 0 else 0.0
    return t_two_sided(abs(diff.mean) / (diff.sd / math.sqrt(diff.n)), diff.n - 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni (1979) adjusted p-values over one family of tests: sorted ascending,
    ``p_(i) * (m - i + 1)``, made monotone and capped at 1; rejecting where the adjusted p
    is below alpha keeps the chance of any false rejection in the family below alpha. NaN
    stays NaN and does not count in m."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m, out, running = len(finite), [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def verdict(diff: Interval, lower_is_better: bool = False, p: float | None = None,
            alpha: float = 0.05) -> str:
    """'a better', 'b better' or 'indistinguishable' for a - b: by ``p`` (an adjusted
    p-value) below ``alpha`` when given, else by the interval excluding 0; 'undetermined'
    with fewer than two pairs, where no test exists."""
    if diff.n < 2 or math.isnan(diff.mean):
        return "undetermined"
    if diff.contains(0.0) if p is None else not p < alpha:
        return "indistinguishable"
    return "a better" if (diff.mean < 0) == lower_is_better else "b better"


def binomial_se(accuracy_percent: float, n: int) -> float:
    """Standard error, in points, of an accuracy measured on n independent examples."""
    p = accuracy_percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / n)


def first_reach(rows: Sequence[Mapping[str, Any]], key: str, target: float,
                above: bool = True) -> Mapping[str, Any] | None:
    """The first row whose ``key`` is at least (``above``) or at most ``target``."""
    for row in rows:
        x = row.get(key, math.nan)
        if isinstance(x, (int, float)) and math.isfinite(x) and (
                x >= target if above else x <= target):
            return row
    return None


def mccandlish_fit(steps: Sequence[float], examples: Sequence[float]) -> tuple[float, float]:
    """``S_min, E_min`` of McCandlish et al. (2018)'s ``(S/S_min - 1)(E/E_min - 1) = 1``
    through points (steps S_i, examples E_i) to one target. Expanded, the curve is
    ``S_min / S + E_min / E = 1``: linear in the two unknowns, so least squares is one
    solve. Needs two points with different batch sizes (``E/S``)."""
    A = np.column_stack([1 / np.asarray(steps, float), 1 / np.asarray(examples, float)])
    if len(A) < 2 or np.linalg.matrix_rank(A) < 2:
        return math.nan, math.nan
    (s_min, e_min), *_ = np.linalg.lstsq(A, np.ones(len(A)), rcond=None)
    return float(s_min), float(e_min)


def performance_profile(costs: Mapping[str, Mapping[Any, float]], taus: Sequence[float]
                        ) -> dict[str, list[float]]:
    """``costs[solver][problem]`` (inf: never solved) -> for each solver the fraction of
    problems it solves within ``tau`` times the best solver's cost on that problem. A
    problem no solver solves counts as unsolved for all (Dolan & More 2002; AlgoPerf)."""
    problems = sorted({p for c in costs.values() for p in c}, key=str)
    best = {p: min(c.get(p, math.inf) for c in costs.values()) for p in problems}
    out = {}
    for solver, c in costs.items():
        ratios = [c.get(p, math.inf) / best[p] if math.isfinite(best[p]) else math.inf
                  for p in problems]
        out[solver] = [sum(r <= tau for r in ratios) / max(1, len(problems)) for tau in taus]
    return out
