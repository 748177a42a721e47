"""The stack's error base: every error ``wardwatch up`` raises on purpose derives from :class:`StackError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["StackError"]


class StackError(WardwatchError):
    """The local system could not be started; the message says which piece and what to do."""
