"""The one call most users need: find (or fetch), read, check and split a data set."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import StochoptError
from .arrays import is_array_dataset, load_array_split
from .idx import MNIST_DATA_MD5, load_idx_dir, resolve_data_dir
from .split import VAL_FRACTION, Split, make_split


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
