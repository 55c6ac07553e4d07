"""The update rules, one small class each, and the registry that names them.

A rule lives in the file of its family (``sgd.py``, ``adaptive.py``, ``adam.py``) and is
added with ``@register``; nothing else needs to know about it: the command line's flags,
validation, ``results.csv`` columns and the README's table are read off the registry. See
CONTRIBUTING.md for adding one.
"""

from __future__ import annotations

from .base import Hyper, Rule, State

RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Add ``cls`` to :data:`RULES` under ``cls.name`` (a class decorator)."""
    RULES[cls.name] = cls
    return cls


def get_rule(name: str) -> type[Rule]:
    from ..errors import StochoptError

    if name not in RULES:
        raise StochoptError(f"unknown optimizer {name!r}; choose one of {', '.join(RULES)}")
    return RULES[name]


def make_optimizer(name: str, **hyper: Hyper) -> Rule:
    """The rule ``name`` with the given hyperparameters (the rest at their defaults)."""
    return get_rule(name)(**hyper)


def markdown_table() -> str:
    """The README's table of optimisers, from the registry: each rule's first docstring
    paragraph (its paper and its update as math), its reference, its settings."""
    lines = ["| name | rule | checked against | settings (defaults) | default schedule |",
             "|---|---|---|---|---|"]
    for name, cls in RULES.items():
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        summary = summary.replace("|", "\\|")  # |g| would end the table's cell
        settings = ", ".join(f"{n} {s.default:g}" if s.kind is not bool else f"{n} {s.default}"
                             for n, s in cls.settings().items())
        lines.append(f"| `{name}` | {summary} | {cls.reference} | {settings} | "
                     f"{cls.default_schedule} |")
    return "\n".join(lines) + "\n"


# each family registers its rules; this order is the registry's (and --help's) order
# isort: off
from . import sgd  # noqa: E402,F401
from . import adaptive  # noqa: E402,F401
from . import adam  # noqa: E402,F401
from . import sign  # noqa: E402,F401
from . import schedulefree  # noqa: E402,F401
from . import dadapt  # noqa: E402,F401
from . import linesearch  # noqa: E402,F401
from . import muon  # noqa: E402,F401
# isort: on

__all__ = ["RULES", "Hyper", "Rule", "State", "get_rule", "make_optimizer", "markdown_table",
           "register"]
