"""The ``stochopt`` command: it parses, calls the library, and prints.

Flags, their help and their checks come from the declarations (each optimiser's settings in
:mod:`stochopt.optim`, Config's in :mod:`stochopt.config`). Every user-facing problem is a
:class:`StochoptError`, printed as one line on stderr with exit code 2 (a bad setting named
as its flag); a diverged ``train`` run writes its complete files and exits with code 1.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import SettingError, StochoptError

if TYPE_CHECKING:  # imported when first used (torch comes with them): see console()
    from .common import configs_from_args, load_data
    from .parser import build_parser, hyperparameter_flags

# each command's function, "module:function", imported when the command runs
COMMANDS = {"train": "train:cmd_train", "compare": "study:cmd_many", "sweep": "study:cmd_many",
            "tune": "study:cmd_many", "optimum": "tools:cmd_optimum",
            "noise-scale": "tools:cmd_noise_scale", "landscape": "tools:cmd_landscape",
            "zoo": "zoo:cmd_zoo", "report": "report:cmd_report"}
# the commands with --data-dir and --dataset (a test holds this to the parser)
READS_DATA = ("train", "compare", "sweep", "tune", "zoo", "optimum", "noise-scale")
# the commands that write figures (through stochopt.files.save_figures)
DRAWS = ("train", "compare", "sweep", "tune", "zoo", "report")


def command(name: str) -> Callable[[argparse.Namespace], int]:
    module, _, function = COMMANDS[name].partition(":")
    return getattr(import_module(f".{module}", __name__), function)


_sigterm: list[int] = []  # set by the command's SIGTERM handler: how main tells it from Ctrl-C


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) ends the command as
    Ctrl-C does: every finished file complete, temporary files removed, one line. Noted
    rather than told by the exception's type: Ray's wait re-raises whatever a handler
    raises as a plain KeyboardInterrupt."""
    _sigterm.append(signum)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    _sigterm.clear()
    try:
        from .parser import build_parser

        args = build_parser().parse_args(argv)
        run = command(args.command)
        _imported()
        return run(args)
    except SettingError as e:
        _say(f"stochopt: error: {e.flags()}")
        return 2
    except StochoptError as e:
        _say(f"stochopt: error: {e}")
        return 2
    except KeyboardInterrupt:
        terminated = bool(_sigterm)
        _say(f"stochopt: {'terminated' if terminated else 'interrupted'}; finished files are "
             "complete, nothing half-written; the same command resumes")
        return 143 if terminated else 130
    finally:
        close_progress_bars()
        from ..files import release_locks

        release_locks()


def _imported() -> None:
    """The command's modules are imported (torch with them): the collector that
    :func:`console` turned off for the imports is turned on again, with every object so far
    frozen, so that no collection walks torch's objects again."""
    if _startup[0]:
        _startup[0] = False
        gc.freeze()
        gc.enable()


# whether console() turned the collector off for the imports (main() called by tests or a
# notebook leaves it alone)
_startup = [False]


def close_progress_bars() -> None:
    """The bars the command left open, closed (none before a command has run)."""
    if common := sys.modules.get(f"{__name__}.common"):
        common.close_progress_bars()


def _say(line: str) -> None:
    """The command's last line on stderr, after the progress bars it left open are closed:
    an error or an interruption in the middle of a run stands on a line of its own."""
    close_progress_bars()
    print(line, file=sys.stderr)


