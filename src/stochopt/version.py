"""stochopt's version, and the versions a result records beside its numbers."""

from __future__ import annotations

import platform

__version__ = "0.4.0"


def versions() -> dict[str, str]:
    """The versions a results folder's ``meta.json`` records: stochopt, torch, numpy, Python."""
    import numpy as np
    import torch

    return {"stochopt": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
