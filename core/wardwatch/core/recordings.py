"""Recorded physiology as device streams: the seam between the simulator's device model and its users.

The device model (what a chest strap's and a pulse oximeter's firmware would report from a real ECG and
PLETH recording) lives in the simulator part. Other parts, such as alerting's PhysioNet/CinC 2015
evaluation, reach it through the ``wardwatch.recording_models`` entry-point group, so no part imports
another and a Raspberry Pi install (gateway only) carries none of it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Final, Protocol

from .errors import WardwatchError
from .schema import WireMessage

__all__ = ["RECORDING_MODEL_GROUP", "RecordingError", "RecordingModel", "recording_model"]

RECORDING_MODEL_GROUP: Final = "wardwatch.recording_models"


class RecordingError(WardwatchError):
    """A recording cannot be read or turned into device streams; the message names the record and why."""


class RecordingModel(Protocol):
    """Turns one recorded waveform record into the wire messages the patient's devices would have sent."""

    def render_record(
        self,
        record: Path,
        *,
        until_s: float | None = None,
        patient: str = "p-replay",
        start_ms: int = 1_700_000_000_000,
    ) -> list[WireMessage]:
        """Vitals and device-status messages of a strap (ECG) and an oximeter (PLETH), in time order.

        ``record`` is a WFDB header path (``.hea``) or record path. Only signal before ``until_s``
        seconds is used, and the model is causal: every message stamped before ``start_ms + t*1000``
        is identical for any ``until_s >= t``. Raises :class:`RecordingError` for an unreadable record.
        """
        ...


def recording_model(name: str = "wfdb") -> RecordingModel:
    """The installed device model called ``name`` (the simulator registers ``wfdb``).

    Raises :class:`RecordingError` naming the extra to install when no part provides it.
    """
    for ep in entry_points(group=RECORDING_MODEL_GROUP):
        if ep.name == name:
            factory = ep.load()
            model: RecordingModel = factory()
            return model
    raise RecordingError(
        f"no recording model {name!r} is installed: install the simulator extra (pip install 'wardwatch[sim]')"
    )
