"""stochopt: softmax regression on MNIST with stochastic optimisers written from scratch."""

from .config import Config, RunRecord
from .data import Split, load_split
from .errors import SettingError, StochoptError
from .optim import RULES, make_optimizer, register
from .study.experiment import run
from .study.folder import open_out
from .study.plan import grid
from .train import fit
from .version import __version__

__all__ = [
    "RULES",
    "Config",
    "RunRecord",
    "SettingError",
    "SoftmaxRegression",
    "SoftmaxRegressionCV",
    "Split",
    "StochoptError",
    "__version__",
    "fit",
    "grid",
    "load_split",
    "make_optimizer",
    "open_out",
    "register",
    "run",
]


def __getattr__(name: str):
    # the scikit-learn estimators load scikit-learn, so only when they are asked for
    if name in ("SoftmaxRegression", "SoftmaxRegressionCV"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'stochopt' has no attribute {name!r}")
