"""The exception types for problems a user can fix (bad data, bad settings, a full disk).

`stochopt.cli.main` prints the message as one line on stderr and exits with code 2.
Any other exception is a bug in stochopt and keeps its traceback.
"""

from __future__ import annotations


class StochoptError(Exception):
    """A problem with the user's input: the message names it and says what to do."""


class Named:
    """A message that names settings. The library spells them as the Python API does
    (``batch_size``); :meth:`flags` spells them as the command line does (``--batch-size``),
    so each layer speaks its user's language. ``template`` names settings as ``{name}``
    placeholders: ``Named("{beta1} does not apply to {optimizer} sgd", "beta1", "optimizer")``.
    """

    def __init__(self, template: str, *names: str) -> None:
        self.template, self.names = template, names

    def __str__(self) -> str:
        return self.template.format(**{n: n for n in self.names})

    def flags(self) -> str:
        return self.template.format(**{n: "--" + n.replace("_", "-") for n in self.names})


class SettingError(Named, StochoptError):
    """A bad value of a named setting (see :class:`Named`)."""

    def __init__(self, template: str, *names: str) -> None:
        Named.__init__(self, template, *names)
        StochoptError.__init__(self, str(self))

    @classmethod
    def bad(cls, name: str, problem: str) -> SettingError:
        """``<name> <problem>``, the common case."""
        return cls(f"{{{name}}} {escape(problem)}", name)


def escape(text: str) -> str:
    """``text`` as a literal part of a :class:`Named` template."""
    return text.replace("{", "{{").replace("}", "}}")
