"""How fast is f*? The exercise's split, float64, one process: today's Newton-CG against the
L-BFGS solver it replaced and scikit-learn's LogisticRegression at the same problem,

    min_W mean CE(XW, y) + (wd/2) ||W||^2   ==   LogisticRegression(C = 1/(N wd),
                                                  fit_intercept=False, tol=1e-10)

at wd 1e-4 and 1e-3. Prints seconds, objectives (each evaluated by the same plain formula),
ratios, and Newton's iterations, gradient norm, certified gap, L, mu and condition number.

    python benchmarks/bench_optimum.py [--out benchmarks/results] [--tiny]

Nothing here is a test: timings vary with the machine's load; compare the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from stochopt.data import load_split
from stochopt.files import write_csv, write_json
from stochopt.optimum import curvature, lbfgs, newton, objective_and_gradient


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--weight-decays", default="1e-4,1e-3")
    p.add_argument("--tiny", action="store_true", help="500 examples, wd 1e-3 only")
    args = p.parse_args()
    from sklearn.linear_model import LogisticRegression

    split = load_split()
    X, y = split.X_train.double(), split.y_train
    wds = [float(w) for w in args.weight_decays.split(",")]
    if args.tiny:
        X, y, wds = X[:500], y[:500], [1e-3]
    N = len(X)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = {N}")
    rows, summary = [], {}
    for wd in wds:
        new = newton(X, y, wd)
        curv = curvature(X, y, new.W, wd)
        old = lbfgs(X, y, wd)
        t0 = time.perf_counter()
        sk = LogisticRegression(C=1 / (N * wd), fit_intercept=False, tol=1e-10,
                                max_iter=20_000).fit(X.numpy(), y.numpy())
        sk_seconds = time.perf_counter() - t0
        f_sk = objective_and_gradient(torch.from_numpy(sk.coef_.T.copy()), X, y, wd)[0].item()
        for what, seconds, f, iters in (
                ("stochopt newton-cg (new)", new.seconds, new.objective, new.iterations),
                ("stochopt l-bfgs (before)", old.seconds, old.objective, old.iterations),
                ("scikit-learn LogisticRegression (lbfgs, tol=1e-10)", sk_seconds, f_sk,
                 int(sk.n_iter_[0]))):
            rows.append({"weight_decay": wd, "what": what, "seconds": seconds, "objective": f,
                         "f_minus_newton": f - new.objective, "iterations": iters})
            print(f"wd {wd:g}  {what:<52} {seconds:9.2f} s  f = {f:.16f}  "
                  f"(f - f_newton {f - new.objective:+.2e}, {iters} iterations)")
        summary[f"{wd:g}"] = {
            "newton_vs_lbfgs": old.seconds / new.seconds,
            "newton_vs_sklearn": sk_seconds / new.seconds, "newton_iterations": new.iterations,
            "grad_norm": new.grad_l2, "certified_gap": new.certified_gap, **curv}
        s = summary[f"{wd:g}"]
        print(f"wd {wd:g}  ratios: before / new = {s['newton_vs_lbfgs']:.1f}x, scikit-learn / "
              f"new = {s['newton_vs_sklearn']:.1f}x (targets >= 5x)")
        print(f"wd {wd:g}  newton: {new.iterations} iterations, |grad| = {new.grad_l2:.2e}, "
              f"certified gap {new.certified_gap:.2e}; L = {curv['L']:.6g}, mu = {curv['mu']:g}, "
              f"L/mu = {curv['condition_number']:.6g}, Boehning bound {curv['boehning_bound']:.6g}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench_optimum.csv", rows, list(rows[0]))
    write_json(out / "bench_optimum.json", {"rows": rows, "summary": summary, "n": N,
                                            "torch": torch.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
