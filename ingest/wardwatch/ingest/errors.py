"""The ingest service's error base: every error it raises on purpose derives from :class:`IngestError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["IngestError"]


class IngestError(WardwatchError):
    """Base of the ingest service's errors (the time series store, its schema, points)."""
