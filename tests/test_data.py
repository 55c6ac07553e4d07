"""The IDX reader, its checks, the exercise's split and the batch order."""

import gzip
import hashlib
import os
import stat

import numpy as np
import pytest
import torch
from conftest import idx_bytes, write_idx_set

from stochopt.data import (
    FILES,
    MNIST_DATA_MD5,
    batch_order,
    exercise_split_indices,
    idx,
    load_idx_dir,
    load_split,
    make_split,
    parse_idx,
    resolve_data_dir,
)
from stochopt.errors import StochoptError


def test_real_mnist_passes_every_check(split):
    assert (len(split.X_train), len(split.X_val), len(split.X_test)) == (48_000, 12_000, 10_000)
    assert split.X_train.shape[1] == 784 and split.X_train.dtype == torch.float32
    assert split.X_train.min() >= 0 and split.X_train.max() <= 1
    counts = torch.bincount(torch.cat([split.y_train, split.y_val]), minlength=10)
    # DATA.md's published label counts of the 60k training set
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_split_equals_the_exercise_recipe(data_dir):
    # the exercise's code, verbatim, against the global numpy state
    indices = list(range(60000))
    np.random.seed(2000)
    np.random.shuffle(indices)
    val_ref, train_ref = indices[:12000], indices[12000:]
    train, val = exercise_split_indices(60000)
    assert list(train) == train_ref and list(val) == val_ref

    arrays = load_idx_dir(data_dir)
    s = make_split(arrays)
    img = arrays["train_images"]
    assert torch.equal(s.X_val[5], torch.from_numpy(img[val_ref[5]].reshape(-1) / np.float32(255)))
    assert s.y_train[7].item() == arrays["train_labels"][train_ref[7]]


def _data_md5(directory):
    """Each file's MD5 over its bytes after the IDX header (4 + 4 x ndim bytes), read with
    gzip and hashlib alone."""
    found = {}
    for key, stem in FILES.items():
        path = next(p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file())
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        found[key] = hashlib.md5(raw[4 + 4 * raw[3]:]).hexdigest()
    return dict(sorted(found.items()))


def test_the_fingerprints_checksums_are_those_of_the_files_data_bytes(data_dir, split,
                                                                       tmp_path):
    """MNIST's, given instead of hashed on each load, and another data set's, hashed."""
    assert MNIST_DATA_MD5 == _data_md5(data_dir) == split.source["md5"]
    other = write_idx_set(tmp_path / "other", gz=True)
    assert load_split(other, dataset="idx").source["md5"] == _data_md5(other)


def test_plain_and_gzipped_files_read_the_same(tmp_path):
    a = load_idx_dir(write_idx_set(tmp_path / "gz", gz=True), dataset="idx")
    b = load_idx_dir(write_idx_set(tmp_path / "raw", gz=False), dataset="idx")
    for key in a:
        assert np.array_equal(a[key], b[key])


def _reject(directory, match):
    with pytest.raises(StochoptError, match=match):
        load_idx_dir(directory, dataset="idx")


def test_rejects_wrong_magic(tmp_path):
    d = write_idx_set(tmp_path, gz=False)
    raw = bytearray((d / FILES["train_labels"]).read_bytes())
    raw[2] = 0x0D  # float data, not unsigned bytes
    (d / FILES["train_labels"]).write_bytes(bytes(raw))
    _reject(d, "bad magic number")


def test_rejects_truncated_file(tmp_path):
    d = write_idx_set(tmp_path, gz=False)
    path = d / FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    _reject(d, "truncated")


def test_rejects_truncated_gzip(tmp_path):
    d = write_idx_set(tmp_path, gz=True)
    path = d / f"{FILES['test_images']}.gz"
    path.write_bytes(path.read_bytes()[:200])
    _reject(d, "damaged gzip")


def test_rejects_count_mismatch(tmp_path):
    d = write_idx_set(tmp_path, gz=False)
    (d / FILES["train_labels"]).write_bytes(idx_bytes(np.arange(59) % 10))
    _reject(d, "60 train images but 59 train labels")


def test_rejects_label_outside_range(tmp_path):
    d = write_idx_set(tmp_path, gz=False)
    labels = np.arange(60) % 10
    labels[3] = 10
    (d / FILES["train_labels"]).write_bytes(idx_bytes(labels))
    _reject(d, "label 10, outside 0..9")


def test_rejects_wrong_image_size(tmp_path):
    d = write_idx_set(tmp_path, gz=False)
    (d / FILES["test_images"]).write_bytes(idx_bytes(np.zeros((20, 28, 27))))
    _reject(d, "not 28x28")


def test_rejects_md5_mismatch_of_canonical_file(tmp_path):
    d = write_idx_set(tmp_path)  # valid IDX, but not MNIST's bytes
    with pytest.raises(StochoptError, match="does not match MNIST's checksum"):
        load_idx_dir(d, dataset="mnist")
    assert load_idx_dir(d, dataset="idx")["train_images"].shape == (60, 28, 28)


def test_rejects_missing_file(tmp_path):
    d = write_idx_set(tmp_path)
    (d / f"{FILES['test_labels']}.gz").unlink()
    _reject(d, "t10k-labels-idx1-ubyte.*not found")


