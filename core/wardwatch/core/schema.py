"""The wire schema (version 1) of every MQTT payload wardwatch publishes.

Payloads are JSON objects with ``"v": 1`` and a ``"kind"`` tag. msgspec typed structs encode and
decode them (measured by ``python -m wardwatch.core.bench_schema``: the fastest option tried, and it validates
while decoding). The schema is documented with examples in ``docs/wire-format.md``.

Times are integers: milliseconds since the Unix epoch, UTC (``t`` fields).
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Final, Literal

import msgspec

from wardwatch.core.errors import SchemaError
from wardwatch.core.ids import Identifier
from wardwatch.core.topics import BATCH_LEAF, TopicParts

SCHEMA_VERSION: Final[Literal[1]] = 1

EpochMillis = Annotated[int, msgspec.Meta(ge=0, lt=10**14, description="ms since Unix epoch, UTC")]
SequenceNumber = Annotated[int, msgspec.Meta(ge=0)]


class Signal(enum.StrEnum):
    """What a sample measures; the unit is fixed per signal (:data:`UNITS`)."""

    HEART_RATE = "heart_rate"
    RR_INTERVAL = "rr_interval"
    SPO2 = "spo2"
    PULSE_RATE = "pulse_rate"
    PERFUSION_INDEX = "perfusion_index"
    BATTERY = "battery"
    ENERGY_EXPENDED = "energy_expended"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    MEAN_ARTERIAL_PRESSURE = "mean_arterial_pressure"
    BODY_TEMPERATURE = "body_temperature"


UNITS: Final[dict[Signal, str]] = {
    Signal.HEART_RATE: "/min",
    Signal.RR_INTERVAL: "s",
    Signal.SPO2: "%",
    Signal.PULSE_RATE: "/min",
    Signal.PERFUSION_INDEX: "%",
    Signal.BATTERY: "%",
    Signal.ENERGY_EXPENDED: "kJ",
    Signal.SYSTOLIC_BP: "mm[Hg]",
    Signal.DIASTOLIC_BP: "mm[Hg]",
    Signal.MEAN_ARTERIAL_PRESSURE: "mm[Hg]",
    Signal.BODY_TEMPERATURE: "Cel",
}

# Physically possible ranges (not clinical limits): a value outside is a malformed message.
VALID_RANGES: Final[dict[Signal, tuple[float, float]]] = {
    Signal.HEART_RATE: (0.0, 400.0),
    Signal.RR_INTERVAL: (0.0, 64.0),
    Signal.SPO2: (0.0, 100.0),
    Signal.PULSE_RATE: (0.0, 400.0),
    Signal.PERFUSION_INDEX: (0.0, 100.0),
    Signal.BATTERY: (0.0, 100.0),
    Signal.ENERGY_EXPENDED: (0.0, 65535.0),
    Signal.SYSTOLIC_BP: (0.0, 400.0),  # cuffs inflate to ~300 mmHg at most
    Signal.DIASTOLIC_BP: (0.0, 400.0),
    Signal.MEAN_ARTERIAL_PRESSURE: (0.0, 400.0),
    Signal.BODY_TEMPERATURE: (0.0, 60.0),  # °C
}


class Quality(enum.StrEnum):
    """Quality and status flags of a sample, from the device or added by the gateway."""

    CONTACT_LOST = "contact_lost"  # 0x2A37 sensor contact supported but not detected
    QUESTIONABLE = "questionable"  # PLX questionable measurement / questionable pulse
    INVALID = "invalid"  # PLX invalid measurement detected
    UNAVAILABLE = "unavailable"  # PLX measurement unavailable
    EARLY_ESTIMATE = "early_estimate"  # PLX early estimated data
    LOW_PERFUSION = "low_perfusion"
    POOR_SIGNAL = "poor_signal"  # PLX poor/inadequate/erratic/nonpulsatile signal, interference
    SENSOR_UNCONNECTED = "sensor_unconnected"  # PLX sensor unconnected to user
    SENSOR_DISPLACED = "sensor_displaced"
    SENSOR_FAULT = "sensor_fault"  # PLX sensor malfunctioning / disconnected / equipment malfunction
    FROM_STORAGE = "from_storage"  # backfilled from the device's record store
    DEVICE_CLOCK = "device_clock"  # timestamp is the device's own clock
    DEVICE_CLOCK_UNSET = "device_clock_unset"  # device said its clock is not set: gateway time used
    TEST_DATA = "test_data"  # PLX data for testing / demonstration
    BODY_MOVEMENT = "body_movement"  # blood pressure: body movement during the measurement
    CUFF_LOOSE = "cuff_loose"  # blood pressure: cuff too loose
    IRREGULAR_PULSE = "irregular_pulse"  # blood pressure: irregular pulse detected
    IMPROPER_POSITION = "improper_position"  # blood pressure: improper measurement position


class AbsentReason(enum.StrEnum):
    """Why a sample has no value (IEEE-11073 special values and device states)."""

    NAN = "nan"
    NRES = "nres"
    POSITIVE_INFINITY = "positive_infinity"
    NEGATIVE_INFINITY = "negative_infinity"
    RESERVED = "reserved"
    UNAVAILABLE = "unavailable"


class Sample(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One reading: time, value (or why there is none) and quality flags."""

    t: EpochMillis
    v: float | None
    q: tuple[Quality, ...] = ()
    absent: AbsentReason | None = None


