"""Blood Pressure Service (0x1810): Measurement (0x2A35), Intermediate Cuff Pressure (0x2A36), Feature (0x2A49).

Layout (Bluetooth SIG Blood Pressure Service 1.1, checked against the Zephyr/Nordic ``ble_bps``
encoder and Wireshark's ``packet-btatt.c``): flags u8 (bit0 unit kPa, else mmHg; bit1 timestamp;
bit2 pulse rate; bit3 user id; bit4 measurement status; bits 5-7 reserved), systolic, diastolic and
mean arterial pressure (SFLOAT each), [Date Time, 7 bytes], [pulse rate SFLOAT], [user id u8],
[measurement status u16]. Intermediate Cuff Pressure has the same layout with the current cuff
pressure in the systolic field and the other two unused (NaN). Measurement status: bit0 body
movement, bit1 cuff too loose, bit2 irregular pulse, bits 3-4 pulse-rate range (0 in range,
1 above, 2 below, 3 reserved), bit5 improper measurement position, bits 6-15 reserved.

Decisions as in :mod:`.plx`: reserved bits are errors; pressures and pulse rate must not be
negative (special values allowed); a timestamp with a 0 year, month or day is an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from wardwatch.core.errors import GattEncodeError

from ._common import (
    DATE_TIME_FORMAT,
    U16,
    BytesLike,
    check_length,
    check_uint,
    decode_date_time,
    decode_error,
    encode_date_time,
    flag_layouts,
    require_type,
    unpack_flagged,
)
from .ieee11073 import AbsentReason, MedFloat, encode_sfloat_non_negative, sfloat_non_negative

__all__ = [
    "BloodPressureFeature",
    "BloodPressureMeasurement",
    "BloodPressureStatus",
    "IntermediateCuffPressure",
    "PressureUnit",
    "PulseRateRange",
    "decode_blood_pressure_feature",
    "decode_blood_pressure_measurement",
    "decode_intermediate_cuff_pressure",
    "encode_blood_pressure_feature",
    "encode_blood_pressure_measurement",
    "encode_intermediate_cuff_pressure",
]

BPM = "Blood Pressure Measurement (0x2A35)"
ICP = "Intermediate Cuff Pressure (0x2A36)"
BPF = "Blood Pressure Feature (0x2A49)"

KPA_TO_MMHG = 7.500617  # 1 kPa in mmHg


class PressureUnit(enum.IntEnum):
    """Flags bit 0."""

    mmhg = 0
    kpa = 1


class BloodPressureStatus(enum.IntFlag):
    """Measurement Status (u16) bits that are flags; bits 3-4 are :class:`PulseRateRange`."""

    body_movement = 1 << 0
    cuff_too_loose = 1 << 1
    irregular_pulse = 1 << 2
    improper_position = 1 << 5


class PulseRateRange(enum.IntEnum):
    """Measurement Status bits 3-4."""

    within_range = 0
    above_upper_limit = 1
    below_lower_limit = 2


class BloodPressureFeature(enum.IntFlag):
    """Blood Pressure Feature (u16) bits 0-8; bits 9-15 are reserved."""

    body_movement_detection = 1 << 0
    cuff_fit_detection = 1 << 1
    irregular_pulse_detection = 1 << 2
    pulse_rate_range_detection = 1 << 3
    measurement_position_detection = 1 << 4
    multiple_bonds = 1 << 5
    e2e_crc = 1 << 6
    user_data_service = 1 << 7
    user_facing_time = 1 << 8


_UNIT, _TIME, _PULSE, _USER, _STATUS = 0x01, 0x02, 0x04, 0x08, 0x10
_FLAGS_RESERVED = 0xE0
_STATUS_RESERVED = 0xFFC0
_RANGE_SHIFT = 3
_FEATURE_RESERVED = 0xFE00
_NAN = MedFloat.absent(AbsentReason.nan)


_LAYOUTS = flag_layouts("HHH", ((_TIME, DATE_TIME_FORMAT), (_PULSE, "H"), (_USER, "B"), (_STATUS, "H")), 0x20)


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """One 0x2A35 indication; optional fields are None when not present.

    ``status`` and ``pulse_rate_range`` are both None, or both set, as the status field is present.
    """

    systolic: MedFloat
    diastolic: MedFloat
    mean_arterial_pressure: MedFloat
    unit: PressureUnit = PressureUnit.mmhg
    timestamp: datetime | None = None
    pulse_rate: MedFloat | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None
    pulse_rate_range: PulseRateRange | None = None

    def in_mmhg(self, value: MedFloat) -> float | None:
        """``value`` (one of this measurement's pressures) in mmHg, or None when absent."""
        v = value.value
        if v is None:
            return None
        return v * KPA_TO_MMHG if self.unit == PressureUnit.kpa else v


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """One 0x2A36 notification: the cuff pressure while a measurement is under way."""

    cuff_pressure: MedFloat
    unit: PressureUnit = PressureUnit.mmhg
    timestamp: datetime | None = None
    pulse_rate: MedFloat | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None
    pulse_rate_range: PulseRateRange | None = None


def _decode(
    data: BytesLike, characteristic: str
) -> tuple[
    MedFloat,
    MedFloat,
    MedFloat,
    PressureUnit,
    datetime | None,
    MedFloat | None,
    int | None,
    BloodPressureStatus | None,
    PulseRateRange | None,
]:
    flags, v = unpack_flagged(
        data,
        characteristic,
        _LAYOUTS,
        reserved=_FLAGS_RESERVED,
        reserved_bits="5-7",
        minimum="flags and three SFLOATs (7 bytes)",
    )
    systolic = sfloat_non_negative(v[0], "systolic", characteristic, data)
    diastolic = sfloat_non_negative(v[1], "diastolic", characteristic, data)
    mean = sfloat_non_negative(v[2], "mean arterial pressure", characteristic, data)
    i = 3
    ts = pulse = user = status = pr_range = None
    if flags & _TIME:
        ts = decode_date_time(v[3:9], characteristic, data)
        i = 9
    if flags & _PULSE:
        pulse = sfloat_non_negative(v[i], "pulse rate", characteristic, data)
        i += 1
    if flags & _USER:
        user = v[i]
        i += 1
    if flags & _STATUS:
        raw = v[i]
        if raw & _STATUS_RESERVED:
            raise decode_error(characteristic, f"measurement status: reserved bits 6-15 set (0x{raw:04x})", data)
        range_bits = (raw >> _RANGE_SHIFT) & 0x3
        if range_bits == 3:
            raise decode_error(characteristic, "measurement status: reserved pulse-rate range 3", data)
        status = BloodPressureStatus(raw & ~(0x3 << _RANGE_SHIFT))
        pr_range = PulseRateRange(range_bits)
    return systolic, diastolic, mean, PressureUnit(flags & _UNIT), ts, pulse, user, status, pr_range


def decode_blood_pressure_measurement(data: BytesLike) -> BloodPressureMeasurement:
    """Decode 0x2A35; :class:`GattDecodeError` on any malformed input."""
    return BloodPressureMeasurement(*_decode(data, BPM))


def decode_intermediate_cuff_pressure(data: BytesLike) -> IntermediateCuffPressure:
    """Decode 0x2A36 (the diastolic and mean fields are unused and ignored)."""
    cuff, _diastolic, _mean, *rest = _decode(data, ICP)
    return IntermediateCuffPressure(cuff, *rest)  # type: ignore[arg-type]


def _encode(
    pressures: tuple[MedFloat, MedFloat, MedFloat],
    unit: PressureUnit,
    timestamp: datetime | None,
    pulse_rate: MedFloat | None,
    user_id: int | None,
    status: BloodPressureStatus | None,
    pr_range: PulseRateRange | None,
) -> bytes:
    flags = _UNIT if unit == PressureUnit.kpa else 0
    names = ("systolic", "diastolic", "mean arterial pressure")
    body = b"".join(encode_sfloat_non_negative(p, f) for p, f in zip(pressures, names, strict=True))
    if timestamp is not None:
        flags |= _TIME
        body += encode_date_time(timestamp)
    if pulse_rate is not None:
        flags |= _PULSE
        body += encode_sfloat_non_negative(pulse_rate, "pulse rate")
    if user_id is not None:
        flags |= _USER
        body += bytes((check_uint("user id", user_id, 0xFF),))
    if (status is None) != (pr_range is None):
        raise GattEncodeError("status and pulse_rate_range must both be given or both be None")
    if status is not None and pr_range is not None:
        raw = check_uint("measurement status", status, 0xFFFF)
        if raw & (_STATUS_RESERVED | 0x3 << _RANGE_SHIFT):
            raise GattEncodeError(f"measurement status 0x{raw:04x} has reserved or pulse-rate range bits set")
        if not isinstance(pr_range, PulseRateRange):
            raise GattEncodeError(f"pulse-rate range {pr_range!r} is not a PulseRateRange")
        flags |= _STATUS
        body += U16.pack(raw | int(pr_range) << _RANGE_SHIFT)
    return bytes((flags,)) + body


def encode_blood_pressure_measurement(m: BloodPressureMeasurement) -> bytes:
    """Encode 0x2A35; flags follow from which optional fields are set."""
    require_type(m, BloodPressureMeasurement, "blood pressure measurement")
    return _encode(
        (m.systolic, m.diastolic, m.mean_arterial_pressure),
        m.unit,
        m.timestamp,
        m.pulse_rate,
        m.user_id,
        m.status,
        m.pulse_rate_range,
    )


def encode_intermediate_cuff_pressure(m: IntermediateCuffPressure) -> bytes:
    """Encode 0x2A36 (diastolic and mean sent as NaN, as the specification asks)."""
    require_type(m, IntermediateCuffPressure, "intermediate cuff pressure")
    return _encode(
        (m.cuff_pressure, _NAN, _NAN), m.unit, m.timestamp, m.pulse_rate, m.user_id, m.status, m.pulse_rate_range
    )


def decode_blood_pressure_feature(data: BytesLike) -> BloodPressureFeature:
    """Decode 0x2A49 (exactly 2 bytes)."""
    check_length(BPF, data, 2, "Blood Pressure Feature")
    raw = U16.unpack_from(data, 0)[0]
    if raw & _FEATURE_RESERVED:
        raise decode_error(BPF, f"reserved feature bits 9-15 set (0x{raw:04x})", data)
    return BloodPressureFeature(raw)


def encode_blood_pressure_feature(features: BloodPressureFeature) -> bytes:
    """Encode 0x2A49."""
    raw = check_uint("blood pressure feature", features, 0xFFFF)
    if raw & _FEATURE_RESERVED:
        raise GattEncodeError(f"blood pressure feature 0x{raw:04x} has reserved bits 9-15 set")
    return U16.pack(raw)
