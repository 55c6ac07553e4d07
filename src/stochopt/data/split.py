"""The exercise's split and batch order: train/validation/test as device tensors.

The exercise shuffles the 60,000 training images with numpy seed 2000 and holds out the
first 12,000 for validation; every epoch visits the training part in a permutation seeded
by (seed, epoch), cut into mini-batches.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import StochoptError
from .idx import N_CLASSES

SPLIT_SEED, VAL_FRACTION = 2000, 0.2  # the exercise's split: 12,000 of 60,000


def exercise_split_indices(n: int = 60_000, val_fraction: float = VAL_FRACTION
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The exercise's split: shuffle ``range(n)`` with numpy seed 2000; the first
    ``round(val_fraction * n)`` (12,000 of 60,000) indices are validation, the rest train.
    The same draws as ``np.random.seed(2000); np.random.shuffle(indices)``, without touching
    numpy's global state."""
    n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise StochoptError(f"cannot hold out {n_val} of {n} training images for validation")
    indices = np.arange(n)
    np.random.RandomState(SPLIT_SEED).shuffle(indices)
    return indices[n_val:], indices[:n_val]


def to_features(images: torch.Tensor, device: str | torch.device, dtype: torch.dtype
                ) -> torch.Tensor:
    """uint8 (N, 28, 28) -> (N, 784) in [0, 1] on ``device``, as ToTensor() and a flatten
    give: float32 ``pixel / 255`` (then cast to ``dtype``). The bytes travel and are
    gathered before the conversion, a quarter of the float32 traffic."""
    return images.reshape(len(images), -1).to(device).float().div_(255).to(dtype)


@dataclass(frozen=True)
class Split:
    """Each part of the data as one tensor on the device: X (N, d) and y (N,) int64."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "mnist"
    # where the numbers came from: the data's checksums and the split's settings (see
    # stochopt.study.folder.fingerprint); empty for a Split built by hand
    source: dict[str, Any] = field(default_factory=dict)
    n_classes: int = N_CLASSES  # labels are 0 .. n_classes - 1
    # per-example weights of the training loss (mean 1), or None: every example counts once
    sample_weight: torch.Tensor | None = None
    image_shape: tuple[int, int] | None = (28, 28)  # None: the features are not an image
    classes: list[Any] | None = None  # the original label of each class index, if not 0..C-1

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"X_{name}"), getattr(self, f"y_{name}")


def make_split(
    arrays: dict[str, np.ndarray],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    bias: bool = False,
    name: str = "mnist",
    val_fraction: float = VAL_FRACTION,
    md5: dict[str, str] | None = None,
) -> Split:
    """The exercise's train/validation/test split as device tensors.

    ``bias=True`` appends a constant-1 feature, so the last row of W is the bias. ``md5``:
    the arrays' checksums when already known (MNIST's, once its files' have passed).
    """
    def tensor(name: str, dtype: type = np.uint8) -> torch.Tensor:
        a = arrays[name]
        if a.dtype != dtype:
            return torch.from_numpy(a.astype(dtype))
        # shared, not copied: the split only reads it (each part is a new tensor), so the
        # read-only bytes of an IDX file need no writable copy (about 0.02 s of MNIST's
        # load in a fresh process)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(a))

    images, y = tensor("train_images"), tensor("train_labels", np.int64)
    train, val = (torch.from_numpy(i) for i in exercise_split_indices(len(images), val_fraction))
    # index_select copies whole rows: twice as fast as indexing for these bytes
    parts = {"train": (images.index_select(0, train), y[train]),
             "val": (images.index_select(0, val), y[val]),
             "test": (tensor("test_images"), tensor("test_labels", np.int64))}
    tensors = {}
    for part, (images_p, y_p) in parts.items():
        Xt = to_features(images_p, device, dtype)
        if bias:
            Xt = torch.cat([Xt, torch.ones(len(Xt), 1, device=device, dtype=dtype)], dim=1)
        tensors[f"X_{part}"] = Xt.contiguous()
        tensors[f"y_{part}"] = y_p.to(device)
    source = {"dataset": name, "val_fraction": val_fraction, "split_seed": SPLIT_SEED,
              "bias": bias, "md5": dict(sorted((md5 or {
                  key: hashlib.md5(np.ascontiguousarray(a)).hexdigest()
                  for key, a in arrays.items()}).items()))}
    return Split(**tensors, name=name, source=source)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device | str) -> torch.Tensor:
    """The order in which one epoch visits the n examples: a permutation seeded by
    (seed, epoch), drawn on the CPU so that every device sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def batch_order(n: int, batch_size: int, seed: int, epoch: int, device: torch.device | str
                ) -> Iterator[torch.Tensor]:
    """Index tensors of one epoch's mini-batches: :func:`epoch_order` cut into batches of
    ``batch_size``; the last, partial batch is kept."""
    return iter(epoch_order(n, seed, epoch, device).split(batch_size))
