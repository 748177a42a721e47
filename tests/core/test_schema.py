"""Wire schema v1: round trips, validation errors that say what is wrong, and impossible values."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core import schema
from wardwatch.core.errors import SchemaError
from wardwatch.core.schema import Quality, Sample, Signal, Vitals


def _vitals(**changes: object) -> Vitals:
    base = Vitals(
        patient="p-7f3a",
        device="d-hr-01",
        gateway="gw-01",
        signal=Signal.SPO2,
        seq=41,
        samples=(Sample(t=1_732_540_000_123, v=97.0, q=(Quality.LOW_PERFUSION,)),),
    )
    return msgspec.structs.replace(base, **changes)


def test_vitals_wire_form_is_versioned_tagged_json() -> None:
    wire = json.loads(schema.encode(_vitals()))
    assert wire == {
        "kind": "vitals",
        "v": 1,
        "patient": "p-7f3a",
        "device": "d-hr-01",
        "gateway": "gw-01",
        "signal": "spo2",
        "seq": 41,
        "samples": [{"t": 1_732_540_000_123, "v": 97.0, "q": ["low_perfusion"]}],
    }


def test_absent_value_carries_reason() -> None:
    message = _vitals(samples=(Sample(t=1, v=None, absent=schema.AbsentReason.NRES),))
    decoded = schema.decode(schema.encode(message))
    assert isinstance(decoded, Vitals)
    assert decoded.samples[0].v is None
    assert decoded.samples[0].absent is schema.AbsentReason.NRES


samples = st.builds(
    Sample,
    t=st.integers(0, 10**13),
    v=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    q=st.lists(st.sampled_from(list(Quality)), max_size=3, unique=True).map(tuple),
)


@given(
    signal=st.sampled_from([Signal.SPO2, Signal.HEART_RATE, Signal.PULSE_RATE, Signal.BATTERY]),
    seq=st.integers(0, 2**40),
    batch=st.lists(samples, min_size=1, max_size=5).map(tuple),
)
def test_vitals_round_trip(signal: Signal, seq: int, batch: tuple[Sample, ...]) -> None:
    message = _vitals(signal=signal, seq=seq, samples=batch)
    assert schema.decode(schema.encode(message)) == message
    assert schema.decode_vitals(schema.encode(message)) == message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not json", "not valid JSON"),
        (b'{"kind": "vitals", "v": 2}', "$.v"),
        (b'{"kind": "weather", "v": 1}', "kind"),
        (schema.encode(_vitals()).replace(b"p-7f3a", b"John Smith"), "$.patient"),
        (schema.encode(_vitals()).replace(b'"seq":41', b'"seq":-1'), "$.seq"),
        (schema.encode(_vitals()).replace(b"97.0", b"197.0"), "impossible spo2 value 197.0"),
        (schema.encode(_vitals()).replace(b'"samples":[', b'"extra":1,"samples":['), "extra"),
        (
            schema.encode(_vitals(samples=(Sample(t=1, v=1.0),))).replace(
                b'"samples":[{"t":1,"v":1.0}]', b'"samples":[]'
            ),
            "$.samples",
        ),
    ],
)
def test_malformed_payloads_raise_schema_error_naming_the_problem(payload: bytes, expected: str) -> None:
    with pytest.raises(SchemaError) as info:
        schema.decode(payload)
    assert expected in str(info.value)


def test_decode_vitals_rejects_other_kinds() -> None:
    status = schema.GatewayStatus(gateway="gw-01", ward="ward-a", t=5, uptime_s=1.0)
    assert schema.decode(schema.encode(status)) == status
    with pytest.raises(SchemaError, match="not a wardwatch v1 vitals message"):
        schema.decode_vitals(schema.encode(status))


def test_every_message_kind_round_trips() -> None:
    messages: list[schema.WireMessage] = [
        schema.DeviceStatus(
            patient="p-1",
            device="d-1",
            gateway="gw-01",
            t=1,
            role=schema.DeviceRole.PULSE_OXIMETER,
            connected=True,
            battery=80,
            rssi=-60,
        ),
        schema.GatewayStatus(
            gateway="gw-01",
            ward="ward-a",
            t=2,
            uptime_s=3.5,
            devices=(
                schema.DeviceLink(
                    device="d-1", patient="p-1", role=schema.DeviceRole.HEART_RATE_STRAP, connected=False
                ),
            ),
            queue_depth=10,
            queue_capacity=100,
            dropped_total=2,
            clock_synced=True,
        ),
        schema.DataGap(gateway="gw-01", t=3, dropped=5, first_t=1, last_t=2),
        schema.Alarm(
            alarm_id="a1",
            dedup_key="ward-a/p-1/spo2_low",
            patient="p-1",
            ward="ward-a",
            rule="spo2_low",
            category=schema.AlarmCategory.PHYSIOLOGICAL,
            priority=schema.Priority.MEDIUM,
            state=schema.AlarmState.ACTIVE,
            t=4,
            started=3,
            value=84.0,
        ),
        schema.Page(
            page_id="pg1",
            alarm_id="a1",
            dedup_key="ward-a/p-1/spo2_low",
            patient="p-1",
            ward="ward-a",
            priority=schema.Priority.HIGH,
            destination="primary-nurse",
            step=0,
            t=5,
            text="SpO2 84 %",
        ),
        schema.DeadLetter(service="ingest", t=6, reason="bad", topic="x", payload=b"\x00\xff"),
    ]
    for message in messages:
        assert schema.decode(schema.encode(message)) == message
        assert json.loads(schema.encode(message))["v"] == schema.SCHEMA_VERSION  # a default, still on the wire


def test_schema_version_is_one_default_that_omit_defaults_never_drops() -> None:
    """``v`` is set by the schema (no ``v=1`` at call sites) and encoded though messages omit defaults."""
    kinds = [k for k in vars(schema).values() if isinstance(k, type) and issubclass(k, schema._Message)]
    assert len(kinds) > 8  # the base and every message kind
    for kind in kinds:
        (version,) = [f for f in msgspec.structs.fields(kind) if f.name == "v"]
        assert version.default is msgspec.NODEFAULT  # a default value would be omitted from the wire
        assert version.default_factory() == schema.SCHEMA_VERSION
    gap = schema.DataGap(gateway="gw-01", t=3, dropped=5, first_t=1, last_t=2)
    assert gap.v == schema.SCHEMA_VERSION
    assert b'"v":1' in schema.encode(gap)
