"""Figures written two at a time (a forked child draws about half of them): the same files
as one at a time, drawn by two processes, and every error raised here as if this process
had drawn the figure."""

import errno
import os

import matplotlib.pyplot as plt
import pytest
from conftest import fail_renames_to

from stochopt import files
from stochopt.errors import StochoptError
from stochopt.files import Drawing, save_figures

needs_fork = pytest.mark.skipif(not files._can_fork(), reason="no fork here (one core, or "
                                "not Linux): the figures are drawn one at a time")


def _drawings(out, pids, fail=None):
    """Four figures of 3, 1, 1 and 1 panels; each notes which process drew it."""
    def draw(n, panels):
        def build():
            (pids / f"{n}.pid").write_text(str(os.getpid()))
            if n == fail:
                raise fail_with
            fig, axes = plt.subplots(1, panels, squeeze=False, figsize=(1.5 * panels, 1.5))
            for i, ax in enumerate(axes[0]):
                ax.plot(range(n + i + 2), marker="o")
                ax.set_title(f"figure {n}, panel {i}")
            return fig
        return build

    fail_with = None
    if isinstance(fail, tuple):
        fail, fail_with = fail
    return [Drawing(out / f"f{n}.png", draw(n, panels), panels)
            for n, panels in enumerate((3, 1, 1, 1))]


@needs_fork
def test_two_processes_write_the_same_figures_as_one(tmp_path, monkeypatch):
    one, two, pids1, pids2 = (tmp_path / d for d in ("one", "two", "pids1", "pids2"))
    for d in (one, two, pids1, pids2):
        d.mkdir()
    save_figures(_drawings(two, pids2))
    with monkeypatch.context() as m:
        m.setattr(files, "_can_fork", lambda: False)
        save_figures(_drawings(one, pids1))
    assert {p.read_text() for p in pids1.iterdir()} == {str(os.getpid())}
    drawn_by = {p.stem: p.read_text() for p in pids2.iterdir()}
    # the three-panel figure here, the three one-panel figures in the child
    assert drawn_by["0"] == str(os.getpid())
    assert {drawn_by[n] for n in "123"} - {str(os.getpid())} and len(set(drawn_by.values())) == 2
    for n in range(4):
        assert (one / f"f{n}.png").read_bytes() == (two / f"f{n}.png").read_bytes()
    assert sorted(p.name for p in two.iterdir()) == [f"f{n}.png" for n in range(4)]


@needs_fork
@pytest.mark.parametrize("error, raised, message", [
    (StochoptError("the data ran out"), StochoptError, "^the data ran out$"),
    (ValueError("a bug"), RuntimeError, "^drawing a figure failed: ValueError: a bug$"),
    (KeyboardInterrupt(), KeyboardInterrupt, None),  # Ctrl-C reaches the child too
])
def test_an_error_in_the_child_is_raised_here(tmp_path, error, raised, message):
    out, pids = tmp_path / "out", tmp_path / "pids"
    out.mkdir(), pids.mkdir()
    with pytest.raises(raised, match=message):
        save_figures(_drawings(out, pids, fail=(2, error)))
    assert (pids / "2.pid").read_text() != str(os.getpid())  # it was the child's figure
    assert (out / "f0.png").is_file()  # this process's figure is complete


@needs_fork
@pytest.mark.parametrize("failing", ["f0.png", "f3.png"])  # here; in the child
def test_a_full_disk_on_either_side_is_one_message_and_no_temporary_file(
        tmp_path, monkeypatch, failing):
    out, pids = tmp_path / "out", tmp_path / "pids"
    out.mkdir(), pids.mkdir()
    # the child has this process's memory: the patched rename too
    fail_renames_to(monkeypatch, failing, errno.ENOSPC, "No space left on device")
    with pytest.raises(StochoptError, match=f"^cannot write {out / failing}: No space left"):
        save_figures(_drawings(out, pids))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"f{n}.png" for n in range(4) if f"f{n}.png" != failing)  # the others complete


def test_without_fork_every_figure_is_drawn_here(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_can_fork", lambda: False)
    out, pids = tmp_path / "out", tmp_path / "pids"
    out.mkdir(), pids.mkdir()
    save_figures(_drawings(out, pids))
    assert {p.read_text() for p in pids.iterdir()} == {str(os.getpid())}
    assert len(list(out.glob("*.png"))) == 4