def test_rejects_missing_directory(tmp_path):
    _reject(tmp_path / "nope", "does not exist")


def test_rejects_unreadable_file(tmp_path, monkeypatch):
    d = write_idx_set(tmp_path)
    path = d / f"{FILES['train_images']}.gz"
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail as it would for a user
        real = type(path).read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(type(path), "read_bytes", read_bytes)
    try:
        _reject(d, "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_parse_idx_roundtrip():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a)), a)
    with pytest.raises(StochoptError):
        parse_idx(gzip.compress(idx_bytes(a)))  # still compressed: not IDX


def test_named_directory_is_never_downloaded_into(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCHOPT_DATA", str(tmp_path / "elsewhere"))
    assert resolve_data_dir() == tmp_path / "elsewhere"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def test_batch_order_is_a_seeded_permutation_keeping_the_last_partial_batch():
    batches = list(batch_order(10, 4, seed=3, epoch=0, device="cpu"))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = torch.cat(list(batch_order(10, 4, seed=3, epoch=0, device="cpu")))
    assert torch.equal(torch.cat(batches), again)
    other_epoch = torch.cat(list(batch_order(10, 4, seed=3, epoch=1, device="cpu")))
    other_seed = torch.cat(list(batch_order(10, 4, seed=4, epoch=0, device="cpu")))
    assert not torch.equal(again, other_epoch) and not torch.equal(again, other_seed)


def test_bias_appends_a_constant_feature(tmp_path):
    s = make_split(load_idx_dir(write_idx_set(tmp_path), "idx"), bias=True)
    assert s.X_train.shape == (48, 785) and torch.all(s.X_test[:, -1] == 1)


def test_the_split_reads_its_arrays_without_a_warning_and_never_writes_into_them(tmp_path):
    import warnings

    read_only = load_idx_dir(write_idx_set(tmp_path), "idx")  # the files' own bytes
    assert not read_only["train_images"].flags.writeable
    given = {k: a.copy() for k, a in read_only.items()}  # writable: shared by the split
    before = {k: a.copy() for k, a in given.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of a tensor on read-only memory
        split = make_split(read_only)
        shared = make_split(given, bias=True)
    for s in (split, shared):  # every part is the split's own: the arrays stay as given
        for part in ("train", "val", "test"):
            getattr(s, f"X_{part}").add_(1)
            getattr(s, f"y_{part}").add_(1)
    for k, a in given.items():
        np.testing.assert_array_equal(a, before[k])
        np.testing.assert_array_equal(read_only[k], before[k])


def _read_ahead_and_wait(directory, dataset="idx"):
    idx.read_ahead(directory, dataset)
    thread, _ = idx._ahead[(directory.resolve(), dataset)]
    thread.join(timeout=60)


def test_the_arrays_read_ahead_are_the_ones_loaded_without_reading_again(tmp_path,
                                                                         monkeypatch):
    directory = write_idx_set(tmp_path / "d", seed=3)
    fresh = load_idx_dir(directory, dataset="idx")
    _read_ahead_and_wait(directory)

    def no_more_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(idx, "_read_bytes", no_more_reading)
    ahead = load_idx_dir(directory, dataset="idx")
    assert ahead.keys() == fresh.keys()
    assert all(np.array_equal(ahead[k], fresh[k]) for k in fresh)
    with pytest.raises(AssertionError, match="read again"):  # taken once: the next load reads
        load_idx_dir(directory, dataset="idx")


def test_arrays_read_ahead_for_another_folder_or_data_set_are_not_taken(tmp_path):
    guessed, asked = write_idx_set(tmp_path / "a", seed=1), write_idx_set(tmp_path / "b", seed=2)
    _read_ahead_and_wait(guessed)
    got = load_idx_dir(asked, dataset="idx")
    assert np.array_equal(got["train_images"], load_idx_dir(asked, "idx")["train_images"])
    assert not np.array_equal(got["train_images"],
                              load_idx_dir(guessed, "idx")["train_images"])
    _read_ahead_and_wait(guessed, "idx")
    with pytest.raises(StochoptError, match="does not match MNIST's checksum"):
        load_idx_dir(guessed, dataset="mnist")  # the idx read skipped MNIST's checksums


def test_a_failed_read_ahead_is_silent_and_the_load_reports_it(tmp_path, capsys, monkeypatch):
    import threading

    directory = write_idx_set(tmp_path / "d")
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b damaged")
    raised = []  # what would reach threading's hook: a traceback on stderr
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    _read_ahead_and_wait(directory)
    assert raised == [] and capsys.readouterr().err == ""
    with pytest.raises(StochoptError, match=r"t10k-labels-idx1-ubyte\.gz is a damaged gzip"):
        load_idx_dir(directory, dataset="idx")


def test_nothing_is_read_ahead_from_a_folder_without_the_four_files(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "_ahead", {})
    directory = write_idx_set(tmp_path / "d")
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    idx.read_ahead(directory, "idx")
    idx.read_ahead(tmp_path / "nowhere", "idx")
    idx.read_ahead(directory, "digits")  # not a four-file data set
    assert idx._ahead == {}
