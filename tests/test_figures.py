"""Figures written two at a time (a forked child draws about half of them): the same files
as one at a time, drawn by two processes, and every error raised here as if this process
had drawn the figure."""

import errno
import os

import matplotlib.pyplot as plt
import numpy as np
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


# The command's drawing process (files.start_drawer), forked before torch is imported: one
# script in a fresh interpreter, as the `stochopt` command starts, through every case.
DRAWER_SCRIPT = r'''
import json, os, signal, sys, time
from functools import partial
from pathlib import Path

from stochopt import files


def draw(n, records, pids, pause=0.0):
    """A figure that notes which process drew it, and whether that process has torch."""
    pids.mkdir(exist_ok=True)
    (pids / str(n)).write_text(json.dumps([os.getpid(), "torch" in sys.modules]))
    time.sleep(pause)
    from stochopt.study import plots

    return plots.curves(records)


out = Path(sys.argv[1])
files.start_drawer()  # as the command does: first
first = files._drawer.pid if files._drawer else None
import torch  # noqa: E402,F401  (then torch, as the command imports it)

from stochopt.config import Config, RunRecord  # noqa: E402
from stochopt.errors import StochoptError  # noqa: E402
from stochopt.files import Drawing, save_figures  # noqa: E402

records = [RunRecord(Config(optimizer=o), rows=[
    {"epoch": e, "train_loss": 1 / e, "train_acc": 90 + e, "val_loss": 1.1 / e,
     "val_acc": 89 + e} for e in (1, 2, 3)]) for o in ("sgd", "adam")]


def drawings(case, n=4, pause=0.0):
    (out / case).mkdir()
    return [Drawing(out / case / f"f{i}.png", partial(draw, i, records[:1 + i % 2],
                                                      out / case / "pids", pause), 1 + i % 2)
            for i in range(n)]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


said = {"parent": os.getpid(), "first": first}
save_figures(drawings("drawer"))
said["matplotlib_here"] = "matplotlib" in sys.modules
files.stop_drawer()
said["first_alive"] = alive(first)
save_figures(drawings("here"))  # no drawing process: here and in a forked child

files._drawer = files._Drawer()  # a second one (torch is loaded now: only for the cases)
try:
    save_figures([d._replace(path=out / "missing" / "f.png") for d in drawings("error")])
except StochoptError as e:
    said["error"] = str(e)
local = lambda: partial(draw, 0, records, out / "local" / "pids")()  # noqa: E731
(out / "local").mkdir()
save_figures([Drawing(out / "local" / "f0.png", local)])  # cannot be pickled: drawn here
os.kill(files._drawer.pid, signal.SIGKILL)
save_figures(drawings("killed"))  # its process is gone: drawn here
said["killed_forgotten"] = files._drawer is None

files._drawer = files._Drawer()
second = files._drawer.pid
signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
signal.setitimer(signal.ITIMER_REAL, 1.0)  # Ctrl-C while the slow figure is drawn there
try:
    save_figures(drawings("interrupted", n=2, pause=3.0))
except KeyboardInterrupt:
    files.stop_drawer()  # what the command does on its way out: waits for the figures
    said["interrupted"] = True
said["second_alive"] = alive(second)
print(json.dumps(said))
'''


