"""A grid at once: ``SoftmaxRegressionCV`` (the whole 8-point grid of lr x weight decay
trained as one batch of models on each fold) against scikit-learn's
``GridSearchCV(SoftmaxRegression(), ...)`` (one fit per grid point and fold) over the same
grid, folds and refit, on scikit-learn's digits; alternated, medians of --repeats.
Target: at least 4x.

    python benchmarks/bench_cv.py [--repeats 3] [--out benchmarks/results] [--tiny]

Nothing here is a test: timings vary with the machine's load; compare the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from stochopt.estimator import SoftmaxRegression, SoftmaxRegressionCV
from stochopt.files import write_csv, write_json

LRS, WDS = [1e-3, 3e-3, 1e-2, 3e-2], [0.0, 1e-4]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tiny", action="store_true", help="2 epochs, one repeat")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    X, y = load_digits(return_X_y=True)
    X = X / 16
    epochs, repeats = (2, 1) if args.tiny else (50, args.repeats)
    folds = StratifiedKFold(3)
    runs = {
        "SoftmaxRegressionCV (grid at once)": lambda: SoftmaxRegressionCV(
            lrs=LRS, weight_decays=WDS, cv=3, epochs=epochs).fit(X, y),
        "GridSearchCV(SoftmaxRegression)": lambda: GridSearchCV(
            SoftmaxRegression(epochs=epochs), {"lr": LRS, "weight_decay": WDS}, cv=folds,
            scoring="neg_log_loss").fit(X, y),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    chosen = {}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            fitted = run()
            times[name].append(time.perf_counter() - t0)
            chosen[name] = (getattr(fitted, "lr_", None) or fitted.best_params_["lr"],
                            getattr(fitted, "weight_decay_", None)
                            if hasattr(fitted, "lr_") else fitted.best_params_["weight_decay"])
    rows = [{"what": name, "seconds": statistics.median(t), "chosen": str(chosen[name]),
             "all": " ".join(f"{x:.2f}" for x in t)} for name, t in times.items()]
    ratio = rows[1]["seconds"] / rows[0]["seconds"]
    for r in rows:
        print(f"{r['what']:<36} {r['seconds']:8.2f} s  chose (lr, wd) {r['chosen']}  ({r['all']})")
    print(f"{'GridSearchCV / SoftmaxRegressionCV (target >= 4x)':<36} {ratio:8.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "bench_cv.csv", rows, ["what", "seconds", "chosen", "all"])
    write_json(out / "bench_cv.json", {"rows": rows, "ratio": ratio, "tiny": args.tiny})
    return 0


if __name__ == "__main__":
    sys.exit(main())
