"""Readers that never crash: every file reader, fed what hypothesis makes up (truncated
files, wrong magic numbers, headers claiming more than there is, huge or negative
dimensions, missing arrays, object and string arrays, garbage svmlight lines, NaN), either
returns data that passes the checks or ends in the project's own one-line error; never
another exception, and never an allocation of the size a header claims before the file is
checked. ``STOCHOPT_FUZZ_EXAMPLES`` sets the examples per test (default 500: a few seconds
each)."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stochopt.data import FILES, Split, load_array_split, load_idx_dir, parse_idx, read_idx
from stochopt.errors import StochoptError

EXAMPLES = int(os.environ.get("STOCHOPT_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def one_line(error: StochoptError) -> bool:
    return "\n" not in str(error) and str(error).strip() != ""


# ------------------------------------------------------------------------------------ IDX

dims = st.integers(-(2**31), 2**31 - 1) | st.integers(0, 6)


@st.composite
def idx_files(draw) -> bytes:
    """An IDX header (often valid, sometimes not), any sizes, and some bytes after it."""
    magic = draw(st.sampled_from([b"\x00\x00\x08", b"\x00\x00\x09", b"\x01\x00\x08", b""]))
    ndim = draw(st.integers(0, 6))
    shape = draw(st.lists(dims, min_size=ndim, max_size=ndim))
    header = magic + bytes([ndim]) + struct.pack(f">{ndim}i", *shape)
    n = math.prod(shape) if all(s >= 0 for s in shape) else 0
    body = draw(st.binary(max_size=64)) if draw(st.booleans()) or n > 4096 else bytes(n)
    raw = header + body
    return raw[:draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


@FUZZ
@given(raw=st.binary(max_size=80) | idx_files())
def test_parse_idx_returns_what_the_header_says_or_one_line(raw):
    tracemalloc.start()
    try:
        array = parse_idx(raw, "fuzzed")
    except StochoptError as e:
        assert one_line(e)
    else:
        ndim = raw[3]
        shape = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
        assert array.shape == shape and array.dtype == np.uint8
        assert 4 + 4 * ndim + array.size == len(raw)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1 << 20  # a header's claimed size is never allocated


@FUZZ
@given(raw=idx_files(), gz=st.sampled_from(["plain", "gzip", "named .gz, not gzip",
                                            "truncated gzip"]))
def test_read_idx_of_any_file_returns_or_is_one_line(tmp_path, raw, gz):
    path = tmp_path / ("f.gz" if gz != "plain" else "f")
    data = {"plain": raw, "gzip": gzip.compress(raw), "named .gz, not gzip": raw,
            "truncated gzip": gzip.compress(raw)[:-5]}[gz]
    path.write_bytes(data)
    try:
        array = read_idx(path, md5="0" * 32 if len(raw) % 2 else None)
    except StochoptError as e:
        assert one_line(e)
    else:
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8


@st.composite
def idx_sets(draw):
    """Four small IDX files that are each well-formed, but may not fit together: images
    of other sizes, labels out of range, counts that differ, a file missing."""
    files = {}
    for key, stem in FILES.items():
        if draw(st.integers(0, 15)) == 0:
            continue  # missing
        n = draw(st.integers(0, 4))
        if key.endswith("images"):
            side = draw(st.sampled_from([28, 28, 28, 27, 1]))
            array = np.zeros((n, side, side), np.uint8) if draw(st.booleans()) \
                else np.zeros((n, side), np.uint8)
        else:
            array = np.array(draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)),
                             np.uint8)
            if draw(st.integers(0, 7)) == 0:
                array = array.reshape(-1, 1)
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
        files[stem] = header + array.tobytes()
    return files


@FUZZ
@given(files=idx_sets())
def test_load_idx_dir_of_any_set_returns_a_consistent_set_or_one_line(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("idx")
    for stem, raw in files.items():
        (folder / stem).write_bytes(raw)
    try:
        arrays = load_idx_dir(folder, "idx")
    except StochoptError as e:
        assert one_line(e)
    else:
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            assert images.shape[1:] == (28, 28) and labels.ndim == 1
            assert len(images) == len(labels) and (labels < 10).all()


# ------------------------------------------------------------------------------------ npz

DTYPES = [np.float64, np.float32, np.int64, np.uint8, np.bool_, np.complex128, "U3",
          "datetime64[s]"]


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    names = draw(st.sets(st.sampled_from(["X", "y", "X_test", "y_test", "other"]),
                         max_size=5))
    arrays = {}
    for name in sorted(names):
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
        if draw(st.booleans()):  # the common case: a table and its labels
            rows = draw(st.integers(0, 12))
            shape = (rows, draw(st.integers(1, 4))) if name.startswith("X") else (rows,)
        elements = None
        if dtype.kind == "f":
            elements = st.floats(allow_nan=True, allow_infinity=True, width=dtype.itemsize * 8)
        elif dtype.kind in "iu" and name.startswith("y"):
            elements = st.integers(0, 2)
        arrays[name] = draw(hnp.arrays(dtype, shape, elements=elements))
    return arrays


@FUZZ
@given(arrays=npz_contents(), damage=st.sampled_from(["none", "none", "truncated",
                                                     "pickled objects", "not a zip"]))
def test_npz_of_any_content_gives_a_checked_split_or_one_line(tmp_path_factory, arrays,
                                                              damage):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    buffer = io.BytesIO()
    if damage == "pickled objects":
        np.savez(buffer, X=np.array([[1.0, 2.0], [3.0]], dtype=object), y=np.array([0, 1]))
    else:
        np.savez(buffer, **arrays)
    raw = buffer.getvalue()
    path.write_bytes({"truncated": raw[:len(raw) // 2], "not a zip": raw[40:]}.get(damage, raw))
    try:
        split = load_array_split(f"npz:{path}", standardize=True)
    except StochoptError as e:
        assert one_line(e)
    else:
        _check_split(split)


def _check_split(split: Split) -> None:
    assert split.n_classes >= 2 and len(split.X_train) > 0
    for part in ("train", "val", "test"):
        X, y = split.part(part)
        assert X.ndim == 2 and len(X) == len(y) and bool(X.isfinite().all())
        assert bool(((y >= 0) & (y < split.n_classes)).all())


# ------------------------------------------------------------------------------ svmlight

tokens = st.one_of(
    st.builds("{}:{}".format, st.integers(-3, 12),
              st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["x", ""])),
    st.sampled_from(["#", "qid:1", ":", "1:2:3", "nan", "-", "\t"]),
    st.text(alphabet="0123456789.:-+e xq#", max_size=8),
)
svm_lines = st.builds(lambda label, rest: " ".join([label, *rest]),
                      st.sampled_from(["0", "1", "2", "-1", "1.5", "nan", "inf", "a", ""]),
                      st.lists(tokens, max_size=5))


@FUZZ
@given(lines=st.lists(svm_lines, max_size=12))
def test_svmlight_of_any_lines_gives_a_checked_split_or_one_line(tmp_path_factory, lines):
    pytest.importorskip("sklearn")
    path = tmp_path_factory.mktemp("svm") / "data.svm"
    path.write_text("\n".join(lines) + "\n")
    try:
        split = load_array_split(f"svmlight:{path}")
    except StochoptError as e:
        assert one_line(e)
    else:
        _check_split(split)


def test_the_fuzzers_would_catch_an_escape(tmp_path):
    """The properties can fail: an npz whose X is complex slips past a check that only asks
    for numbers; it is refused as not real."""
    path = tmp_path / "c.npz"
    np.savez(path, X=np.ones((6, 2), complex), y=np.arange(6) % 2)
    with pytest.raises(StochoptError, match="not real"):
        load_array_split(f"npz:{path}")
    assert Path(path).is_file()
