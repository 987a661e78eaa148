"""Errors that vist2 raises for user mistakes.

Everything a user can cause (a bad config field, a missing file, text that does not fit a page)
raises a `Vist2Error` with one line that says what, where, and what to do. The CLI prints that line
and exits non-zero; tracebacks are kept for bugs.
"""


class Vist2Error(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(Vist2Error, ValueError):
    """A config field holds a value that cannot work; the message names the field."""
