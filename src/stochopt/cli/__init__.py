"""The ``stochopt`` command: it parses, calls the library, and prints.

Flags, their help and their checks come from the declarations (each optimiser's settings in
:mod:`stochopt.optim`, Config's in :mod:`stochopt.config`). Every user-facing problem is a
:class:`StochoptError`, printed as one line on stderr with exit code 2 (a bad setting named
as its flag); a diverged ``train`` run writes its complete files and exits with code 1.
"""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Sequence

from ..errors import SettingError, StochoptError
from ..files import release_locks
from .common import close_progress_bars, configs_from_args, load_data
from .parser import build_parser, hyperparameter_flags
from .report import cmd_report
from .study import cmd_many
from .tools import cmd_landscape, cmd_noise_scale, cmd_optimum
from .train import cmd_train
from .zoo import cmd_zoo

COMMANDS = {"train": cmd_train, "compare": cmd_many, "sweep": cmd_many, "tune": cmd_many,
            "optimum": cmd_optimum, "noise-scale": cmd_noise_scale, "landscape": cmd_landscape,
            "zoo": cmd_zoo, "report": cmd_report}


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
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
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
        release_locks()


def _say(line: str) -> None:
    """The command's last line on stderr, after the progress bars it left open are closed:
    an error or an interruption in the middle of a run stands on a line of its own."""
    close_progress_bars()
    print(line, file=sys.stderr)


def console() -> int:
    """The ``stochopt`` command: :func:`main`, SIGTERM ending it as Ctrl-C does
    (:func:`_terminate`), then a quick exit: the collector is frozen first, so that the
    interpreter's last collections skip torch's hundreds of thousands of objects (about
    0.4 s of every command's wall time); every file is already closed and nothing of ours
    runs at exit. (:func:`main` itself leaves signals and the collector alone: tests and
    notebooks call it many times in one process.)"""
    signal.signal(signal.SIGTERM, _terminate)
    code = main()
    gc.freeze()
    return code


__all__ = ["build_parser", "configs_from_args", "console", "hyperparameter_flags", "load_data",
           "main"]
