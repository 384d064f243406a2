"""The one exception type that means "the user asked for something invalid".

The CLI turns a ``UserError`` into a single ``retain: error: ...`` line and exit code 2,
with no traceback. Anything else is a bug in retain and keeps its traceback.
"""


class UserError(Exception):
    """Invalid input: a config key, a value, a component name, a data file."""


def did_you_mean(name: str, choices) -> str:
    """A short hint listing the valid choices, nearest first when one is close."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; valid choices: {', '.join(choices)}"
