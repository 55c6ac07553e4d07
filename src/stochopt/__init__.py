"""stochopt: softmax regression on MNIST with stochastic optimisers written from scratch."""

__version__ = "0.1.0"

from .data import Split, load_split  # noqa: E402
from .errors import StochoptError  # noqa: E402
from .optim import OPTIMIZERS, make_optimizer  # noqa: E402
from .train import Config, History, fit  # noqa: E402

__all__ = ["OPTIMIZERS", "Config", "History", "Split", "StochoptError", "fit", "load_split",
           "make_optimizer"]
