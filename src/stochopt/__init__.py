"""stochopt: softmax regression on MNIST with stochastic optimisers written from scratch."""

__version__ = "0.1.0"

from .data import Split, load_split
from .errors import StochoptError
from .optim import OPTIMIZERS, make_optimizer
from .train import Config, History, fit

__all__ = ["OPTIMIZERS", "Config", "History", "Split", "StochoptError", "fit", "load_split",
           "make_optimizer"]
