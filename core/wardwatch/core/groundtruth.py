"""Ground truth: which clinical events, artefacts and technical faults a stream contains, and when.

The one event type shared by the simulator (which writes it with a scenario) and alerting (which
scores alarms against it). One JSON object per line::

    {"patient": "p-001", "event": "desaturation", "kind": "clinical", "start": 1736150700000,
     "end": 1736150940000, "should_page": true, "devices": ["plx-001"], "detail": {...}}

``start``/``end`` are ms since the Unix epoch (``end`` exclusive). ``should_page`` says whether a good
alarm system should page a nurse for it. ``max_delay`` (ms, optional) overrides the scorer's detection
tolerance for that event.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["GroundTruthEvent", "Kind"]

Kind = Literal["clinical", "artefact", "technical"]


class GroundTruthEvent(msgspec.Struct, frozen=True):
    """One line of the ground-truth JSONL (``kind``: the patient, the signal, or the equipment)."""

    patient: str
    event: str
    kind: Kind
    start: int
    end: int
    should_page: bool
    devices: tuple[str, ...] = ()
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    max_delay: int | None = None

    @property
    def onset_ms(self) -> int:
        """The ramp-in time the simulator reports (``detail.onset_s``), 0 when unknown."""
        onset = self.detail.get("onset_s", 0)
        return round(float(onset) * 1000) if isinstance(onset, int | float) else 0
