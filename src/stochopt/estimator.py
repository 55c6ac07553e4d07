"""stochopt as a scikit-learn classifier: ``SoftmaxRegression`` (and ``SoftmaxRegressionCV``,
a whole grid trained at once on each fold).

    from stochopt import SoftmaxRegression
    clf = SoftmaxRegression(optimizer="adam", epochs=20).fit(X, y)   # any X, any labels
    clf.predict_proba(X_new), clf.coef_, clf.loss_curve_

It is a thin shell: the data become a :class:`~stochopt.data.Split` (no validation or test
part), the settings a :class:`~stochopt.config.Config`, and :func:`stochopt.fit` trains,
with the same update rules and the same loop as the command line. scikit-learn is needed
only here (``pip install -e ".[sklearn]"``).

The optimiser's own hyperparameters come as one dict, ``hyperparameters={"momentum":
0.5}``, not as keyword arguments: scikit-learn requires every parameter to be named in
``__init__`` (that is how ``get_params``, ``clone`` and ``GridSearchCV`` see them), while the
set of hyperparameters depends on the optimiser and grows with the registry. A dict keeps
the signature fixed, and ``GridSearchCV`` searches it like any other parameter.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .config import Config, FStar
from .data import Split
from .errors import StochoptError
from .model import log_softmax, softmax
from .train import fit as train

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _tensor(X, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Dense rows as a tensor on the device; a scipy sparse matrix as a sparse (COO) tensor,
    never densified whole: the loop gathers a mini-batch's rows and densifies only those."""
    if sp.issparse(X):
        X = sp.coo_matrix(X)
        indices = torch.from_numpy(np.vstack([X.row, X.col]).astype(np.int64))
        return torch.sparse_coo_tensor(indices, torch.from_numpy(X.data), size=X.shape,
                                       dtype=dtype, device=device).coalesce()
    return torch.as_tensor(np.array(X, copy=True), dtype=dtype, device=device)


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression fitted by one of stochopt's optimisers.

    Parameters mirror the command line: ``optimizer`` (any of ``stochopt.RULES``), ``lr``
    (None: the optimiser's default), ``batch_size`` (capped at the number of samples),
    ``schedule`` and ``lr_decay`` (None: the optimiser's), ``weight_decay``,
    ``fit_intercept`` (a constant-1 feature whose weights are ``intercept_``),
    ``standardize`` (train on features centred and scaled by the training data's mean and
    standard deviation, as scikit-learn advises for its SGD solvers: one lr then suits data
    of any scale; ``coef_`` and ``intercept_`` are given back for the raw features, and
    ``weight_decay`` penalises the coefficients of the standardized features; sparse data
    are scaled, not centred),
    ``hyperparameters`` (the optimiser's others, a dict), ``device``, ``dtype``
    ("float32" or "float64"), ``random_state`` (the seed of the mini-batch order; an int
    gives the CLI's ``--seed``) and ``verbose`` (print the loss after every epoch).

    How long it trains follows ``SGDClassifier``: at most ``max_iter`` epochs, stopping once
    the training loss (the mean over an epoch, measured after each step) has not fallen
    below its best by more than ``tol`` for ``n_iter_no_change`` epochs in a row
    (``tol=None``: never); a ``ConvergenceWarning`` when ``max_iter`` ends the fit first.
    ``epochs`` instead trains exactly that many epochs, no test, no warning: the
    exercise's fixed budget.

    Fitted: ``classes_``, ``coef_`` (n_classes, n_features; every class has its column,
    two for a binary problem), ``intercept_`` (n_classes,), ``n_features_in_``,
    ``feature_names_in_`` (given a DataFrame), ``mean_`` and ``scale_`` (the
    standardization: zeros and ones when off), ``n_iter_`` (epochs run) and
    ``loss_curve_`` (the mean training loss of each epoch, measured after each step as
    the exercise does) and, with ``eval_every=N``, ``step_loss_curve_``: (step, training
    objective ``loss + (weight_decay/2)|W|^2`` over the whole training set, unweighted) every
    N steps and at each epoch's end, at step resolution where ``loss_curve_`` has one
    number per epoch. A diverging run raises ``ValueError`` naming its epoch.

    The defaults (Adam, lr 0.01, batch 256, standardized features, until converged) are for
    data of any scale, as a scikit-learn user expects; the exercise's momentum-SGD is
    ``optimizer="momentum", lr=None, batch_size=64, epochs=10, standardize=False``.
    ``decision_function`` of a binary problem is the logit difference
    (positive: ``classes_[1]``), as scikit-learn's binary classifiers give it.
    """

    def __init__(self, optimizer: str = "adam", lr: float | None = 0.01,
                 batch_size: int = 256, max_iter: int = 1000, tol: float | None = 1e-4,
                 n_iter_no_change: int = 5, epochs: int | None = None,
                 schedule: str | None = None, lr_decay: float | None = None,
                 weight_decay: float = 0.0, fit_intercept: bool = True,
                 standardize: bool = True, hyperparameters: dict[str, Any] | None = None,
                 device: str = "cpu", dtype: str = "float32", random_state: Any = 0,
                 verbose: int = 0, eval_every: int = 0) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.epochs = epochs
        self.schedule = schedule
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.hyperparameters = hyperparameters
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.eval_every = eval_every

    # ------------------------------------------------------------------ the boundary

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # scikit-learn's checks that this estimator fails, and why (docs/estimator.md lists them)
    EXPECTED_FAILURES: ClassVar[dict[str, str]] = {
        "check_sample_weight_equivalence_on_dense_data":
            "mini-batch SGD: weight 2 is not the same as a repeated example, whose copies "
            "fall in different mini-batches (scikit-learn lists it for SGDClassifier too)",
        "check_sample_weight_equivalence_on_sparse_data":
            "the same, on sparse input",
    }

    def _config(self, n: int, epochs: int | None = None) -> Config:
        """The run, checked: every bad setting is a ValueError saying which and why."""
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        budget = self.max_iter if epochs is None else epochs
        seed = self.random_state
        if seed is None or not isinstance(seed, (int, np.integer)):
            seed = int(check_random_state(seed).randint(2**31 - 1))
        batch = self.batch_size
        if isinstance(batch, (int, np.integer)) and batch > n:
            batch = n  # fewer samples than a batch: one full-batch step per epoch
        config = Config(optimizer=self.optimizer, lr=self.lr, batch_size=int(batch)
                        if isinstance(batch, (int, np.integer)) else batch,
                        epochs=budget, eval_every=self.eval_every,
                        schedule=self.schedule, lr_decay=self.lr_decay, seed=int(seed),
                        hyper={**(self.hyperparameters or {}),
                               "weight_decay": self.weight_decay})
        try:
            config.validate()
        except StochoptError as e:
            raise ValueError(str(e)) from None
        return config

    def _fit_scaling(self, X) -> None:
        """``mean_`` and ``scale_`` of X's columns (a constant column keeps scale 1)."""
        d = X.shape[1]
        self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        if not self.standardize:
            return
        if sp.issparse(X):
            from sklearn.utils.sparsefuncs import mean_variance_axis

            mean, var = mean_variance_axis(sp.csr_matrix(X, dtype=np.float64), axis=0)
        else:
            mean, var = np.mean(X, axis=0, dtype=np.float64), np.var(X, axis=0, dtype=np.float64)
            if self.fit_intercept:  # a shift needs an intercept to take it back
                self.mean_ = mean
        sd = np.sqrt(var)
        self.scale_ = np.where(sd > 0, sd, 1.0)

    def _features(self, X) -> torch.Tensor:
        if self.standardize:
            if sp.issparse(X):
                X = sp.csr_matrix(X).multiply(1 / self.scale_).tocsr()
            else:
                X = (X - self.mean_) / self.scale_
        Xt = _tensor(X, DTYPES[self.dtype], torch.device(self.device))
        if not self.fit_intercept:
            return Xt
        if Xt.is_sparse:
            X = sp.hstack([sp.csr_matrix(X), np.ones((X.shape[0], 1))], format="csr")
            return _tensor(X, Xt.dtype, Xt.device)
        return torch.cat([Xt, torch.ones(len(Xt), 1, dtype=Xt.dtype, device=Xt.device)], 1)

    def _split(self, X, y_index: np.ndarray, sample_weight) -> Split:
        Xt = self._features(X)
        y = torch.as_tensor(y_index, dtype=torch.int64, device=Xt.device)
        empty_X = torch.zeros(0, Xt.shape[1], dtype=Xt.dtype, device=Xt.device)
        empty_y = torch.zeros(0, dtype=torch.int64, device=Xt.device)
        weight = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            weight = torch.as_tensor(w / w.mean(), dtype=Xt.dtype, device=Xt.device)
        return Split(Xt, y, empty_X, empty_y, empty_X, empty_y, name="array",
                     source={"bias": self.fit_intercept},
                     n_classes=len(self.classes_), sample_weight=weight)

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None) -> SoftmaxRegression:
        """Train from zero until converged (at most ``max_iter`` epochs), or for exactly
        ``epochs`` epochs when given."""
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        return self._train(X, y, sample_weight, {}, self.epochs)

    def _stopping(self) -> tuple[int, float | None]:
        """``(n_iter_no_change, tol)``, checked."""
        patience, tol = self.n_iter_no_change, self.tol
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
                or patience < 1:
            raise ValueError(f"n_iter_no_change must be an integer >= 1, got {patience!r}")
        if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0 or None, got {tol!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) \
                or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        return int(patience), tol

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> SoftmaxRegression:
        """One epoch over (X, y), continuing from the weights and optimiser state so far
        (the first call needs ``classes``). The schedule restarts at every call (it is a
        function of the epoch, which partial_fit cannot know): use ``schedule="constant"``
        for the classic online setting."""
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32],
                             reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be given to the first call of partial_fit")
            self.classes_ = np.unique(classes)
            self._carry: dict[str, Any] = {}
            self._fit_scaling(X)  # the first call's: later calls train in the same space
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {classes!r} differ from the first call's "
                             f"{self.classes_!r}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"labels {unknown!r} are not in classes {self.classes_!r}")
        return self._train(X, y, sample_weight, self._carry, 1, partial=True)

    def _train(self, X, y, sample_weight, carry: dict[str, Any], epochs: int,
               partial: bool = False) -> SoftmaxRegression:
        if len(self.classes_) < 2:
            raise ValueError(f"the data hold one class only ({self.classes_[0]!r}); a "
                             "classifier needs samples of at least 2 classes")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if (sample_weight < 0).any() or sample_weight.sum() <= 0:
                raise ValueError("sample_weight must be >= 0 with a positive sum")
        patience, tol = self._stopping()
        config = self._config(X.shape[0], epochs)
        if config.estimator != "minibatch" and (sample_weight is not None or sp.issparse(X)):
            raise ValueError(f"{config.optimizer} takes neither sample weights nor sparse X; "
                             "use a mini-batch optimizer")
        if not partial:
            self._fit_scaling(X)
        split = self._split(X, np.searchsorted(self.classes_, y), sample_weight)
        if not partial:
            carry = self._carry = {}
        # SGDClassifier's test: no fall below the best loss by more than tol, patience times
        watch = epochs is None and tol is not None
        best, stale, converged = math.inf, 0, False

        def on_epoch(epoch: int, records) -> bool:
            nonlocal best, stale, converged
            loss = records[0].rows[-1]["train_loss"]
            if self.verbose:
                print(f"epoch {epoch}: loss {loss:.6f}")
            if not watch:
                return False
            stale = stale + 1 if loss > best - tol else 0
            best = min(best, loss)
            converged = stale >= patience
            return converged

        try:
            # with eval_every, the training objective at every point: f - f* with f* = 0
            zero = [FStar(0.0, attained=False)] if self.eval_every else None
            (record,) = train(config, split, f_star=zero, on_epoch=on_epoch, carry=carry)
        except StochoptError as e:
            raise ValueError(str(e)) from None
        if record.status == "diverged":
            raise ValueError(f"training diverged at epoch {record.diverged_epoch} (a "
                             "non-finite or exploding loss); use a smaller lr")
        if watch and not converged and not partial:
            warnings.warn(f"max_iter ({config.epochs} epochs) was reached before the training "
                          f"loss stopped improving by tol ({tol:g}) for {patience} epochs; "
                          "increase max_iter", ConvergenceWarning, stacklevel=3)
        W = carry["W"][0].double().cpu().numpy()  # (d [+1], C), the answering weights
        d = X.shape[1]
        # back to the raw features: X' W' + b' = X (W' / s) + (b' - (m / s) W')
        self.coef_ = W[:d].T / self.scale_
        intercept = W[d] if self.fit_intercept else np.zeros(W.shape[1])
        self.intercept_ = intercept - self.coef_ @ self.mean_
        curve = [r["train_loss"] for r in record.rows]
        self.loss_curve_ = ([*getattr(self, "loss_curve_", []), *curve] if partial else curve)
        self.n_iter_ = len(self.loss_curve_)
        if self.eval_every:  # (step, objective) at every N steps and every epoch's end
            steps = [(r["steps"], r["suboptimality"]) for r in record.timeline()]
            self.step_loss_curve_ = ([*getattr(self, "step_loss_curve_", []), *steps]
                                     if partial else steps)
        return self

    # ------------------------------------------------------------------ predicting

    def _logits(self, X) -> np.ndarray:
        """``X coef_^T + intercept_``, (n_samples, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False,
                          dtype=[np.float64, np.float32])
        return np.asarray(X @ self.coef_.T, dtype=np.float64) + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """The logits (n_samples, n_classes); for two classes their difference (n_samples,),
        positive for ``classes_[1]``."""
        Z = self._logits(X)
        return Z[:, 1] - Z[:, 0] if len(self.classes_) == 2 else Z

    def predict_log_proba(self, X) -> np.ndarray:
        return log_softmax(torch.from_numpy(self._logits(X))).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return softmax(torch.from_numpy(self._logits(X))).numpy()

    def predict(self, X) -> np.ndarray:
        Z = self._logits(X)
        return self.classes_[np.argmax(Z, axis=1)]

    def objective(self, X, y) -> float:
        """The training objective at the fitted weights: mean cross-entropy plus
        (weight_decay / 2) |W|^2 over every weight the optimiser trained (those of the
        standardized features, when ``standardize``), the intercept's too (as stochopt's
        optimum and the CLI define it)."""
        P = self.predict_log_proba(X)
        idx = np.searchsorted(self.classes_, y)
        coef = self.coef_ * self.scale_  # the trained weights, from the raw ones
        intercept = self.intercept_ + self.coef_ @ self.mean_
        penalty = float((coef**2).sum() + (intercept**2).sum())
        return float(-P[np.arange(len(idx)), idx].mean()) + self.weight_decay / 2 * penalty


def _weighted_loss(W: np.ndarray, X: torch.Tensor, y: torch.Tensor, weight: np.ndarray
                   ) -> float:
    """The weighted mean cross-entropy of the weights ``W`` (d, C) on (X, y)."""
    logp = log_softmax(X.double() @ torch.as_tensor(W, dtype=torch.float64, device=X.device))
    nll = -logp.gather(1, y.view(-1, 1)).squeeze(1).cpu().numpy()
    total = weight.sum()
    return float((weight * nll).sum() / total) if total > 0 else math.nan


class SoftmaxRegressionCV(SoftmaxRegression):
    """:class:`SoftmaxRegression` over a grid of ``lrs`` x ``weight_decays``, chosen by
    cross-validation like ``LogisticRegressionCV``: on each of the ``cv`` stratified folds
    the whole grid trains at once, as one batch of K models (one matrix product per step
    for all of them), and the grid point of lowest mean validation loss over the folds is
    refitted on all the data. The folds train ``epochs`` epochs (50 by default: one budget
    for the whole grid); ``epochs=None`` trains them ``max_iter`` epochs and the refit until
    converged. ``sample_weight`` weighs both the folds' training and their validation loss,
    as scikit-learn's searches pass it to every fold. Fitted, besides SoftmaxRegression's: ``lr_``,
    ``weight_decay_`` (the choice) and ``cv_results_`` (every grid point's mean and
    per-fold validation loss).
    """

    def __init__(self, lrs=(1e-3, 3e-3, 1e-2, 3e-2), weight_decays=(0.0, 1e-4),
                 cv: int = 5, optimizer: str = "adam", batch_size: int = 256,
                 max_iter: int = 1000, tol: float | None = 1e-4, n_iter_no_change: int = 5,
                 epochs: int | None = 50, schedule: str | None = None,
                 lr_decay: float | None = None, fit_intercept: bool = True,
                 standardize: bool = True, hyperparameters: dict[str, Any] | None = None,
                 device: str = "cpu", dtype: str = "float32", random_state: Any = 0,
                 verbose: int = 0, eval_every: int = 0) -> None:
        super().__init__(optimizer=optimizer, lr=None, batch_size=batch_size,
                         max_iter=max_iter, tol=tol, n_iter_no_change=n_iter_no_change,
                         epochs=epochs, schedule=schedule, lr_decay=lr_decay, weight_decay=0.0,
                         fit_intercept=fit_intercept, standardize=standardize,
                         hyperparameters=hyperparameters,
                         device=device, dtype=dtype, random_state=random_state,
                         verbose=verbose, eval_every=eval_every)
        self.lrs = lrs
        self.weight_decays = weight_decays
        self.cv = cv

    def fit(self, X, y, sample_weight=None) -> SoftmaxRegressionCV:
        from dataclasses import replace

        from sklearn.model_selection import StratifiedKFold

        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"the data hold one class only ({self.classes_[0]!r}); a "
                             "classifier needs samples of at least 2 classes")
        grid = [(float(lr), float(wd)) for lr in self.lrs for wd in self.weight_decays]
        if not grid:
            raise ValueError("lrs and weight_decays must each hold at least one value")
        labels = np.searchsorted(self.classes_, y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        losses = np.zeros((len(grid), self.cv))
        for k, (tr, va) in enumerate(StratifiedKFold(self.cv).split(X, labels)):
            base = self._config(len(tr), self.epochs)
            configs = [replace(base, lr=lr, hyper={**base.hyper, "weight_decay": wd})
                       for lr, wd in grid]
            self._fit_scaling(X[tr])  # each fold's own, as a pipeline's scaler
            Xv = self._features(X[va])
            Xv = Xv.to_dense() if Xv.is_sparse else Xv
            yv = torch.as_tensor(labels[va], device=Xv.device)
            split = replace(self._split(X[tr], labels[tr], None if sample_weight is None
                                        else sample_weight[tr]), X_val=Xv, y_val=yv)
            records = train(configs, split)  # the whole grid, K at once
            losses[:, k] = [np.inf if r.status != "ok" else r.rows[-1]["val_loss"]
                            if sample_weight is None else
                            _weighted_loss(r.weights, Xv, yv, sample_weight[va])
                            for r in records]
        mean = losses.mean(axis=1)
        if not np.isfinite(mean).any():
            raise ValueError("every grid point diverged; try smaller lrs")
        self.lr_, self.weight_decay_ = grid[int(np.argmin(mean))]
        self.cv_results_ = {"lr": [g[0] for g in grid], "weight_decay": [g[1] for g in grid],
                            "mean_val_loss": mean.tolist(), "val_loss": losses.tolist()}
        self.lr, self.weight_decay = self.lr_, self.weight_decay_  # the refit's settings
        try:
            return self._train(X, y, sample_weight, {}, self.epochs)
        finally:
            self.lr, self.weight_decay = None, 0.0  # parameters stay as given