@pytest.fixture(scope="module")
def drawer_cases(tmp_path_factory):
    import json
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("drawer")
    (out / "script.py").write_text(DRAWER_SCRIPT)
    done = subprocess.run([sys.executable, str(out / "script.py"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def _drawn_by(folder):
    import json

    return {p.name: json.loads(p.read_text()) for p in (folder / "pids").iterdir()}


@needs_fork
def test_the_drawing_process_draws_without_torch_the_same_bytes_and_ends(drawer_cases):
    out, said = drawer_cases
    assert said["first"] and not said["matplotlib_here"]  # not imported by the command
    drawn_by = _drawn_by(out / "drawer")
    pids = {pid for pid, _ in drawn_by.values()}
    # the drawing process and its own child, two at a time; neither has torch
    assert len(pids) == 2 and said["parent"] not in pids and said["first"] in pids
    assert not any(torch for _, torch in drawn_by.values())
    for n in range(4):
        assert (out / "drawer" / f"f{n}.png").read_bytes() == \
            (out / "here" / f"f{n}.png").read_bytes()
    assert said["parent"] in {pid for pid, _ in _drawn_by(out / "here").values()}
    assert said["first_alive"] is False  # stopped: killed while idle, and reaped


@needs_fork
def test_an_error_in_the_drawing_process_is_the_same_one_line(drawer_cases):
    out, said = drawer_cases
    assert said["error"].startswith(f"cannot write {out / 'missing' / 'f.png'}: No such file")
    assert said["parent"] not in {pid for pid, _ in _drawn_by(out / "error").values()}


@needs_fork
def test_what_cannot_go_to_the_drawing_process_is_drawn_here(drawer_cases):
    out, said = drawer_cases
    # a local function cannot be pickled; a killed process draws nothing more
    assert [pid for pid, _ in _drawn_by(out / "local").values()] == [said["parent"]]
    assert said["parent"] in {pid for pid, _ in _drawn_by(out / "killed").values()}
    assert sorted(p.name for p in (out / "killed").glob("*.png")) == [
        f"f{n}.png" for n in range(4)]
    assert said["killed_forgotten"]


@needs_fork
def test_interrupted_while_waiting_the_figures_in_hand_are_finished(drawer_cases):
    out, said = drawer_cases
    assert said["interrupted"] and said["second_alive"] is False
    # the figures it was drawing are complete, and no temporary file is left
    for name in ("f0.png", "f1.png"):
        assert (out / "interrupted" / name).read_bytes().startswith(b"\x89PNG")
    assert not [p for p in (out / "interrupted").iterdir() if p.name.endswith(".tmp")]


def test_the_command_starts_a_drawing_process_only_for_commands_that_draw(monkeypatch):
    from stochopt import cli

    calls = []
    monkeypatch.setattr(files, "start_drawer", lambda: calls.append("start"))
    monkeypatch.setattr(files, "stop_drawer", lambda: calls.append("stop"))
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(cli, "read_ahead", lambda argv: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)
    for argv, started in ((["compare"], True), (["train", "--epochs", "1"], True),
                          (["report", "runs/x"], True), (["compare", "--help"], False),
                          (["optimum"], False), (["landscape"], False), ([], False)):
        calls.clear()
        monkeypatch.setattr(cli.sys, "argv", ["stochopt", *argv])
        assert cli.console() == 0
        assert calls == (["start", "stop"] if started else ["stop"]), argv


def test_a_drawing_process_that_cannot_start_leaves_the_figures_to_the_command(
        tmp_path, monkeypatch):
    import sys

    def no_fork():
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.delitem(sys.modules, "torch")  # as at a command's start
    monkeypatch.setattr(files, "_can_fork", lambda: True)
    monkeypatch.setattr(os, "fork", no_fork)
    files.start_drawer()
    assert files._drawer is None
    monkeypatch.undo()
    out, pids = tmp_path / "out", tmp_path / "pids"
    out.mkdir(), pids.mkdir()
    save_figures(_drawings(out, pids))
    assert len(list(out.glob("*.png"))) == 4


def _records(sub_low: float) -> list:
    """Three configurations of three seeds over 10 epochs; f - f* from 2 down to sub_low
    (below 0: the symmetric log axis and its wider tick labels)."""
    from stochopt.config import Config, FStar, RunRecord

    records = []
    for name in ("momentum", "nesterov", "adam"):
        for seed in range(3):
            rows = [{"epoch": e, "train_loss": 2 / e, "train_acc": 80 + e, "val_loss": 2.2 / e,
                     "val_acc": 79 + e, "suboptimality": 2 * (sub_low / 2) ** (e / 10)
                     if sub_low > 0 else 2 - e * (2 - sub_low) / 10} for e in range(1, 11)]
            records.append(RunRecord(Config(optimizer=name, seed=seed), rows=rows,
                                     f_star=FStar(0.25, attained=sub_low > 0)))
    return records


LANDSCAPES = [f"{kind}_{fn}" for fn in ("rosenbrock", "beale", "himmelblau", "quadratic")
              for kind in ("paths", "loss")]


@pytest.mark.parametrize("name", ["curves", "curves_log", "curves_symlog", "lr_sensitivity",
                                  "batch_sizes", "profile", "weights", "samples", *LANDSCAPES])
def test_laid_out_figures_keep_every_text_inside_and_their_panels_apart(name):
    """The figures with fixed margins (drawn once, not measured and cropped) must still fit
    their tick labels, axis labels and titles, for the widest labels they carry."""
    from stochopt.study import plots

    summary = [{"optimizer": "momentum", "batch_size": b, "lr": lr, "config": f"m{b}{lr}",
                "final_val_loss_mean": 0.3 / lr ** 0.2, "final_val_loss_ci95_low": 0.25,
                "final_val_loss_ci95_high": 0.9, "seconds_per_epoch": 1e-3 * b ** 0.5}
               for b in (32, 128, 512) for lr in (1e-3, 1e-2, 1e-1)]
    fit = {"momentum": {"points": [{"batch_size": b, "steps": 10_000 // b ** 0.5,
                                    "noise_scale_end": 300.0} for b in (32, 128, 512)],
                        "b_crit": 250.0, "s_min": 100.0, "e_min": 8000.0}}
    if name in LANDSCAPES:  # with gradient noise: the longest titles
        from stochopt import landscape

        kind, fn = name.split("_")
        land = landscape.run(fn, ["sgd", "momentum", "adam"], steps=30, noise=0.1)
        fig = (landscape.paths_figure if kind == "paths" else landscape.loss_figure)(land)
        _inside_and_apart(fig)
        return
    fig = {"curves": lambda: plots.curves(_records(0)[:3]),  # no f*: 2 x 2
           "curves_log": lambda: plots.curves(_records(1e-4)),
           "curves_symlog": lambda: plots.curves(_records(-3e-3)),
           "lr_sensitivity": lambda: plots.lr_sensitivity(summary),
           "batch_sizes": lambda: plots.batch_sizes(fit, 64.5, summary),
           "profile": lambda: plots.profile({"sgd": [0.1, 0.5, 1.0], "adam": [0.4, 0.8, 1.0]},
                                            [1.0, 2.0, 4.0], "steps"),
           # the longest title a run's name gives, and values whose ticks are the widest
           "weights": lambda: plots.weights(
               np.linspace(-12.5, 12.5, 7840).reshape(784, 10),
               "adamw-schedulefree: columns of W (adamw-schedulefree-lr0.0025-bs512-s4-"
               "1f675634)"),
           "samples": lambda: plots.samples(np.linspace(0, 1, 32 * 784).reshape(32, 784),
                                            np.arange(32) % 10)}[name]()
    _inside_and_apart(fig)


def _inside_and_apart(fig) -> None:
    assert getattr(fig, "laid_out", False)  # saved as drawn: nothing crops it
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # as saving draws it
    renderer = canvas.get_renderer()
    page = fig.bbox
    # every axes: an image's with its axis off holds its labels and title
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    for box in boxes:  # titles, tick labels and axis labels inside the figure
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 <= box.y1 <= page.y1
    for i, a in enumerate(boxes):  # and no panel's texts run into another's
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    for ax in fig.axes:  # nor a title into its panel's own texts (a mosaic's labels)
        if ax.get_visible() and ax.get_title():
            title = ax.title.get_window_extent(renderer)
            for text in ax.texts:
                assert not title.overlaps(text.get_window_extent(renderer)), text.get_text()
    plt.close("all")
