"""Messages to points: the schema, validation, and everything that must be dead-lettered."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardwatch.core.errors import SchemaError, TopicError, WardwatchError
from wardwatch.core.schema import (
    AbsentReason,
    DeviceRole,
    DeviceStatus,
    Quality,
    Sample,
    Signal,
    Vitals,
    encode,
)
from wardwatch.core.topics import device_status_topic, gateway_status_topic, vitals_topic
from wardwatch.ingest.lineprotocol import LineEncoder
from wardwatch.ingest.points import ImplausibleTimeError, Point, PointEncoder

TOPIC = vitals_topic("ward-a", "gw-01", "p-1", "hr-1", "rr_interval")


def as_lines(topic: str, payload: bytes, encoder: PointEncoder | None = None) -> list[str]:
    """The message's points as the InfluxDB sinks write them (line protocol)."""
    line_encoder = LineEncoder()
    return [line_encoder.line(point) for point in (encoder or PointEncoder()).points(topic, payload)]


def vitals(**changes: object) -> Vitals:
    fields: dict[str, object] = {
        "v": 1,
        "patient": "p-1",
        "device": "hr-1",
        "gateway": "gw-01",
        "signal": Signal.RR_INTERVAL,
        "seq": 7,
        "samples": (Sample(t=1_700_000_000_000, v=0.8), Sample(t=1_700_000_000_801, v=0.75)),
    }
    fields.update(changes)
    return Vitals(**fields)  # type: ignore[arg-type]


def test_every_sample_is_a_point_with_its_own_time() -> None:
    lines = as_lines(TOPIC, encode(vitals()))
    prefix = "vitals,device=hr-1,patient=p-1,signal=rr_interval,ward=ward-a"
    assert lines == [
        f'{prefix} value=0.8,seq=7i,gateway="gw-01" 1700000000000\n',
        f'{prefix} value=0.75,seq=7i,gateway="gw-01" 1700000000801\n',
    ]


def test_points_carry_measurement_tags_fields_and_time_not_an_encoding() -> None:
    first, second = PointEncoder().points(TOPIC, encode(vitals()))
    tags = (("device", "hr-1"), ("patient", "p-1"), ("signal", "rr_interval"), ("ward", "ward-a"))
    assert first == Point("vitals", tags, {"value": 0.8, "seq": 7, "gateway": "gw-01"}, 1_700_000_000_000)
    assert second.time == 1_700_000_000_801
    assert first.tags is second.tags  # one tuple per series: the sink encodes its key once


def test_integer_json_values_become_floats() -> None:
    payload = (
        b'{"v":1,"kind":"vitals","patient":"p-1","device":"hr-1","gateway":"gw-01",'
        b'"signal":"rr_interval","seq":1,"samples":[{"t":1700000000005,"v":1}]}'
    )
    assert as_lines(TOPIC, payload)[0].split(" ")[1].startswith("value=1.0,")


def test_absent_value_and_quality_flags() -> None:
    samples = (
        Sample(t=1_700_000_000_001, v=None, absent=AbsentReason.NRES, q=(Quality.CONTACT_LOST, Quality.QUESTIONABLE)),
        Sample(t=1_700_000_000_002, v=None),
    )
    lines = as_lines(TOPIC, encode(vitals(samples=samples)))
    assert lines[0].split(" ")[1] == 'absent="nres",quality="contact_lost,questionable",seq=7i,gateway="gw-01"'
    assert lines[1].split(" ")[1] == 'absent="unspecified",seq=7i,gateway="gw-01"'


