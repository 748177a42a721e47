"""The shared ground-truth event: one JSON line, written by the simulator, read by alerting's scorer."""

from __future__ import annotations

import msgspec
import pytest

from wardwatch.core.groundtruth import GroundTruthEvent


def test_round_trip_and_defaults() -> None:
    event = GroundTruthEvent("p-1", "desaturation", "clinical", 1000, 61_000, True, detail={"onset_s": 12.5})
    line = msgspec.json.encode(event)
    assert msgspec.json.decode(line, type=GroundTruthEvent) == event
    assert (event.devices, event.max_delay, event.onset_ms) == ((), None, 12_500)
    minimal = b'{"patient":"p-1","event":"sensor_off","kind":"technical","start":0,"end":5,"should_page":false}'
    decoded = msgspec.json.decode(minimal, type=GroundTruthEvent)
    assert (decoded.detail, decoded.onset_ms) == ({}, 0)


def test_kind_is_checked() -> None:
    bad = b'{"patient":"p-1","event":"x","kind":"weather","start":0,"end":5,"should_page":false}'
    with pytest.raises(msgspec.ValidationError, match="kind"):
        msgspec.json.decode(bad, type=GroundTruthEvent)