def _schema_version() -> Literal[1]:
    return SCHEMA_VERSION


class _Message(
    msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True, tag_field="kind", kw_only=True
):
    # The schema version: set by default, and always on the wire. A default *value* would be left out by
    # omit_defaults; msgspec encodes a field whose default comes from a factory other than list/dict/set.
    v: Literal[1] = msgspec.field(default_factory=_schema_version)


class Vitals(_Message, frozen=True, tag="vitals"):
    """Samples of one signal from one device, as received from one notification."""

    patient: Identifier
    device: Identifier
    gateway: Identifier
    signal: Signal
    seq: SequenceNumber
    samples: Annotated[tuple[Sample, ...], msgspec.Meta(min_length=1, max_length=4096)]


class Series(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One signal's samples inside a :class:`VitalsBatch`, numbered like a :class:`Vitals` message."""

    signal: Signal
    seq: SequenceNumber
    samples: Annotated[tuple[Sample, ...], msgspec.Meta(min_length=1, max_length=4096)]


class VitalsBatch(_Message, frozen=True, tag="vitals_batch"):
    """Several signals' samples from one device, as the gateway committed them together (one queue commit).

    Published on :func:`~wardwatch.core.topics.vitals_batch_topic`. Each series is what a :class:`Vitals`
    message with the same ids would carry (:meth:`vitals`); consumers judge and store every sample as if
    it had come alone. Samples of one signal are in the order the gateway received them.
    """

    patient: Identifier
    device: Identifier
    gateway: Identifier
    series: Annotated[tuple[Series, ...], msgspec.Meta(min_length=1, max_length=1024)]

    def vitals(self) -> list[Vitals]:
        """The series as single vitals messages (same ids, signal, sequence number and samples)."""
        return [
            Vitals(
                patient=self.patient,
                device=self.device,
                gateway=self.gateway,
                signal=series.signal,
                seq=series.seq,
                samples=series.samples,
            )
            for series in self.series
        ]


class DeviceRole(enum.StrEnum):
    """What a bound device is to its patient."""

    HEART_RATE_STRAP = "heart_rate_strap"
    PULSE_OXIMETER = "pulse_oximeter"
    BLOOD_PRESSURE_CUFF = "blood_pressure_cuff"
    THERMOMETER = "thermometer"


class DeviceStatus(_Message, frozen=True, tag="device_status"):
    """A device's link state and housekeeping, published on change and periodically."""

    patient: Identifier
    device: Identifier
    gateway: Identifier
    t: EpochMillis
    role: DeviceRole
    connected: bool
    seq: SequenceNumber = 0
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    rssi: int | None = None
    reason: str | None = None  # e.g. "out_of_range", "connect_failed", "malformed_notifications"
    malformed_total: int = 0
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None


class DeviceLink(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One device's summary inside a gateway status."""

    device: Identifier
    patient: Identifier
    role: DeviceRole
    connected: bool
    battery: int | None = None
    rssi: int | None = None
    last_seen: EpochMillis | None = None
    # not connected once since the gateway bound it (this gateway run): alerting says "never connected"
    never_connected: bool = False


class GatewayStatus(_Message, frozen=True, tag="gateway_status"):
    """A gateway's periodic health report."""

    gateway: Identifier
    ward: Identifier
    t: EpochMillis
    uptime_s: float
    devices: tuple[DeviceLink, ...] = ()
    queue_depth: int = 0
    queue_capacity: int = 0
    dropped_total: int = 0
    dead_lettered_total: int = 0  # readings the broker refused for good (e.g. ACL), kept locally
    clock_synced: bool | None = None
    version: str = ""
    connection_slots: int = 0  # the adapter's connection slots (ble.max_connections); 0: not reported
    # bound devices that want a connection but find every slot in use (alerting: gateway_over_capacity)
    waiting_for_slot: tuple[Identifier, ...] = ()


class DataGap(_Message, frozen=True, tag="data_gap"):
    """A gateway dropped queued readings (queue full): the data has a gap nurses must know of."""

    gateway: Identifier
    t: EpochMillis
    dropped: int
    first_t: EpochMillis
    last_t: EpochMillis
    patient: Identifier | None = None
    device: Identifier | None = None
    reason: str = "queue_full"


class Priority(enum.StrEnum):
    """IEC 60601-1-8 alarm priority."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlarmCategory(enum.StrEnum):
    """Physiological (the patient) or technical (the equipment)."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class AlarmState(enum.StrEnum):
    """Lifecycle state of an alarm."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    RESOLVED = "resolved"


#: The seven NEWS2 parameters, as ``News2.missing`` names them.
News2Parameter = Literal["respiration", "spo2", "supplemental_o2", "systolic", "pulse", "consciousness", "temperature"]


class News2(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A NEWS2 (RCP 2017) as alerting scored it: the aggregate and the sub-scores of the parameters that
    were recent (``None``: not recent). ``full`` only when all seven were; otherwise ``missing`` names the
    others and ``score`` is a lower bound that must never be shown as the NEWS2 total. ``o2`` is the
    observed air-or-oxygen sub-score, or the patient's profile when ``supplemental_o2`` is missing."""

    score: Annotated[int, msgspec.Meta(ge=0, le=20)]
    o2: Annotated[int, msgspec.Meta(ge=0, le=2)]  # air or oxygen sub-score
    spo2_scale: Literal[1, 2] = 1
    spo2: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None  # SpO2 sub-score on spo2_scale
    pulse: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    respiration: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    systolic: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    consciousness: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    temperature: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    full: bool = False
    missing: list[News2Parameter] = []


class Alarm(_Message, frozen=True, tag="alarm"):
    """An alarm's state change. ``alarm_id`` is stable across its lifecycle."""

    alarm_id: str
    dedup_key: str
    patient: Identifier
    ward: Identifier
    rule: str
    category: AlarmCategory
    priority: Priority
    state: AlarmState
    t: EpochMillis
    started: EpochMillis
    value: float | None = None
    text: str = ""  # clinical text without PHI, e.g. "SpO2 84 % < 90 % for 15 s"
    actor: str | None = None  # who acknowledged/silenced/resolved, when a person did
    news2: News2 | None = None  # the partial NEWS2 behind a news2_* alarm (its latest scoring)


class News2Score(_Message, frozen=True, tag="news2_score"):
    """A patient's current NEWS2 (``score_topic``): published by alerting when it changes and at least
    every few minutes. ``news2.full`` only when all seven parameters were recent (each from a device or
    a nurse, whichever was newer); otherwise ``news2.missing`` names the others and the score is partial."""

    patient: Identifier
    ward: Identifier
    t: EpochMillis  # when it was scored
    news2: News2


class Page(_Message, frozen=True, tag="page"):
    """A notification sent to a destination (nurse, charge nurse, doctor) for an alarm."""

    page_id: str
    alarm_id: str
    dedup_key: str
    patient: Identifier
    ward: Identifier
    priority: Priority
    destination: str
    step: int
    t: EpochMillis
    text: str
    state: AlarmState = AlarmState.ACTIVE


class DeadLetter(_Message, frozen=True, tag="dead_letter"):
    """Input a service rejected, with the reason; the payload is kept (base64 by msgspec)."""

    service: str
    t: EpochMillis
    reason: str
    topic: str = ""
    payload: bytes = b""


WireMessage = Vitals | VitalsBatch | DeviceStatus | GatewayStatus | DataGap | Alarm | News2Score | Page | DeadLetter

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(WireMessage)
_vitals_decoder: Final = msgspec.json.Decoder(Vitals)
_batch_decoder: Final = msgspec.json.Decoder(VitalsBatch)


def decode_device_status(payload: bytes, parts: TopicParts) -> DeviceStatus:
    """A device status received on the topic ``parts``; :class:`SchemaError` unless it is one and its
    gateway, patient and device are the topic's (a spoofed or misrouted message)."""
    status = decode(payload)
    if not isinstance(status, DeviceStatus):
        raise SchemaError(f"a {type(status).__name__} message on a device status topic")
    if (status.gateway, status.patient, status.device) != (parts.gateway, parts.patient, parts.device):
        raise SchemaError("payload ids (gateway, patient, device) do not match its topic")
    return status


def encode(message: WireMessage) -> bytes:
    """Serialise a message to its JSON wire form."""
    return _encoder.encode(message)


def _check_samples(signal: Signal, samples: tuple[Sample, ...]) -> None:
    low, high = VALID_RANGES[signal]
    for sample in samples:
        value = sample.v
        if value is None:
            continue
        if not math.isfinite(value) or not low <= value <= high:
            raise SchemaError(
                f"impossible {signal} value {value!r} at t={sample.t} (valid range {low}..{high}); "
                "a device without a value must send v=null with an 'absent' reason"
            )


def _check_vitals(message: Vitals) -> Vitals:
    _check_samples(message.signal, message.samples)
    return message


def _check_batch(message: VitalsBatch) -> VitalsBatch:
    for series in message.series:
        _check_samples(series.signal, series.samples)
    return message


def decode(payload: bytes | str) -> WireMessage:
    """Parse and validate any wardwatch message; raise :class:`SchemaError` saying what is wrong."""
    try:
        message: WireMessage = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"payload does not match wardwatch wire schema v{SCHEMA_VERSION}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SchemaError(f"payload is not valid JSON: {exc}") from None
    if isinstance(message, Vitals):
        return _check_vitals(message)
    if isinstance(message, VitalsBatch):
        return _check_batch(message)
    return message


def decode_vitals(payload: bytes | str) -> Vitals:
    """Parse and validate a vitals message (the hot path of ingest and alerting)."""
    try:
        message: Vitals = _vitals_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"payload is not a wardwatch v{SCHEMA_VERSION} vitals message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SchemaError(f"payload is not valid JSON: {exc}") from None
    return _check_vitals(message)


def decode_vitals_batch(payload: bytes | str) -> VitalsBatch:
    """Parse and validate a vitals batch (the gateway's message on ``.../{device}/batch``)."""
    try:
        message: VitalsBatch = _batch_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise SchemaError(f"payload is not a wardwatch v{SCHEMA_VERSION} vitals_batch message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SchemaError(f"payload is not valid JSON: {exc}") from None
    return _check_batch(message)


def split_vitals_batch(topic: str, payload: bytes | str) -> list[tuple[str, Vitals]]:
    """``(series topic, vitals)`` for each series of the batch ``payload`` received on ``topic``.

    Each is what a :class:`Vitals` on that signal's own topic (``.../{device}/{signal}``) would be, so a
    consumer handles a batch as its single messages. Raises :class:`SchemaError` for an invalid batch, or
    one whose ids (gateway, patient, device) are not its topic's (spoofed or misrouted: refuse it whole).
    """
    batch = decode_vitals_batch(payload)
    levels = topic.split("/")
    if levels[-1] != BATCH_LEAF or levels[-4:-1] != [batch.gateway, batch.patient, batch.device]:
        raise SchemaError(
            f"payload ids (gateway {batch.gateway}, patient {batch.patient}, device {batch.device}) "
            f"do not match its topic {topic}"
        )
    prefix = topic[: -len(BATCH_LEAF)]
    return [(prefix + vitals.signal, vitals) for vitals in batch.vitals()]
