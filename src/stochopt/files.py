"""Writing results so that nothing is ever half-written: every file goes to a temporary
name in the same folder first and is renamed into place (an atomic step on POSIX)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
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
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"),
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
    safe.

    Drawing a figure is single-threaded Python (text layout, ticks), so a thread would not
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
    with warnings.catch_warnings():  # Python 3.12+ warns of threads; the child uses none
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its share, then straight out, whatever happens
        code = 1
        try:
            os.close(read)
            try:
                for d in theirs:
                    save_figure(d.path, d.draw())
                code = 0
            except BaseException as e:  # every error goes back to the parent
                os.write(write, f"{type(e).__name__}\n{e}".encode()[:4000])
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
