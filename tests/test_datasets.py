"""Data sets beyond MNIST from the command line: scikit-learn's digits, npz and svmlight
files, split by the exercise's recipe, with figures that fit the data, and one clear line
for every bad file."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_digits

from stochopt.cli import main
from stochopt.data import exercise_split_indices, load_split
from stochopt.errors import StochoptError

QUIET = ["--quiet", "--optimum", "skip"]


def test_digits_compare_trains_every_seed_and_draws_8x8_weight_images(tmp_path):
    out = tmp_path / "digits"
    assert main(["compare", "--dataset", "digits", "--epochs", "3", "--seeds", "0,1",
                 "--out", str(out), *QUIET]) == 0
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 6 and {r["status"] for r in runs} == {"ok"}
    assert all(float(r["final_val_acc"]) > 90 for r in runs if r["optimizer"] != "adam")
    assert (out / "weights_adam.png").stat().st_size > 1000
    split = load_split(dataset="digits")
    n = len(load_digits().target)
    assert len(split.X_val) == round(0.2 * n) == len(split.X_test)
    assert len(split.X_train) == n - 2 * round(0.2 * n)
    assert split.image_shape == (8, 8) and split.n_classes == 10
    assert float(split.X_train.max()) == 1.0  # pixels / 16


def test_digits_are_scikit_learns_bundled_digits_read_without_importing_it(monkeypatch):
    from stochopt.data import arrays

    X, y = load_digits(return_X_y=True)
    split = load_split(dataset="digits", dtype=torch.float64)
    rest, val = exercise_split_indices(len(X))
    test, train = rest[:len(val)], rest[len(val):]  # the recipe's test: the next fifth
    # the Split's rows are scikit-learn's own pixels / 16 and labels, in the recipe's order
    for part, index in (("train", train), ("val", val), ("test", test)):
        np.testing.assert_array_equal(getattr(split, f"X_{part}").numpy(), X[index] / 16.0)
        np.testing.assert_array_equal(getattr(split, f"y_{part}").numpy(), y[index])
    # where the bundled file is not what it was, scikit-learn's reader gives the same arrays
    monkeypatch.setattr(arrays, "DIGITS_SHAPE", (1, 1))
    X2, y2 = arrays._digits()
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    # and no import of scikit-learn's datasets (nor what it imports) on the way
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now raises
    X3, y3 = arrays._digits()
    np.testing.assert_array_equal(X3, X)
    np.testing.assert_array_equal(y3, y)
    with pytest.raises(StochoptError, match="need scikit-learn"):
        arrays._sklearn_datasets()  # the block holds: the path above did not go through it


def test_npz_with_its_own_test_set_and_string_labels(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    names = np.where(y == 1, "benign", "malignant")
    path = tmp_path / "bc.npz"
    np.savez(path, X=X[:400], y=names[:400], X_test=X[400:], y_test=names[400:])
    split = load_split(dataset=f"npz:{path}", standardize=True)
    train, val = exercise_split_indices(400)
    assert len(split.X_test) == len(X) - 400
    assert (len(split.X_train), len(split.X_val)) == (len(train), len(val))
    assert split.classes == ["benign", "malignant"] and split.image_shape is None
    mean = split.X_train.double().mean(0)
    assert float(mean.abs().max()) < 1e-5  # standardized by the training part
    out = tmp_path / "train"
    assert main(["train", "--dataset", f"npz:{path}", "--standardize", "--optimizer", "adam",
                 "--lr", "0.01", "--epochs", "10", "--out", str(out), *QUIET]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc"] > 90
    assert not (out / "weights.png").exists()  # 30 features are not an image


def test_svmlight_file_trains_like_its_dense_npz(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    dump_svmlight_file(X, y, str(tmp_path / "bc.svm"))
    np.savez(tmp_path / "bc.npz", X=X, y=y)
    a = load_split(dataset=f"svmlight:{tmp_path / 'bc.svm'}", standardize=True)
    b = load_split(dataset=f"npz:{tmp_path / 'bc.npz'}", standardize=True)
    assert (a.X_train - b.X_train).abs().max() < 1e-5 and (a.y_test == b.y_test).all()


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.array([[1.0, 2.0], [3.0, np.nan], [0, 1], [1, 0], [2, 2]]),
      "y": np.array([0, 1, 0, 1, 0])}, "NaN or infinite"),
    ({"X": np.ones((5, 2)), "y": np.zeros(5)}, "at least 2 classes"),
    ({"X": np.ones((5, 2)), "y": np.array([0, 1, 0])}, "must be of the same length"),
    ({"X": np.array([["a", "b"]] * 5), "y": np.array([0, 1, 0, 1, 0])}, "not real numbers"),
    ({"X": np.ones((5, 2))}, "has no array y"),
])
def test_a_bad_npz_is_one_line_and_exit_code_2(tmp_path, capsys, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    code, err = _err(capsys, ["train", "--dataset", f"npz:{path}", "--out", str(out),
                              *QUIET])
    assert code == 2 and message in err and err.count("\n") == 0, err
    assert not out.exists()


def test_ragged_wrong_format_and_missing_files_are_one_line(tmp_path, capsys):
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, X=np.array([[1.0], [1.0, 2.0]], dtype=object), y=np.array([0, 1]))
    (tmp_path / "text.npz").write_text("not an npz")
    (tmp_path / "bad.svm").write_text("this is: not svmlight\n")
    for spec, message in ((f"npz:{ragged}", "not a readable .npz"),
                          (f"npz:{tmp_path / 'text.npz'}", "not a readable .npz"),
                          (f"svmlight:{tmp_path / 'bad.svm'}", "not in LIBSVM"),
                          (f"npz:{tmp_path / 'none.npz'}", "no such file"),
                          ("csv:x.csv", "is not one of mnist, idx, digits")):
        code, err = _err(capsys, ["train", "--dataset", spec, "--out", str(tmp_path / "o"),
                                  *QUIET])
        assert code == 2 and message in err and err.count("\n") == 0, (spec, err)


def test_optimum_and_noise_scale_commands_work_on_digits(tmp_path, capsys, monkeypatch):
    import warnings

    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("STOCHOPT_CACHE", str(tmp_path / "cache"))
    wd = 1e-3
    assert main(["optimum", "--dataset", "digits", "--weight-decay", str(wd)]) == 0
    f_star = json.loads(capsys.readouterr().out.split("\n", 1)[1])["objective"]
    split = load_split(dataset="digits")
    X, y = split.X_train.double().numpy(), split.y_train.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(C=1 / (len(X) * wd), fit_intercept=False, tol=1e-12,
                                 max_iter=20_000).fit(X, y)
    P = ref.predict_log_proba(X)
    f_ref = -P[np.arange(len(y)), y].mean() + wd / 2 * (ref.coef_**2).sum()
    assert f_star == pytest.approx(f_ref, rel=1e-9) and f_star <= f_ref + 1e-12
    assert main(["noise-scale", "--dataset", "digits"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(X)
