"""stochopt: softmax regression on MNIST with stochastic optimisers written from scratch."""

__version__ = "0.3.0"

from .config import Config, RunRecord
from .data import Split, load_split
from .errors import SettingError, StochoptError
from .experiment import grid, open_out, run
from .optim import RULES, make_optimizer, register
from .train import fit

__all__ = ["RULES", "Config", "RunRecord", "SettingError", "SoftmaxRegression",
           "SoftmaxRegressionCV", "Split", "StochoptError", "fit", "grid", "load_split",
           "make_optimizer", "open_out", "register", "run"]


def __getattr__(name: str):
    # the scikit-learn estimators load scikit-learn, so only when they are asked for
    if name in ("SoftmaxRegression", "SoftmaxRegressionCV"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'stochopt' has no attribute {name!r}")
