"""Errors of the simulator (all :class:`~wardwatch.core.errors.WardwatchError`)."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["RecordError", "SimError"]


class SimError(WardwatchError):
    """The simulator cannot do what was asked (transport, device state, ...)."""


class RecordError(SimError):
    """A recording (WFDB record, annotation file, numerics) cannot be read or used."""
