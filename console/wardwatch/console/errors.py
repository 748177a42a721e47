"""The console's error base: every error it raises on purpose derives from :class:`ConsoleError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["ConsoleError"]


class ConsoleError(WardwatchError):
    """Base of the console's errors (its configuration, the alerting API or InfluxDB behind it)."""
