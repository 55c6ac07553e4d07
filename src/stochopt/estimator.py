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

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .config import Config
from .data import Split
from .errors import StochoptError
from .model import log_softmax, softmax
from .train import fit as train

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _tensor(X, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Dense rows as a tensor on the device; a scipy sparse matrix as a sparse (COO) tensor,
    never densified whole: the loop gathers a mini-batch's rows and densifies only those."""
    import scipy.sparse as sp

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
    ``epochs``, ``schedule`` and ``lr_decay`` (None: the optimiser's), ``weight_decay``,
    ``fit_intercept`` (a constant-1 feature whose weights are ``intercept_``),
    ``hyperparameters`` (the optimiser's others, a dict), ``device``, ``dtype``
    ("float32" or "float64"), ``random_state`` (the seed of the mini-batch order; an int
    gives the CLI's ``--seed``) and ``verbose`` (print the loss after every epoch).

    Fitted: ``classes_``, ``coef_`` (n_classes, n_features; every class has its column,
    two for a binary problem), ``intercept_`` (n_classes,), ``n_features_in_``,
    ``feature_names_in_`` (given a DataFrame), ``n_iter_`` (epochs run) and
    ``loss_curve_`` (the mean training loss of each epoch, measured after each step as
    the exercise does). A diverging run raises ``ValueError`` naming its epoch.

    The defaults (Adam, lr 0.01, 50 epochs of batch 64) are for data of any scale, as a
    scikit-learn user expects; the exercise's momentum-SGD is ``optimizer="momentum",
    lr=None, epochs=10`` (lr 0.1 suits pixels in [0, 1], not raw features in the
    thousands). ``decision_function`` of a binary problem is the logit difference
    (positive: ``classes_[1]``), as scikit-learn's binary classifiers give it.
    """

    def __init__(self, optimizer: str = "adam", lr: float | None = 0.01,
                 batch_size: int = 64, epochs: int = 50, schedule: str | None = None,
                 lr_decay: float | None = None, weight_decay: float = 0.0,
                 fit_intercept: bool = True, hyperparameters: dict[str, Any] | None = None,
                 device: str = "cpu", dtype: str = "float32", random_state: Any = 0,
                 verbose: int = 0) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.fit_intercept = fit_intercept
        self.hyperparameters = hyperparameters
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ the boundary

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # scikit-learn's checks that this estimator fails, and why (the README lists them)
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
        seed = self.random_state
        if seed is None or not isinstance(seed, (int, np.integer)):
            seed = int(check_random_state(seed).randint(2**31 - 1))
        batch = self.batch_size
        if isinstance(batch, (int, np.integer)) and batch > n:
            batch = n  # fewer samples than a batch: one full-batch step per epoch
        config = Config(optimizer=self.optimizer, lr=self.lr, batch_size=int(batch)
                        if isinstance(batch, (int, np.integer)) else batch,
                        epochs=self.epochs if epochs is None else epochs,
                        schedule=self.schedule, lr_decay=self.lr_decay, seed=int(seed),
                        hyper={**(self.hyperparameters or {}),
                               "weight_decay": self.weight_decay})
        try:
            config.validate()
        except StochoptError as e:
            raise ValueError(str(e)) from None
        return config

    def _features(self, X) -> torch.Tensor:
        Xt = _tensor(X, DTYPES[self.dtype], torch.device(self.device))
        if not self.fit_intercept:
            return Xt
        if Xt.is_sparse:
            import scipy.sparse as sp

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
                     n_classes=len(self.classes_), sample_weight=weight)

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None) -> SoftmaxRegression:
        """Train from zero for ``epochs`` epochs."""
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        return self._train(X, y, sample_weight, {}, self.epochs)

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
        config = self._config(X.shape[0], epochs)
        if config.estimator != "minibatch" and (sample_weight is not None or sp.issparse(X)):
            raise ValueError(f"{config.optimizer} takes neither sample weights nor sparse X; "
                             "use a mini-batch optimizer")
        split = self._split(X, np.searchsorted(self.classes_, y), sample_weight)
        if not partial:
            carry = self._carry = {}
        on_epoch = None
        if self.verbose:
            def on_epoch(epoch, records):
                print(f"epoch {epoch}: loss {records[0].rows[-1]['train_loss']:.6f}")
        try:
            (record,) = train(config, split, on_epoch=on_epoch, carry=carry)
        except StochoptError as e:
            raise ValueError(str(e)) from None
        if record.status == "diverged":
            raise ValueError(f"training diverged at epoch {record.diverged_epoch} (a "
                             "non-finite or exploding loss); use a smaller lr")
        W = carry["W"][0].double().cpu().numpy()  # (d [+1], C), the answering weights
        d = X.shape[1]
        self.coef_ = W[:d].T.copy()
        self.intercept_ = W[d].copy() if self.fit_intercept else np.zeros(W.shape[1])
        curve = [r["train_loss"] for r in record.rows]
        self.loss_curve_ = ([*getattr(self, "loss_curve_", []), *curve] if partial else curve)
        self.n_iter_ = len(self.loss_curve_)
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
        (weight_decay / 2) |W|^2 over every weight, the intercept's too (as stochopt's
        optimum and the CLI define it)."""
        P = self.predict_log_proba(X)
        idx = np.searchsorted(self.classes_, y)
        penalty = float((self.coef_**2).sum() + (self.intercept_**2).sum())
        return float(-P[np.arange(len(idx)), idx].mean()) + self.weight_decay / 2 * penalty


class SoftmaxRegressionCV(SoftmaxRegression):
    """:class:`SoftmaxRegression` over a grid of ``lrs`` x ``weight_decays``, chosen by
    cross-validation like ``LogisticRegressionCV``: on each of the ``cv`` stratified folds
    the whole grid trains at once, as one batch of K models (one matrix product per step
    for all of them), and the grid point of lowest mean validation loss over the folds is
    refitted on all the data. Fitted, besides SoftmaxRegression's: ``lr_``,
    ``weight_decay_`` (the choice) and ``cv_results_`` (every grid point's mean and
    per-fold validation loss).
    """

    def __init__(self, lrs=(1e-3, 3e-3, 1e-2, 3e-2), weight_decays=(0.0, 1e-4),
                 cv: int = 5, optimizer: str = "adam", batch_size: int = 64, epochs: int = 50,
                 schedule: str | None = None, lr_decay: float | None = None,
                 fit_intercept: bool = True, hyperparameters: dict[str, Any] | None = None,
                 device: str = "cpu", dtype: str = "float32", random_state: Any = 0,
                 verbose: int = 0) -> None:
        super().__init__(optimizer=optimizer, lr=None, batch_size=batch_size, epochs=epochs,
                         schedule=schedule, lr_decay=lr_decay, weight_decay=0.0,
                         fit_intercept=fit_intercept, hyperparameters=hyperparameters,
                         device=device, dtype=dtype, random_state=random_state,
                         verbose=verbose)
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
        losses = np.zeros((len(grid), self.cv))
        for k, (tr, va) in enumerate(StratifiedKFold(self.cv).split(X, labels)):
            base = self._config(len(tr))
            configs = [replace(base, lr=lr, hyper={**base.hyper, "weight_decay": wd})
                       for lr, wd in grid]
            Xv = self._features(X[va])
            split = replace(self._split(X[tr], labels[tr], None),
                            X_val=Xv.to_dense() if Xv.is_sparse else Xv,
                            y_val=torch.as_tensor(labels[va], device=Xv.device))
            records = train(configs, split)  # the whole grid, K at once
            losses[:, k] = [r.rows[-1]["val_loss"] if r.status == "ok" else np.inf
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
