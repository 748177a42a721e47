"""The alerting service's error base: every error it raises on purpose derives from :class:`AlertingError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["AlertingError", "RefusedRequestError", "StoreError"]


class AlertingError(WardwatchError):
    """Base of the alerting service's errors (alarm lifecycle, store, audit, auth, paging)."""


class StoreError(AlertingError):
    """The alerting database cannot be opened or is inconsistent."""


class RefusedRequestError(AlertingError):
    """A request the service refuses (registry change, note, observation); ``status`` is the HTTP status that says
    why, ``message`` what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
