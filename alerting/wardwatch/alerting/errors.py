"""The alerting service's error base: every error it raises on purpose derives from :class:`AlertingError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["AlertingError", "StoreError"]


class AlertingError(WardwatchError):
    """Base of the alerting service's errors (alarm lifecycle, store, audit, auth, paging)."""


class StoreError(AlertingError):
    """The alerting database cannot be opened or is inconsistent."""
