"""Shared fixtures: the real MNIST files (``$STOCHOPT_DATA``, else ``../shared/mnist`` beside
the repository, else the user cache, fetched as ``stochopt compare`` fetches it) and small IDX
writers for the reader's unit tests."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stochopt.data import FILES, load_split, resolve_data_dir
from stochopt.data.idx import find_file
from stochopt.errors import StochoptError

REPO = Path(__file__).resolve().parents[1]


def mnist_dir(repo: Path = REPO) -> Path:
    """Where the tests find the real MNIST: ``$STOCHOPT_DATA``; else ``../shared/mnist``
    beside the repository (CI); else the user cache, fetched and checksummed exactly as the
    main job fetches it when it is missing (so at most once per machine)."""
    shared = repo.parent / "shared" / "mnist"
    if not os.environ.get("STOCHOPT_DATA") and shared.is_dir():
        return shared
    try:
        return resolve_data_dir()
    except StochoptError as e:
        pytest.fail(f"real MNIST not found: {e} (see ../shared/DATA.md)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    # session-scoped, so it is set up before the function-scoped cache isolation below and
    # sees the user's own cache
    return mnist_dir()


@pytest.fixture(scope="session")
def mirror_dir(data_dir, tmp_path_factory) -> Path:
    """The real MNIST as a download mirror serves it: the four files gzipped (the user
    cache holds them uncompressed when they came from the npm registry)."""
    folder = tmp_path_factory.mktemp("mirror")
    for stem in FILES.values():
        path = find_file(data_dir, stem)
        raw = path.read_bytes()
        (folder / f"{stem}.gz").write_bytes(raw if path.suffix == ".gz"
                                            else gzip.compress(raw, compresslevel=1))
    return folder


@pytest.fixture(scope="session")
def split(data_dir):
    return load_split(data_dir)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's cache, nor hands the tests after it the huge-page
    switch that a command run in this process sets for torch (``cli.huge_pages``)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("STOCHOPT_CACHE", str(cache / "stochopt"))
    before = os.environ.get("THP_MEM_ALLOC_ENABLE")
    yield
    if before is None:
        os.environ.pop("THP_MEM_ALLOC_ENABLE", None)
    else:
        os.environ["THP_MEM_ALLOC_ENABLE"] = before


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.tobytes()


def write_idx_set(directory: Path, n_train: int = 60, n_test: int = 20, gz: bool = True,
                  seed: int = 0) -> Path:
    """A small, valid data set in MNIST's four-file layout (not MNIST's content)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
             "train-labels-idx1-ubyte": np.arange(n_train) % 10,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
             "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for stem, array in parts.items():
        raw = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return directory


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside, the caller's given back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fail_renames_to(monkeypatch, name, code, message):
    """Every atomic write ends in a rename: make the one onto ``name`` fail as a full or
    read-only disk would."""
    real_replace = os.replace

    def failing(src, dst, *args, **kwargs):
        if str(dst).endswith(name):
            raise OSError(code, message)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
