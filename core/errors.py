"""The one error type the engine raises for problems a user can fix.

Front ends (CLI, TUI) print `str(err)` as one line and, when present, `err.hint` as the next
step. Anything else escaping the engine is a bug and is reported as such, never as a traceback.
"""

from __future__ import annotations


class AitkError(Exception):
    """A clear, actionable failure: what went wrong, and what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
