"""Data sets beyond MNIST's four IDX files, as the same :class:`~stochopt.data.split.Split`.

    --dataset digits          scikit-learn's bundled 8x8 digits (offline), pixels / 16
    --dataset npz:PATH        arrays X, y (and optionally X_test, y_test)
    --dataset svmlight:PATH   LIBSVM format (scikit-learn's reader), as benchopt uses

The split follows the exercise's recipe: indices shuffled by numpy's seed 2000, the first
``val_fraction`` validation, the rest training. When the file brings no test set, the next
``val_fraction`` of the shuffled indices is the test set. Pixels are scaled for the image
data sets only; ``standardize`` centres and scales every feature by the training part's
mean and standard deviation (for the others). Labels may be any values: they are numbered
in sorted order, and ``Split.classes`` keeps them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import StochoptError
from .split import SPLIT_SEED, Split, exercise_split_indices

KINDS = ("digits", "npz", "svmlight")


def is_array_dataset(spec: str) -> bool:
    return spec == "digits" or spec.split(":", 1)[0] in ("npz", "svmlight")


def _sklearn_datasets():
    """scikit-learn's readers, or one line saying how to install them."""
    try:
        import sklearn.datasets
    except ImportError:
        raise StochoptError("--dataset digits and svmlight:PATH need scikit-learn: "
                            "pip install -e \".[sklearn]\"") from None
    return sklearn.datasets


