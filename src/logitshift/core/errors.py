"""The one exception type users see.

Every error caused by the user's input (a file, a flag, a name) is raised as
:class:`LogitShiftError` with a single-line message that names the input and
says what was expected. The command line prints it without a traceback and
exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations


class LogitShiftError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