@pytest.mark.parametrize(
    ("topic", "payload", "problem"),
    [
        (TOPIC, b"not json", "not valid JSON"),
        (TOPIC, encode(vitals()).replace(b'"v":1', b'"v":2'), "vitals message"),
        (TOPIC, encode(vitals(samples=(Sample(t=1_700_000_000_000, v=99.0),))), "impossible"),
        (TOPIC, encode(vitals(patient="p-2")), "do not match its topic"),
        (TOPIC, encode(vitals(gateway="gw-02")), "do not match its topic"),
        (TOPIC.replace("rr_interval", "heart_rate"), encode(vitals()), "do not match its topic"),
        (TOPIC + "/extra", encode(vitals()), "levels"),
        ("wardwatch/v1/vitals/Ward A/gw/p/d/s", encode(vitals()), "identifier"),
        (gateway_status_topic("ward-a", "gw-01"), b"{}", "neither"),
        ("elsewhere/x", b"{}", "neither"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(topic: str, payload: bytes, problem: str) -> None:
    with pytest.raises(WardwatchError, match=problem) as caught:
        as_lines(topic, payload)
    assert isinstance(caught.value, SchemaError | TopicError)


def test_device_status_point() -> None:
    status = DeviceStatus(
        patient="p-1",
        device="ox-1",
        gateway="gw-01",
        t=1_700_000_000_000,
        role=DeviceRole.PULSE_OXIMETER,
        connected=False,
        seq=3,
        battery=80,
        reason='out "of" range',
    )
    lines = as_lines(device_status_topic("ward-a", "gw-01", "p-1", "ox-1"), encode(status))
    assert lines == [
        'device_status,device=ox-1,patient=p-1,ward=ward-a connected=false,gateway="gw-01",'
        'role="pulse_oximeter",seq=3i,malformed_total=0i,battery=80i,reason="out \\"of\\" range" 1700000000000\n'
    ]


def test_device_status_must_match_its_topic() -> None:
    status = DeviceStatus(
        patient="p-1", device="ox-1", gateway="gw-01", t=1, role=DeviceRole.PULSE_OXIMETER, connected=True
    )
    with pytest.raises(SchemaError):
        as_lines(device_status_topic("ward-a", "gw-01", "p-2", "ox-1"), encode(status))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True)
@given(
    payload=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda changes: json.dumps({**msgspec.to_builtins(vitals()), **changes}).encode(),
        st.dictionaries(st.sampled_from(["v", "kind", "seq", "samples", "patient", "signal"]), json_values, max_size=2),
    )
)
def test_any_payload_gives_points_or_a_reason(payload: bytes) -> None:
    """Seeded fuzzing: nothing a publisher sends makes the encoder fail other than with a reason."""
    reason = ""
    try:
        lines = as_lines(TOPIC, payload)
    except (SchemaError, TopicError) as exc:
        reason, lines = str(exc), []
        assert reason
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)


NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("t", "problem"),
    [
        (0, "before 2020"),
        (1_500_000_000_000, "before 2020"),
        (NOW + 301_000, "301 s ahead"),
        (NOW + 100 * 365 * 86_400_000, "ahead of the server clock"),
    ],
)
def test_impossible_sample_times_are_refused(t: int, problem: str) -> None:
    """Finding 3 (issue 11): a sample a century ahead was stored, and t = 0 made a 1970 point."""
    encoder = PointEncoder(clock=lambda: NOW)
    good = Sample(t=NOW - 1000, v=0.8)
    with pytest.raises(ImplausibleTimeError, match=problem):
        as_lines(TOPIC, encode(vitals(samples=(good, Sample(t=t, v=0.8)))), encoder)
    status = DeviceStatus(
        patient="p-1",
        device="ox-1",
        gateway="gw-01",
        role=DeviceRole.PULSE_OXIMETER,
        connected=True,
        seq=1,
        t=t,
    )
    with pytest.raises(ImplausibleTimeError):
        as_lines(device_status_topic("ward-a", "gw-01", "p-1", "ox-1"), encode(status), encoder)


def test_times_within_the_margin_are_stored() -> None:
    encoder = PointEncoder(clock=lambda: NOW, future_margin_ms=60_000)
    assert len(encoder.points(TOPIC, encode(vitals(samples=(Sample(t=NOW + 59_000, v=0.8),))))) == 1
    with pytest.raises(ImplausibleTimeError):
        encoder.points(TOPIC, encode(vitals(samples=(Sample(t=NOW + 61_000, v=0.8),))))
