"""The one error type mnistlab raises for problems a user can fix.

The message says what was wrong (naming the file, value or flag) and what was expected;
the hint says what to do. The CLI prints both without a traceback and exits non-zero.
"""

from __future__ import annotations


class MnistlabError(Exception):
    """A problem with the user's input, files or environment, explained for a person."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"
