"""stochopt: softmax regression on MNIST with stochastic optimisers written from scratch.

Each name below is imported from its module when first used (``stochopt.Config`` loads
:mod:`stochopt.config`), so that the command can start reading MNIST's files while torch
imports; ``from stochopt import fit`` works as it always has.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for readers, type checkers and the docs; at run time, __getattr__
    from .config import Config, RunRecord
    from .data import Split, load_split
    from .errors import SettingError, StochoptError
    from .estimator import SoftmaxRegression, SoftmaxRegressionCV
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
# where each name lives; the scikit-learn estimators load scikit-learn, so last
_HOMES = ("errors", "version", "data", "config", "optim", "train", "study.plan",
          "study.folder", "study.experiment", "estimator")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _HOMES:
            found = import_module(f".{module}", __name__)
            if hasattr(found, name):
                return getattr(found, name)
    raise AttributeError(f"module 'stochopt' has no attribute {name!r}")
