"""The gateway's error base: every error it raises on purpose derives from :class:`GatewayError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["GatewayError"]


class GatewayError(WardwatchError):
    """Base of the gateway's errors (disk queue, BLE sessions, publishing)."""
