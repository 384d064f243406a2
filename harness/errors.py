"""The exceptions that end a run without being bugs: invalid input, a requested stop.

The CLI turns a ``UserError`` into a single ``retain: error: ...`` line and exit code 2,
with no traceback. Anything else is a bug in retain and keeps its traceback (except
``Interrupted``, a requested stop). Importing this module imports nothing heavy.
"""

import signal


class UserError(Exception):
    """Invalid input: a config key, a value, a component name, a data file."""


class Interrupted(Exception):
    """The user (or a scheduler) asked the run to stop; a checkpoint has been written.

    Not a KeyboardInterrupt: Lightning turns that into ``sys.exit(1)`` inside ``fit``.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def did_you_mean(name: str, choices) -> str:
    """A short hint listing the valid choices, nearest first when one is close."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; valid choices: {', '.join(choices)}"
