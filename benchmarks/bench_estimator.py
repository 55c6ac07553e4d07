"""SoftmaxRegression's defaults against LogisticRegression on scikit-learn's small data sets.

5-fold cross-validated accuracy, epochs to converge and seconds, interleaved in one run:
``SoftmaxRegression(weight_decay=1/n)`` (n: a fold's training rows), scikit-learn's
``LogisticRegression()`` (C = 1: the same strength, on raw coefficients, its intercept
unpenalised) and LogisticRegression on the very objective SoftmaxRegression minimises
(standardized features, a penalised constant column, C = 1/(n wd)). Raw and standardized
inputs. Writes ``benchmarks/results/bench_estimator.{csv,json}``.

    python benchmarks/bench_estimator.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from stochopt import SoftmaxRegression

LOADERS = {"iris": load_iris, "wine": load_wine, "breast cancer": load_breast_cancer,
           "digits": load_digits}


def same_objective(wd: float, n: int):
    ones = FunctionTransformer(lambda X: np.hstack([X, np.ones((len(X), 1))]))
    return make_pipeline(StandardScaler(), ones, LogisticRegression(
        C=1 / (n * wd), fit_intercept=False, tol=1e-10, max_iter=10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rows = []
    for name, load in LOADERS.items():
        X0, y = load(return_X_y=True)
        for inputs in ("standardized", "raw"):
            X = StandardScaler().fit_transform(X0) if inputs == "standardized" else X0
            n = len(X) * 4 // 5
            models = {"SoftmaxRegression()": SoftmaxRegression(weight_decay=1 / n),
                      "LogisticRegression()": LogisticRegression(max_iter=10_000),
                      "LogisticRegression, same objective": same_objective(1 / n, n)}
            for what, model in models.items():  # interleaved: one data set at a time
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    t0 = time.perf_counter()
                    found = cross_validate(model, X, y, cv=5, return_estimator=True)
                    seconds = time.perf_counter() - t0
                epochs = [getattr(e, "n_iter_", None) for e in found["estimator"]]
                rows.append({"data": name, "inputs": inputs, "model": what,
                             "accuracy": round(100 * found["test_score"].mean(), 2),
                             "epochs": "" if epochs[0] is None or not np.isscalar(epochs[0])
                             else round(float(np.mean(epochs))),
                             "seconds": round(seconds, 2),
                             "convergence_warnings": sum(
                                 issubclass(w.category, ConvergenceWarning) for w in caught)})
                print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_estimator.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "bench_estimator.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
