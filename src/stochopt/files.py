"""Writing results so that nothing is ever half-written: every file goes to a temporary
name in the same folder first and is renamed into place (an atomic step on POSIX)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import pickle
import signal
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import StochoptError


def prepare_out(out: str | Path) -> Path:
    """Create ``out`` if needed and check that files can be written in it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StochoptError(f"--out {out} is a file, not a folder; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise StochoptError(f"cannot write to --out {out}: {e.strerror}; choose another folder"
                            ) from e
    return out


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    A failure to write (a full disk, a read-only folder) leaves ``path`` as it was and
    ends in a StochoptError naming it."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private (0600); a result file gets what open() would give
        # it, 0666 less the umask, so that a folder shared with others stays readable
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StochoptError(f"cannot write {path}: {e.strerror or e}; the files written "
                                "before it are complete; free some space or choose another "
                                "output folder") from e
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} as JSON")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    def write(f):
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    atomic_write(path, write)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write(path, lambda f: f.write(buf.getvalue()), binary=True)


def save_figure(path: str | Path, fig: Any) -> None:
    fmt = Path(path).suffix.lstrip(".") or "png"
    # a figure with its margins set (plots.fixed_margins) is drawn once; others are cropped
    # to what they hold, which draws them twice
    crop = None if getattr(fig, "laid_out", False) else "tight"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches=crop),
                 binary=True)
    if pyplot := sys.modules.get("matplotlib.pyplot"):  # a figure pyplot made: let go of it
        pyplot.close(fig)


class Drawing(NamedTuple):
    """A figure to write: its file, the function that builds it, and its panels (the work
    it takes, roughly: for sharing the figures between two processes)."""

    path: str | Path
    draw: Callable[[], Any]
    panels: int = 1


def save_figures(drawings: Sequence[Drawing]) -> None:
    """Build and write each figure as :func:`save_figure` does, two at a time where that is
    safe: by the command's drawing process when it has one (:func:`start_drawer`), else here
    and in a child forked for about half of them (:func:`_draw_in_two`)."""
    if _drawer is not None and _drawer.draw(drawings):
        return
    _draw_in_two(drawings)


def _draw_in_two(drawings: Sequence[Drawing]) -> None:
    """Drawing a figure is single-threaded Python (text layout, ticks), so a thread would not
    help; a forked child builds and writes about half the figures (by their panels) while
    this process does the rest: the main job's five figures take 1.6 s on one core. The
    child touches neither torch nor the files this process writes, and leaves by
    ``os._exit`` (no exit handlers, no flushing of this process's buffers). Its error comes
    back through a pipe and is raised here; on an error here, the child's share is finished
    first (Ctrl-C reaches both: they are one process group). No fork where it is not safe
    or not worth it (:func:`_can_fork`), nor for one figure."""
    if not _can_fork() or len(drawings) < 2:
        for d in drawings:
            save_figure(d.path, d.draw())
        return
    mine: list[Drawing] = []
    theirs: list[Drawing] = []
    load = [0, 0]
    for d in sorted(drawings, key=lambda d: -d.panels):  # the most panels first, each to
        side = int(load[1] < load[0])  # the side with fewer so far
        (mine, theirs)[side].append(d)
        load[side] += d.panels
    read, write = os.pipe()
    pid = _fork()
    if pid == 0:  # the child: its share, then straight out, whatever happens
        code = 1
        try:
            os.close(read)
            try:
                for d in theirs:
                    save_figure(d.path, d.draw())
                code = 0
            except BaseException as e:  # every error goes back to the parent
                os.write(write, _failure(e))
        finally:
            os._exit(code)
    os.close(write)
    try:
        for d in mine:
            save_figure(d.path, d.draw())
    finally:  # on an error here too: the child's files are complete when it is reaped
        with os.fdopen(read, "rb") as f:
            message = f.read().decode(errors="replace")  # until the child's end closes
        _, status = os.waitpid(pid, 0)
    if message:
        kind, _, text = message.partition("\n")
        if kind == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind == "StochoptError":
            raise StochoptError(text)
        raise RuntimeError(f"drawing a figure failed: {kind}: {text}")
    if status != 0:
        raise StochoptError(f"the process writing {', '.join(str(d.path) for d in theirs)} "
                            f"ended abnormally (wait status {status}); run the command again")


def _fork() -> int:
    """``os.fork()``. Python 3.12+ warns of forking a process with threads: the children
    here run no thread of the parent's (the drawing process is forked before any exists,
    and a figures' child draws on its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _failure(e: BaseException) -> bytes:
    """An error as the drawing processes report it: its type's name, a newline, its text."""
    return f"{type(e).__name__}\n{e}".encode()[:4000]


