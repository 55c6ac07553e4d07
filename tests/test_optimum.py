"""The optimum of the convex problem against scikit-learn, and the `optimum` command."""

import json

import numpy as np
import pytest
import torch
from conftest import write_idx_set
from sklearn.linear_model import LogisticRegression

from stochopt.cli import main
from stochopt.data import Split
from stochopt.optimum import cached_optimum, objective_and_gradient, solve


@pytest.fixture(scope="module")
def subset(split):
    n = 3000  # a real subset keeps scikit-learn's tight solve to seconds
    return Split(split.X_train[:n].double(), split.y_train[:n], split.X_val.double(),
                 split.y_val, split.X_test.double(), split.y_test)


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-4])
def test_optimum_agrees_with_scikit_learn(subset, weight_decay):
    X, y = subset.X_train, subset.y_train
    ours = solve(X, y, weight_decay, gtol=1e-10, max_iter=3000)
    n = len(X)
    # sklearn minimises C * sum_i CE_i + ||W||^2 / 2; dividing by C n gives ours at C = 1/(n wd)
    sk = LogisticRegression(C=1 / (n * weight_decay), fit_intercept=False, tol=1e-12,
                            max_iter=20_000).fit(X.numpy(), y.numpy())
    W_sk = torch.from_numpy(sk.coef_.T.copy())
    f_sk, _ = objective_and_gradient(W_sk, X, y, weight_decay)
    assert abs(ours.objective - f_sk.item()) <= 1e-6 * abs(f_sk.item())
    assert ours.objective <= f_sk.item() + 1e-12  # and ours is at least as low
    acc_ours = (subset.X_test @ ours.W).argmax(1).eq(subset.y_test).double().mean().item()
    acc_sk = sk.score(subset.X_test.numpy(), subset.y_test.numpy())
    assert abs(100 * acc_ours - 100 * acc_sk) <= 0.05


def test_the_gradient_vanishes_at_the_optimum(subset):
    opt = solve(subset.X_train, subset.y_train, 1e-3, gtol=1e-8)
    _, g = objective_and_gradient(opt.W, subset.X_train, subset.y_train, 1e-3)
    assert g.abs().max().item() == opt.grad_norm <= 1e-8


def test_the_optimum_is_cached_per_weight_decay(subset):
    assert cached_optimum(subset, 1e-2, compute=False) is None
    first = cached_optimum(subset, 1e-2)
    again = cached_optimum(subset, 1e-2, compute=False)
    assert again is not None and again.objective == first.objective
    assert torch.equal(again.W, first.W.cpu())
    assert cached_optimum(subset, 2e-2, compute=False) is None


def test_optimum_command_writes_json_and_weights(tmp_path, capsys):
    data = write_idx_set(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "o"
    code = main(["optimum", "--dataset", "idx", "--data-dir", str(data), "--weight-decay",
                 "0.01", "--preset", "deepobs", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "optimum.json").read_text())
    for key in ("objective", "train_loss", "val_acc", "test_acc", "weight_decay", "bias"):
        assert key in result
    assert result["bias"] is True and result["weight_decay"] == 0.01
    W = np.load(out / "weights.npy")
    assert W.shape == (785, 10)  # bias row
    assert result["objective"] >= result["train_loss"]  # the penalty is non-negative
