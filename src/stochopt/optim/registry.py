"""The registry: every update rule by its ``--optimizer`` name.

A rule's module decorates its class with ``@register``; :mod:`stochopt.optim` imports every
rule module, so importing the package fills :data:`RULES`.
"""

from __future__ import annotations

from ..errors import StochoptError
from .base import Hyper, Rule
from .plugin import is_plugin, plugin_rule

RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Add ``cls`` to :data:`RULES` under ``cls.name`` (a class decorator). A name already
    taken is refused: a second rule must not silently replace the first."""
    if RULES.get(cls.name, cls) is not cls:
        raise StochoptError(f"an optimizer named {cls.name!r} is already registered "
                            f"({RULES[cls.name].__module__}.{RULES[cls.name].__qualname__}); "
                            "give the new rule another name")
    RULES[cls.name] = cls
    return cls


def get_rule(name: str) -> type[Rule]:
    """The rule ``name``: a registered one, or ``MODULE:NAME``, someone else's optimiser
    (:mod:`stochopt.optim.plugin`)."""
    if is_plugin(name):
        return plugin_rule(name)
    if name not in RULES:
        raise StochoptError(f"unknown optimizer {name!r}; choose one of {', '.join(RULES)}")
    return RULES[name]


def make_optimizer(name: str, **hyper: Hyper) -> Rule:
    """The rule ``name`` with the given hyperparameters (the rest at their defaults)."""
    return get_rule(name)(**hyper)


def markdown_table() -> str:
    """The table of docs/optimisers.md, from the registry: each rule's first docstring
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