class _Portable(pickle.Pickler):
    """Pickles a dataclass instance (a run record, its configuration) as a namespace of its
    fields, so that the drawing process reads a job without importing the modules that
    define them (torch comes with those). The figures read fields only."""

    def reducer_override(self, obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return types.SimpleNamespace, (), fields
        return NotImplemented


def _send(f: Any, data: bytes) -> None:
    f.write(len(data).to_bytes(8, "little") + data)
    f.flush()


def _receive(f: Any) -> bytes | None:
    """One message sent by :func:`_send`; None at the end of the pipe."""
    head = f.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = f.read(size)
    return data if len(data) == size else None


class _Drawer:
    """The command's drawing process (see :func:`start_drawer`): forked before torch is
    imported, it imports matplotlib and sets up its fonts while the command imports torch
    and reads the data, then waits for figures to draw. A job is a list of :class:`Drawing`
    (pickled by :class:`_Portable`), drawn by :func:`_draw_in_two` there; the answer is
    empty or the error, as :func:`_failure` writes it."""

    def __init__(self) -> None:
        jobs_r, jobs_w = os.pipe()
        answers_r, answers_w = os.pipe()
        self.pid = _fork()
        if self.pid == 0:
            try:
                os.close(jobs_w), os.close(answers_r)
                _serve(os.fdopen(jobs_r, "rb"), os.fdopen(answers_w, "wb"))
            finally:
                os._exit(0)
        os.close(jobs_r), os.close(answers_w)
        self.jobs, self.answers = os.fdopen(jobs_w, "wb"), os.fdopen(answers_r, "rb")
        self.busy = False

    def draw(self, drawings: Sequence[Drawing]) -> bool:
        """Draw and write ``drawings`` there: True when done, False when this process must
        draw them itself (a figure that cannot be pickled, a bug there, the process gone);
        a StochoptError there is raised here."""
        buffer = io.BytesIO()
        try:
            _Portable(buffer).dump(list(drawings))
        except Exception:  # a figure built by a local function, say: drawn here
            return False
        self.busy = True
        try:
            _send(self.jobs, buffer.getvalue())
            answer = _receive(self.answers)
        except OSError:
            answer = None
        self.busy = False
        if answer is None:  # gone (killed): the files it wrote are complete; draw them here
            stop_drawer()
            return False
        kind, _, text = answer.decode(errors="replace").partition("\n")
        if kind == "StochoptError":
            raise StochoptError(text)
        return not kind  # a bug there: drawn again here, where it is raised as it is

    def stop(self) -> None:
        """End the process: at once when it is idle (it writes nothing then), else after
        the figures it is writing (this process was interrupted while it waited)."""
        self.jobs.close()
        self.answers.close()
        if not self.busy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            return
        # the figures in hand take a second or two: a second Ctrl-C does not cut them short
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            os.waitpid(self.pid, 0)
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)


def _serve(jobs: Any, answers: Any) -> None:
    """The drawing process: Ctrl-C and SIGTERM are the command's to handle (it ends this
    process after the figures in hand), matplotlib set up, then each job until the
    command's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # set up on what torch's import leaves of the cores, not against it (the figures are
    # drawn at this priority too, while the command waits for them)
    os.nice(10)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))  # the first text drawn loads the fonts
    fig.text(0.5, 0.5, "0")
    fig.savefig(io.BytesIO(), format="png")
    while (job := _receive(jobs)) is not None:
        try:
            _draw_in_two(pickle.loads(job))
            answer = b""
        except BaseException as e:
            answer = _failure(e)
        try:
            _send(answers, answer)
        except OSError:  # the command is gone
            return


_drawer: _Drawer | None = None


def start_drawer() -> None:
    """Fork the command's drawing process (:class:`_Drawer`) now, so that matplotlib's
    import and font set-up (about 1 s) run on the second core while torch imports, instead
    of after training. Only at a command's start: before torch is imported (the process
    is small, and there is no thread yet), where fork is safe (:func:`_can_fork`)."""
    global _drawer
    if _drawer is None and "torch" not in sys.modules and _can_fork():
        with contextlib.suppress(OSError):  # no process to spare: the command draws them
            _drawer = _Drawer()


def stop_drawer() -> None:
    """End the drawing process, if there is one (:meth:`_Drawer.stop`)."""
    global _drawer
    drawer, _drawer = _drawer, None
    if drawer is not None:
        drawer.stop()


def _can_fork() -> bool:
    """Fork on Linux only (macOS's system libraries are not safe in a forked child), with a
    second core to use, and not while this process is connected to Ray (its gRPC threads)."""
    ray = sys.modules.get("ray")
    return (sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1
            and not (ray is not None and ray.is_initialized()))


_locks: list[Any] = []  # open lock files, held until release_locks() or the process exits


def lock_out(out: Path) -> None:
    """Hold an exclusive lock on ``out`` for this process, so two stochopt processes never
    write the same folder; the second is refused with a clear message."""
    import fcntl

    f = open(out / ".lock", "w")  # noqa: SIM115 -- kept open: the lock lives with it
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StochoptError(f"another stochopt process is writing to {out}; wait for it to "
                            "finish or choose another --out") from None
    _locks.append(f)


def release_locks() -> None:
    while _locks:
        _locks.pop().close()  # closing the file drops its lock


def safe_name(name: str) -> str:
    """``name`` as a file name's part: a plug-in's ``./mine.py:Opt`` as ``._mine.py_Opt``;
    a registered rule's name is unchanged."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
