"""stochopt as a scikit-learn classifier: scikit-learn's own estimator checks, the same numbers
as the command line, LogisticRegression's optimum, sparse = dense, partial_fit = fit, fits
that stop when converged (SGDClassifier's contract), standardization, weighted CV."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_score,
    cross_validate,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from stochopt import SoftmaxRegression
from stochopt.cli import main
from stochopt.data import epoch_order


@parametrize_with_checks([SoftmaxRegression()],
                         expected_failed_checks=lambda e: e.EXPECTED_FAILURES)
def test_scikit_learns_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's beta notice for sparse tensors
        check(estimator)


def test_coef_equals_the_command_lines_weights_for_the_same_run(split, data_dir, tmp_path):
    assert main(["train", "--optimizer", "momentum", "--batch-size", "1000", "--epochs", "2",
                 "--seed", "3", "--quiet", "--optimum", "skip", "--data-dir", str(data_dir),
                 "--out", str(tmp_path)]) == 0
    cli = np.load(tmp_path / "weights.npy")  # (784, 10)
    clf = SoftmaxRegression(optimizer="momentum", lr=None, batch_size=1000, epochs=2,
                            fit_intercept=False, standardize=False, random_state=3)
    clf.fit(split.X_train.numpy(), split.y_train.numpy())
    assert clf.coef_.shape == (10, 784) and np.abs(cli).max() > 0.01
    assert np.abs(clf.coef_.T - cli).max() <= 1e-6


def _objective_at_logistic_regressions_optimum(X, y, wd):
    """f* from scikit-learn. A 2-class softmax (W = [w0, w1], both penalised) is binary
    logistic regression on v = w1 - w0 with half the penalty: its C is 2 / (N wd)."""
    n, binary = len(X), len(np.unique(y)) == 2
    ref = LogisticRegression(C=(2 if binary else 1) / (n * wd), fit_intercept=False,
                             tol=1e-12, max_iter=10_000).fit(X, y)
    P = ref.predict_log_proba(X)
    penalty = (wd / 4 if binary else wd / 2) * (ref.coef_**2).sum()
    return -P[np.arange(n), np.searchsorted(ref.classes_, y)].mean() + penalty


@pytest.mark.parametrize("loader", [load_digits, load_breast_cancer], ids=["digits", "cancer"])
def test_full_batch_reaches_logistic_regressions_optimum_and_defaults_its_accuracy(loader):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    wd = 1e-2
    clf = SoftmaxRegression(optimizer="nesterov", lr=0.5, batch_size=len(X), epochs=500,
                            schedule="constant", weight_decay=wd, fit_intercept=False,
                            standardize=False, dtype="float64").fit(X, y)
    f_star = _objective_at_logistic_regressions_optimum(X, y, wd)
    assert clf.objective(X, y) == pytest.approx(f_star, rel=1e-6)
    # the defaults (mini-batch Adam) on raw features, against LogisticRegression's accuracy
    Xr, yr = loader(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(Xr, yr, test_size=0.25, random_state=0, stratify=yr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs on raw features warns it stopped early
        ref = LogisticRegression(max_iter=5000).fit(Xtr, ytr).score(Xte, yte)
    mine = SoftmaxRegression().fit(Xtr, ytr).score(Xte, yte)
    assert mine >= ref - 0.01


def test_sparse_input_gives_the_dense_coefficients():
    X, y = load_digits(return_X_y=True)
    X = X / 16
    dense = SoftmaxRegression(epochs=5, standardize=False).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse = SoftmaxRegression(epochs=5, standardize=False).fit(sp.csr_matrix(X), y)
    assert np.abs(sparse.coef_ - dense.coef_).max() <= 1e-6
    assert np.abs(sparse.intercept_ - dense.intercept_).max() <= 1e-6
    assert (sparse.predict(sp.csr_matrix(X)) == dense.predict(X)).all()


def test_partial_fit_over_one_epochs_batches_equals_one_epoch_of_fit():
    X, y = load_digits(return_X_y=True)
    X, B = X / 16, 100
    settings = dict(optimizer="adam", batch_size=B, schedule="constant", random_state=5,
                    dtype="float64", standardize=False)
    whole = SoftmaxRegression(epochs=1, **settings).fit(X, y)
    online = SoftmaxRegression(**settings)
    order = epoch_order(len(X), 5, 0, "cpu").numpy()  # the order fit visits them in
    for start in range(0, len(X), B):
        idx = order[start:start + B]
        online.partial_fit(X[idx], y[idx], classes=np.unique(y))
    assert np.abs(online.coef_ - whole.coef_).max() <= 1e-6
    assert online.n_iter_ == len(range(0, len(X), B)) and whole.n_iter_ == 1


def test_string_labels_binary_problems_and_fitted_attributes():
    X, y = load_breast_cancer(return_X_y=True)
    labels = np.where(y == 1, "benign", "malignant")
    clf = SoftmaxRegression(epochs=5).fit(X, labels)
    assert list(clf.classes_) == ["benign", "malignant"]
    assert clf.coef_.shape == (2, X.shape[1]) and clf.intercept_.shape == (2,)
    assert clf.decision_function(X).shape == (len(X),)
    assert set(clf.predict(X)) <= {"benign", "malignant"}
    assert np.allclose(clf.predict_proba(X).sum(1), 1)
    assert len(clf.loss_curve_) == clf.n_iter_ == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


@pytest.mark.parametrize("X, y, message", [
    (np.ones((4, 2)), np.zeros(4), "one class only"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), np.array([0, 1]), "NaN"),
    (np.ones((4, 2)), np.array([0, 1, 0]), "inconsistent numbers of samples"),
    (np.ones((4, 2)), np.array([0.5, 1.5, 0.2, 3.3]), "Unknown label type"),
])
def test_bad_input_is_one_clear_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(epochs=1).fit(X, y)


def test_bad_settings_say_which_and_why():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        SoftmaxRegression(optimizer="nope").fit(X, y)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        SoftmaxRegression(epochs=0).fit(X, y)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        SoftmaxRegression(batch_size=0).fit(X, y)
    assert SoftmaxRegression(batch_size=10**6, epochs=2).fit(X, y).n_iter_ == 2  # capped
    with pytest.raises(ValueError, match="diverged at epoch 1"):
        SoftmaxRegression(optimizer="sgd", lr=1e6, epochs=2).fit(X, y)


def test_the_cv_grid_trained_at_once_scores_as_gridsearchcv_fitting_one_by_one():
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from stochopt import SoftmaxRegressionCV

    X, y = load_digits(return_X_y=True)
    X = X / 16
    lrs, wds = [1e-3, 1e-2, 3e-2], [0.0, 1e-3]
    cv = SoftmaxRegressionCV(lrs=lrs, weight_decays=wds, cv=3, epochs=3).fit(X, y)
    gs = GridSearchCV(SoftmaxRegression(epochs=3), {"lr": lrs, "weight_decay": wds},
                      cv=StratifiedKFold(3), scoring="neg_log_loss").fit(X, y)
    ours = dict(zip(zip(cv.cv_results_["lr"], cv.cv_results_["weight_decay"], strict=True),
                    cv.cv_results_["mean_val_loss"], strict=True))
    for params, score in zip(gs.cv_results_["params"], gs.cv_results_["mean_test_score"],
                             strict=True):
        assert ours[(params["lr"], params["weight_decay"])] == pytest.approx(-score, rel=1e-5)
    assert (cv.lr_, cv.weight_decay_) == (gs.best_params_["lr"],
                                          gs.best_params_["weight_decay"])
    refit = SoftmaxRegression(epochs=3, lr=cv.lr_, weight_decay=cv.weight_decay_).fit(X, y)
    assert np.abs(refit.coef_ - cv.coef_).max() <= 1e-6
    assert cv.get_params()["lrs"] == lrs and cv.lr is None  # parameters stay as given


# ---------------------------------------------------------------- fitting until converged


def _logistic_regression_same_objective(wd: float, n: int):
    """LogisticRegression minimising what SoftmaxRegression(weight_decay=wd) minimises on n
    rows: mean cross-entropy + wd/2 |W|^2 over the standardized features' weights and the
    intercept (a constant column, penalised: fit_intercept=False), so C = 1 / (n wd)."""
    ones = FunctionTransformer(lambda X: np.hstack([X, np.ones((len(X), 1))]))
    return make_pipeline(StandardScaler(), ones,
                         LogisticRegression(C=1 / (n * wd), fit_intercept=False, tol=1e-10,
                                            max_iter=10_000))


@pytest.mark.parametrize("loader", [load_iris, load_wine, load_breast_cancer],
                         ids=["iris", "wine", "cancer"])
@pytest.mark.parametrize("scaled", [True, False], ids=["standardized", "raw"])
def test_the_defaults_converge_to_logistic_regressions_accuracy(loader, scaled):
    """5-fold cross-validated accuracy of the defaults within a point of LogisticRegression
    at the same regularisation (scikit-learn's C = 1 on the folds' 120-455 rows), without
    a ConvergenceWarning, standardized by the user or not."""
    X, y = loader(return_X_y=True)
    if scaled:
        X = StandardScaler().fit_transform(X)
    n = len(X) * 4 // 5  # a fold's training rows
    wd = 1 / n
    ref = cross_val_score(_logistic_regression_same_objective(wd, n), X, y, cv=5).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        found = cross_validate(SoftmaxRegression(weight_decay=wd), X, y, cv=5,
                               return_estimator=True)
    assert found["test_score"].mean() >= ref - 0.01
    assert all(e.n_iter_ < 1000 for e in found["estimator"])  # stopped by the test


def test_max_iter_too_small_warns_and_epochs_is_a_fixed_budget():
    X, y = load_wine(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        clf = SoftmaxRegression(max_iter=3).fit(X, y)
    assert clf.n_iter_ == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert SoftmaxRegression(epochs=3).fit(X, y).n_iter_ == 3  # the exercise's budget
        # tol=None: no test, max_iter epochs, no warning (as SGDClassifier)
        assert SoftmaxRegression(max_iter=40, tol=None).fit(X, y).n_iter_ == 40
    for bad, message in (({"n_iter_no_change": 0}, "n_iter_no_change"),
                         ({"tol": -1.0}, "tol must be"), ({"max_iter": 0}, "max_iter")):
        with pytest.raises(ValueError, match=message):
            SoftmaxRegression(**bad).fit(X, y)


def test_standardizing_equals_training_on_standardized_features():
    """coef_ and intercept_ answer for the raw features: the same predictions as a model
    trained on StandardScaler's output, and the objective in the trained coordinates."""
    X, y = load_wine(return_X_y=True)
    mine = SoftmaxRegression(epochs=20, dtype="float64").fit(X, y)
    scaler = StandardScaler().fit(X)
    theirs = SoftmaxRegression(epochs=20, dtype="float64", standardize=False).fit(
        scaler.transform(X), y)
    np.testing.assert_allclose(mine.decision_function(X),
                               theirs.decision_function(scaler.transform(X)), atol=1e-9)
    np.testing.assert_allclose(mine.scale_, scaler.scale_)
    np.testing.assert_allclose(mine.mean_, scaler.mean_)
    assert mine.objective(X, y) == pytest.approx(theirs.objective(scaler.transform(X), y),
                                                 rel=1e-12)


