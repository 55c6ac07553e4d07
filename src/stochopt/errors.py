"""The one exception type for problems a user can fix (bad data, bad flags).

`stochopt.cli.main` prints its message as one line on stderr and exits with code 2.
Any other exception is a bug in stochopt and keeps its traceback.
"""


class StochoptError(Exception):
    """A problem with the user's input: the message names it and says what to do."""
