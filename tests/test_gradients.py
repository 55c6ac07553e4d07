"""SVRG and SAGA: linear convergence where SGD stalls, and SAGA's residual table against a
naive per-example-gradient implementation."""

import pytest
import torch

from stochopt.data import Split
from stochopt.gradients import SAGA
from stochopt.model import SeedBatch, gradient, one_hot
from stochopt.optimum import solve
from stochopt.train import Config, fit

WD = 1e-2


@pytest.fixture(scope="module")
def small(split):
    n = 500
    d = torch.float64
    return Split(split.X_train[:n].to(d), split.y_train[:n], split.X_val[:200].to(d),
                 split.y_val[:200], split.X_test[:200].to(d), split.y_test[:200])


@pytest.fixture(scope="module")
def f_star(small):
    return solve(small.X_train, small.y_train, WD, gtol=1e-11, max_iter=3000).objective


def _run(small, f_star, name):
    config = Config(optimizer=name, lr=0.2, batch_size=10, epochs=40, schedule="constant",
                    hyper={"weight_decay": WD})
    return fit(config, small, f_star=[f_star])[0].rows[-1]["suboptimality"]


@pytest.mark.parametrize("name", ["svrg", "saga"])
def test_variance_reduction_reaches_1e_6_where_sgd_does_not(small, f_star, name):
    assert _run(small, f_star, name) < 1e-6
    assert _run(small, f_star, "sgd") > 1e-4


def test_saga_table_update_equals_naive_per_example_gradients():
    g = torch.Generator().manual_seed(0)
    n, d = 12, 5
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=g)
    W = torch.randn(d, 10, generator=g, dtype=torch.float64)
    split = Split(X, y, X, y, X, y)
    def one(A):  # one seed, one configuration: the loop's (S, M, ...) layout
        return A[None, None]

    saga = SAGA(split, one(W.T))  # estimators take W^T (S, M, C, d), classes first

    def per_example(Wi, i):
        return gradient(Wi, X[i:i + 1], y[i:i + 1])  # x_i r_i^T, d x 10

    table = [per_example(W, i) for i in range(n)]  # the naive table: n x d x 10
    for step, idx in enumerate([torch.tensor([3, 7]), torch.tensor([0, 3, 11]),
                                torch.tensor([5])]):
        W = W - 0.1 * step * torch.ones_like(W) / 7
        new = {int(i): per_example(W, int(i)) for i in idx}
        naive = sum(new[i] - table[i] for i in new) / len(idx) + sum(table) / n
        ours, Z = saga(one(W.T), idx[None], SeedBatch(X[idx][None]),
                       one_hot(y[idx], 10, X.dtype).T[None, None])
        ours, Z = ours[0, 0], Z[0, 0]
        assert torch.allclose(ours.T, naive, atol=1e-13)
        assert torch.allclose(Z.T, X[idx] @ W)
        for i in new:
            table[i] = new[i]
        assert torch.allclose(saga.mean[0, 0].T, sum(table) / n, atol=1e-13)
        P = torch.softmax(X[idx] @ W, dim=1)
        assert torch.allclose(saga.table[0, 0][:, idx].T, P - one_hot(y[idx], 10, X.dtype))