def test_the_cv_scores_its_folds_with_the_sample_weights():
    """Weight 0 on a tenth of the rows whose labels were scrambled: the folds' validation
    loss ignores them, so it equals a hand computation that leaves them out."""
    from stochopt import SoftmaxRegressionCV

    X, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(0)
    noisy = rng.random(len(y)) < 0.1
    y = np.where(noisy, rng.integers(0, 3, len(y)), y)
    weight = np.where(noisy, 0.0, 1.0)
    cv = SoftmaxRegressionCV(lrs=[1e-2], weight_decays=[1e-2], cv=3, epochs=5)
    cv.fit(X, y, sample_weight=weight)
    plain = SoftmaxRegressionCV(lrs=[1e-2], weight_decays=[1e-2], cv=3, epochs=5).fit(X, y)
    by_hand = []
    for tr, va in StratifiedKFold(3).split(X, y):
        clf = SoftmaxRegression(lr=1e-2, weight_decay=1e-2, epochs=5).fit(
            X[tr], y[tr], sample_weight=weight[tr])
        keep = va[weight[va] > 0]
        by_hand.append(log_loss(y[keep], clf.predict_proba(X[keep]), labels=clf.classes_))
    np.testing.assert_allclose(cv.cv_results_["val_loss"][0], by_hand, rtol=1e-5)
    assert cv.cv_results_["val_loss"] != plain.cv_results_["val_loss"]


def test_eval_every_gives_the_training_objective_at_step_resolution():
    """step_loss_curve_: the whole training set's objective every N steps and at each
    epoch's end, recomputed here from the fitted model at the end; loss_curve_ unchanged."""
    X, y = load_digits(return_X_y=True)
    plain = SoftmaxRegression(epochs=3, batch_size=100, standardize=False).fit(X, y)
    est = SoftmaxRegression(epochs=3, batch_size=100, standardize=False, eval_every=4).fit(X, y)
    assert est.loss_curve_ == plain.loss_curve_  # evaluation changes no training number
    steps = [s for s, _ in est.step_loss_curve_]
    per_epoch = -(-len(X) // 100)
    assert steps == sorted({*range(4, 3 * per_epoch + 1, 4), per_epoch, 2 * per_epoch,
                            3 * per_epoch})
    final = log_loss(y, est.predict_proba(X))
    assert est.step_loss_curve_[-1][1] == pytest.approx(final, rel=1e-5)
    assert est.step_loss_curve_[0][1] > est.step_loss_curve_[-1][1]