def console() -> int:
    """The ``stochopt`` command: :func:`main`, with the data's files read ahead while torch
    imports (:func:`read_ahead`) and, for a command that draws, matplotlib set up in a
    drawing process forked first (:func:`stochopt.files.start_drawer`), which is ended when
    the command ends; torch's large allocations on huge pages (:func:`huge_pages`); SIGTERM
    ending it as Ctrl-C does (:func:`_terminate`); the collector
    off while the command's modules import (:func:`_imported`); then a quick exit: the
    collector is frozen first, so that the interpreter's last
    collections skip torch's hundreds of thousands of objects (about 0.4 s of every
    command's wall time); every file is already closed and nothing of ours runs at exit.
    (:func:`main` itself leaves signals and the collector alone: tests and notebooks call it
    many times in one process.)"""
    from ..files import start_drawer, stop_drawer

    argv = sys.argv[1:]
    if _runs(argv, DRAWS):
        start_drawer()  # first: matplotlib imports there while torch imports here
    # importing torch makes hundreds of thousands of objects, and the collections they set
    # off walk them again and again: three full ones, 0.19 s of the main job's start. None
    # of them is garbage; the collector is back, with them frozen, once the command's
    # modules are in (_imported). (After the fork: the drawing process keeps its collector,
    # for matplotlib's figures, which are cycles.)
    if gc.isenabled():
        gc.disable()
        _startup[0] = True
    signal.signal(signal.SIGTERM, _terminate)
    huge_pages()
    read_ahead(argv)
    try:
        code = main()
    finally:
        stop_drawer()
        _imported()  # a command that ended before its modules were in (a bad flag)
    gc.freeze()
    return code


def huge_pages() -> None:
    """Ask torch's CPU allocator to put every allocation of 2 MB or more on transparent huge
    pages (``THP_MEM_ALLOC_ENABLE=1``, read at its first such allocation, so before torch
    is imported), unless the caller's environment says otherwise. Random rows of the
    training matrix each cost a TLB miss on 4 kB pages, and each 16 MB flush of the
    per-step metrics thousands of page faults: epochs were 1-15% faster with it (paired
    fresh processes on a 2-core AMD EPYC: batch 32 0.945-0.989x, 128 0.954x, 512
    0.848-0.923x, the main job's 0.956-0.989x), with the same numbers. Linux only;
    elsewhere torch ignores it."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def run() -> None:
    """The installed ``stochopt`` command (and ``python -m stochopt``): :func:`console`, then
    the process ends at once. The exit handlers run (a Ray cluster the command started is
    stopped by its own), stdout and stderr are flushed, and ``os._exit`` skips the
    interpreter's teardown of torch's thousands of modules: 0.15 s of every command, nothing
    left to write by then (every file is complete and closed). While a thread other than a
    daemon one is alive (a plug-in's, say), the process ends as Python ends it, after it."""
    code = console()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


def _runs(argv: Sequence[str], commands: Sequence[str]) -> bool:
    """Whether ``argv`` runs one of ``commands`` (not only prints its help)."""
    return bool(argv) and argv[0] in commands and not {"-h", "--help"} & set(argv)


def read_ahead(argv: Sequence[str]) -> None:
    """Start reading the MNIST-format files that ``argv``'s command will load, on a thread,
    while torch imports (about 2 s; the read, 0.5 s of gunzip and MD5, runs outside the GIL:
    :func:`stochopt.data.idx.read_ahead`). ``argv`` is only glanced at here (--data-dir,
    --dataset); the command's parser reads it properly after. A wrong guess costs the read
    alone: the arrays are taken only by a load of the same folder and data set."""
    if not _runs(argv, READS_DATA):
        return
    glance = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    glance.add_argument("--data-dir")
    glance.add_argument("--dataset", default="mnist")
    try:
        flags, _ = glance.parse_known_args(argv[1:])
        from ..data import idx

        idx.read_ahead(idx.resolve_data_dir(flags.data_dir, download=False), flags.dataset)
    except (Exception, SystemExit):  # nothing the command itself would not say better
        return


__all__ = ["build_parser", "configs_from_args", "console", "hyperparameter_flags", "load_data",
           "main"]


def __getattr__(name: str) -> Any:  # the names of the TYPE_CHECKING block, as in stochopt's
    if name in __all__:
        for module in ("parser", "common"):
            found = import_module(f".{module}", __name__)
            if hasattr(found, name):
                return getattr(found, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
