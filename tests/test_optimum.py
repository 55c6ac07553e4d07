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
    n = 1500  # a real subset keeps scikit-learn's tight solve (tol 1e-12) to seconds
    return Split(split.X_train[:n].double(), split.y_train[:n], split.X_val.double(),
                 split.y_val, split.X_test.double(), split.y_test)


_SKLEARN: dict = {}


def _sklearn(subset, weight_decay):
    """scikit-learn's tight solve of the same problem, once per weight decay."""
    if weight_decay not in _SKLEARN:
        X, y = subset.X_train, subset.y_train
        # sklearn minimises C sum_i CE_i + ||W||^2 / 2; dividing by C n gives ours at C = 1/(n wd)
        _SKLEARN[weight_decay] = LogisticRegression(
            C=1 / (len(X) * weight_decay), fit_intercept=False, tol=1e-12,
            max_iter=20_000).fit(X.numpy(), y.numpy())
    return _SKLEARN[weight_decay]


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-4])
def test_optimum_agrees_with_scikit_learn(subset, weight_decay):
    X, y = subset.X_train, subset.y_train
    ours = solve(X, y, weight_decay, gtol=1e-10, max_iter=3000)
    sk = _sklearn(subset, weight_decay)
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


# --------------------------------------------------------------------------- certified Newton


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-4])
def test_newton_reaches_scikit_learns_objective_to_1e_9(subset, weight_decay):
    X, y = subset.X_train, subset.y_train
    ours = solve(X, y, weight_decay)
    assert ours.solver == "newton" and ours.converged and ours.attained
    sk = _sklearn(subset, weight_decay)
    f_sk, _ = objective_and_gradient(torch.from_numpy(sk.coef_.T.copy()), X, y, weight_decay)
    assert abs(ours.objective - f_sk.item()) <= 1e-9 * abs(f_sk.item())
    # and the certificate says how close: within 1e-12 of f
    assert ours.certified_gap <= 1e-12 * ours.objective
    assert ours.certified_gap == pytest.approx(ours.grad_l2**2 / (2 * weight_decay))


def test_the_certificate_holds_at_every_iterate(subset):
    wd = 1e-3
    opt = solve(subset.X_train, subset.y_train, wd)
    assert len(opt.history) == opt.iterations + 1 >= 3
    f_final = opt.objective
    for f_k, g_k in opt.history:
        assert f_k - f_final <= g_k**2 / (2 * wd) + 1e-15