DIGITS_SHAPE = (1797, 65)  # the bundled file: 1,797 images of 64 pixels, then the label


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (pixels 0-16, labels), read straight from the file it
    bundles, ``sklearn/datasets/data/digits.csv.gz``, without importing scikit-learn: its
    import (scipy.stats and pandas with it) took 1.8-2.1 s of every digits command, the
    reading 14 ms. Through ``load_digits`` if the file is not there or not that table."""
    spec = importlib.util.find_spec("sklearn")  # finds the package, runs none of it
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
        except (OSError, ValueError, EOFError):
            table = None
        if table is not None and table.shape == DIGITS_SHAPE:
            return table[:, :-1], table[:, -1].astype(np.int64)
    return _sklearn_datasets().load_digits(return_X_y=True)


def _read(spec: str) -> dict[str, np.ndarray]:
    """The arrays a spec names (the digits' pixels scaled to [0, 1])."""
    kind, _, path = spec.partition(":")
    if kind == "digits":
        X, y = _digits()
        return {"X": X / 16.0, "y": y}
    if not path:
        raise StochoptError(f"--dataset {kind}: needs a file, as {kind}:PATH")
    if not Path(path).is_file():
        raise StochoptError(f"--dataset {spec}: no such file")
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise ValueError("it holds one array, not named arrays X and y")
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            # a damaged archive fails in zipfile's or numpy's own way: one line either way
            raise StochoptError(f"--dataset {spec} is not a readable .npz file "
                                f"({' '.join(str(e).split()) or type(e).__name__})") from None
        missing = {"X", "y"} - set(arrays)
        if missing:
            raise StochoptError(f"--dataset {spec} has no array {', '.join(sorted(missing))}; "
                                "it needs X and y (and optionally X_test, y_test)")
        if ("X_test" in arrays) != ("y_test" in arrays):
            raise StochoptError(f"--dataset {spec} has one of X_test and y_test; give both")
        return arrays
    load_svmlight_file = _sklearn_datasets().load_svmlight_file
    try:
        X, y = load_svmlight_file(path)
    except (OSError, ValueError) as e:
        raise StochoptError(f"--dataset {spec} is not in LIBSVM (svmlight) format ({e})"
                            ) from None
    return {"X": X.toarray(), "y": y}


def _check(name: str, X: np.ndarray, y: np.ndarray, spec: str) -> tuple[np.ndarray, np.ndarray]:
    if X.dtype == object or y.dtype == object:
        raise StochoptError(f"--dataset {spec}: {name} is ragged or not numeric")
    if X.dtype.kind not in "iuf":  # complex too: its imaginary part would be dropped
        raise StochoptError(f"--dataset {spec}: {name} holds {X.dtype} values, not real "
                            "numbers")
    if X.ndim != 2:
        raise StochoptError(f"--dataset {spec}: {name} must be 2-D (samples x features), "
                            f"got shape {X.shape}")
    y = np.ravel(y)
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise StochoptError(f"--dataset {spec}: the labels of {name} hold NaN")
    if len(X) != len(y):
        raise StochoptError(f"--dataset {spec}: {name} has {len(X)} rows but its labels "
                            f"{len(y)}; they must be of the same length")
    if not np.isfinite(X).all():
        raise StochoptError(f"--dataset {spec}: {name} holds NaN or infinite values")
    return X.astype(np.float64), y


def load_array_split(spec: str, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, bias: bool = False,
                     val_fraction: float = 0.2, standardize: bool = False) -> Split:
    """The Split of ``digits``, ``npz:PATH`` or ``svmlight:PATH`` (see the module)."""
    if spec.split(":", 1)[0] not in KINDS:
        raise StochoptError(f"unknown dataset {spec!r}; choose mnist, idx, digits, npz:PATH "
                            "or svmlight:PATH")
    arrays = _read(spec)
    X, y = _check("X", arrays["X"], arrays["y"], spec)
    has_test = "X_test" in arrays
    if has_test:
        X_test, y_test = _check("X_test", arrays["X_test"], arrays["y_test"], spec)
        if X_test.shape[1] != X.shape[1]:
            raise StochoptError(f"--dataset {spec}: X_test has {X_test.shape[1]} features, X "
                                f"{X.shape[1]}")
    classes = np.unique(y)
    if len(classes) == 0:
        raise StochoptError(f"--dataset {spec}: X holds no samples")
    if len(classes) < 2:
        raise StochoptError(f"--dataset {spec}: every label is {classes[0]!r}; a classifier "
                            "needs at least 2 classes")
    # the exercise's recipe: a seeded shuffle, the first val_fraction for validation
    rest, val = exercise_split_indices(len(X), val_fraction)
    if not has_test:  # the next val_fraction of the shuffled indices
        test, rest = rest[:len(val)], rest[len(val):]
        X_test, y_test = X[test], y[test]
    train = rest
    if len(train) == 0:
        raise StochoptError(f"--dataset {spec}: too few samples ({len(X)}) to split")
    unknown = np.setdiff1d(y_test, classes)
    if len(unknown):
        raise StochoptError(f"--dataset {spec}: the test labels {unknown!r} are not among the "
                            "training labels")
    parts = {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": (X_test, y_test)}
    if standardize:
        mean, sd = X[train].mean(0), X[train].std(0)
        sd[sd == 0] = 1.0  # a constant feature stays 0
        parts = {k: ((a - mean) / sd, b) for k, (a, b) in parts.items()}
    tensors: dict[str, Any] = {}
    for part, (Xp, yp) in parts.items():
        Xt = torch.as_tensor(Xp, dtype=dtype, device=device)
        if not bool(Xt.isfinite().all()):  # finite in float64, beyond float32's range
            raise StochoptError(f"--dataset {spec}: X holds values beyond {dtype}'s range "
                                f"(|x| > {torch.finfo(dtype).max:.3g}); rescale them or use "
                                "--dtype float64")
        if bias:
            Xt = torch.cat([Xt, torch.ones(len(Xt), 1, dtype=dtype, device=device)], 1)
        tensors[f"X_{part}"] = Xt.contiguous()
        tensors[f"y_{part}"] = torch.as_tensor(np.searchsorted(classes, yp), device=device)
    side = math.isqrt(X.shape[1])
    source = {"dataset": spec, "val_fraction": val_fraction, "split_seed": SPLIT_SEED,
              "bias": bias, "standardize": standardize,
              "md5": {k: hashlib.md5(np.ascontiguousarray(a)).hexdigest()
                      for k, a in sorted(arrays.items())}}
    return Split(**tensors, name=spec, source=source, n_classes=len(classes),
                 image_shape=(side, side) if side * side == X.shape[1] else None,
                 classes=[c.item() for c in classes])