def _small_problem():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(60, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    W = 0.5 * torch.randn(20, 3, generator=g, dtype=torch.float64)
    return X, y, W


def _autograd_f(X, y, wd):
    def f(w):
        return torch.nn.functional.cross_entropy(X @ w, y) + wd / 2 * (w * w).sum()
    return f


def test_hessian_vector_products_and_curvature_equal_autograds_hessian():
    from stochopt.optimum import Problem, curvature

    X, y, W = _small_problem()
    wd = 1e-2
    H = torch.autograd.functional.hessian(_autograd_f(X, y, wd), W).reshape(60, 60)
    problem = Problem(X, y, wd, n_classes=3)
    _, _, P = problem.value_grad(W)
    V = torch.randn(20, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.allclose(problem.hvp(P, V), (H @ V.reshape(-1)).reshape(20, 3), atol=1e-13)
    eig = torch.linalg.eigvalsh(H)
    c = curvature(X, y, W, wd)
    assert abs(c["L"] - eig[-1].item()) <= 1e-8
    assert abs(c["mu"] - eig[0].item()) <= 1e-10  # exactly wd: softmax's shift invariance
    assert c["boehning_bound"] >= eig[-1].item()
    assert c["boehning_bound"] == pytest.approx(
        torch.linalg.eigvalsh(X.T @ X)[-1].item() / (2 * 60) + wd)


def test_the_sparse_path_equals_the_plain_formulas_and_autograd():
    from stochopt.optimum import Problem

    X, y, W = _small_problem()
    X[X < 0.7] = 0  # 70% zeros: the CSR path
    problem = Problem(X, y, 1e-2, n_classes=3)
    assert problem.X64.sparse and problem.X32.sparse
    f, G, P = problem.value_grad(W)
    f_ref, G_ref = objective_and_gradient(W, X, y, 1e-2)
    assert f == pytest.approx(f_ref.item(), abs=1e-14) and torch.allclose(G, G_ref, atol=1e-14)
    H = torch.autograd.functional.hessian(_autograd_f(X, y, 1e-2), W).reshape(60, 60)
    V = torch.randn(20, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(problem.hvp(P, V), (H @ V.reshape(-1)).reshape(20, 3), atol=1e-13)
    # the float32 products CG uses: float32 rounding, no more
    assert torch.allclose(problem.hvp(P, V, exact=False), problem.hvp(P, V), atol=1e-6)


def test_at_weight_decay_0_no_minimiser_is_claimed(subset):
    opt = solve(subset.X_train, subset.y_train, 0.0, max_iter=50)
    assert opt.solver == "lbfgs" and opt.attained is False and opt.certified_gap is None


def test_f_best_below_the_bound_is_negative_and_labelled(tmp_path, capsys, monkeypatch):
    """At weight decay 0, a run that goes below the solver's best value shows a negative
    f - f_best in results.csv, labelled as an upper bound in the report and the figure."""
    import csv

    from stochopt import optimum

    def stopped_at_zero(X, y, wd, n_classes=None):  # stopped at W = 0: f(0) = log 10 >= f_inf
        W = torch.zeros(X.shape[1], n_classes or 10, dtype=torch.float64)
        f, g = objective_and_gradient(W, X.double(), y, wd)
        return optimum.Optimum(W, f.item(), g.abs().max().item(), 0, 0.0, attained=False,
                               converged=False, solver="lbfgs")

    monkeypatch.setattr(optimum, "lbfgs", stopped_at_zero)
    data = write_idx_set(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "o"
    code = main(["compare", "--optimizers", "sgd", "--batch-size", "16", "--epochs", "6",
                 "--dataset", "idx", "--data-dir", str(data), "--optimum", "solve",
                 "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["f_star_attained"] for r in rows} == {"false"}
    assert float(rows[-1]["suboptimality"]) < 0
    assert "f - f_best (upper bound)" in (out / "report.md").read_text()
    assert "no minimiser" in (out / "report.md").read_text()


def test_decoupled_weight_decay_gets_no_suboptimality(tmp_path, capsys):
    import csv

    data = write_idx_set(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "o"
    code = main(["compare", "--optimizers", "adamw,momentum", "--weight-decay", "0,0.01",
                 "--batch-size", "40", "--epochs", "1", "--dataset", "idx", "--data-dir",
                 str(data), "--optimum", "solve", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = {(r["optimizer"], r["weight_decay"]): r for r in
            csv.DictReader((out / "results.csv").open())}
    assert rows[("adamw", "0.01")]["suboptimality"] == ""
    assert rows[("adamw", "0.01")]["f_star_attained"] == ""
    assert rows[("adamw", "0.0")]["suboptimality"] != ""
    assert rows[("momentum", "0.01")]["f_star_attained"] == "true"
    assert "Why is f - f* empty for some runs?" in (out / "report.md").read_text()


def test_optimum_json_reports_the_certificate_and_the_curvature(tmp_path, capsys):
    data = write_idx_set(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "o"
    assert main(["optimum", "--dataset", "idx", "--data-dir", str(data), "--weight-decay",
                 "0.01", "--out", str(out)]) == 0
    r = json.loads((out / "optimum.json").read_text())
    assert r["attained"] is True and r["converged"] is True and r["solver"] == "newton"
    assert r["certified_gap"] == pytest.approx(r["grad_norm"] ** 2 / (2 * 0.01))
    assert r["certified_gap"] <= 1e-12 * r["objective"]
    assert r["mu"] == 0.01 and r["L"] >= r["mu"]
    assert r["condition_number"] == pytest.approx(r["L"] / r["mu"])
    assert r["L"] <= r["boehning_bound"]
    k = r["condition_number"]
    assert r["heavy_ball_rate"] == pytest.approx((k**0.5 - 1) / (k**0.5 + 1))
    assert r["gd_rate"] == pytest.approx((k - 1) / (k + 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_solver_gives_the_same_numbers_on_cuda(subset):
    cpu = solve(subset.X_train, subset.y_train, 1e-3)
    gpu = solve(subset.X_train.cuda(), subset.y_train.cuda(), 1e-3)
    assert abs(cpu.objective - gpu.objective) <= 1e-10
    assert (cpu.W - gpu.W.cpu()).abs().max().item() <= 1e-8


def test_the_report_sets_full_batch_runs_beside_the_theoretical_rates(tmp_path, capsys):
    import re

    from stochopt.data import load_split
    from stochopt.optimum import rates

    data = write_idx_set(tmp_path / "d", n_train=200, n_test=50)
    out = tmp_path / "o"
    code = main(["compare", "--optimizers", "sgd", "--lr", "0.5", "--schedule", "constant",
                 "--batch-size", "160", "--epochs", "4", "--weight-decay", "0.01",
                 "--dataset", "idx", "--data-dir", str(data), "--optimum", "solve", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    opt = cached_optimum(load_split(data, "idx"), 0.01, compute=False)
    L = opt.curvature["L"]
    text = (out / "report.md").read_text()
    assert "How fast can full-batch methods go?" in text
    assert f"L = {L:.4g} and mu = 0.01" in text
    # the rates hold near W*, where L was measured: said so, not called guaranteed
    assert "guarantee" not in text.replace("not guarantees from the start", "")
    assert "Near W*, on the quadratic model" in text
    contraction = float(re.search(r"optimal step 2/\(L\+mu\) contracts f - f\* by ([\d.]+)",
                                  text.replace("\n", " ")).group(1))
    assert contraction == pytest.approx(rates(L, 0.01)["gd_rate"] ** 2, rel=1e-5)
