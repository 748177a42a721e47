"""Heart Rate Measurement (0x2A37) and Body Sensor Location (0x2A38).

Heart Rate Measurement: flags u8 (bit0 HR is u16, bit1 sensor contact detected, bit2 sensor
contact supported, bit3 energy expended present, bit4 RR intervals present, bits 5-7 reserved),
HR, [energy expended u16 kJ], [RR u16 in 1/1024 s ...], little-endian.

Decisions: a heart rate of 0 is accepted (sensors send it while they have no reading; judging
plausibility is the consumer's job); bit1 without bit2 means "contact feature not supported"
(``sensor_contact`` None) as the spec says; the RR flag with no intervals decodes to ``()``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ._common import U16, BytesLike, check_uint, decode_error, require_type

__all__ = [
    "BodySensorLocation",
    "HeartRateMeasurement",
    "decode_body_sensor_location",
    "decode_heart_rate_measurement",
    "encode_body_sensor_location",
    "encode_heart_rate_measurement",
    "rr_ticks_from_seconds",
]

HRM = "Heart Rate Measurement (0x2A37)"
BSL = "Body Sensor Location (0x2A38)"

_FLAG_U16 = 0x01
_FLAG_CONTACT_DETECTED = 0x02
_FLAG_CONTACT_SUPPORTED = 0x04
_FLAG_ENERGY = 0x08
_FLAG_RR = 0x10
_FLAGS_RESERVED = 0xE0

_RR_STRUCTS = tuple(struct.Struct(f"<{n}H") for n in range(16))
_TICKS_PER_SECOND = 1024


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One 0x2A37 notification.

    ``sensor_contact`` is None when the sensor does not support contact detection.
    ``rr_ticks`` are the RR intervals as sent, in 1/1024 s; :attr:`rr_intervals` gives seconds.
    ``wide_heart_rate`` selects the u16 heart-rate format (used automatically above 255).
    """

    heart_rate: int
    sensor_contact: bool | None = None
    energy_expended: int | None = None
    rr_ticks: tuple[int, ...] = ()
    wide_heart_rate: bool = False

    @property
    def rr_intervals(self) -> tuple[float, ...]:
        """RR intervals in seconds."""
        return tuple(t / _TICKS_PER_SECOND for t in self.rr_ticks)


def rr_ticks_from_seconds(seconds: Iterable[float]) -> tuple[int, ...]:
    """RR intervals in seconds -> 1/1024 s ticks (rounded to nearest)."""
    return tuple(round(s * _TICKS_PER_SECOND) for s in seconds)


def decode_heart_rate_measurement(data: BytesLike) -> HeartRateMeasurement:
    """Decode 0x2A37; :class:`GattDecodeError` on any malformed input."""
    n = len(data)
    if n < 2:
        raise decode_error(HRM, f"truncated: needs at least 2 bytes (flags, heart rate), got {n}", data)
    flags = data[0]
    if flags & _FLAGS_RESERVED:
        raise decode_error(HRM, f"reserved flag bits 5-7 set (flags=0x{flags:02x})", data)
    if flags & _FLAG_U16:
        if n < 3:
            raise decode_error(HRM, f"truncated: u16 heart rate needs 3 bytes, got {n}", data)
        heart_rate = U16.unpack_from(data, 1)[0]
        offset = 3
    else:
        heart_rate = data[1]
        offset = 2
    energy = None
    if flags & _FLAG_ENERGY:
        if n < offset + 2:
            raise decode_error(HRM, f"truncated: energy expended needs {offset + 2} bytes, got {n}", data)
        energy = U16.unpack_from(data, offset)[0]
        offset += 2
    rest = n - offset
    rr: tuple[int, ...] = ()
    if flags & _FLAG_RR:
        if rest & 1:
            raise decode_error(HRM, f"RR intervals: odd number of bytes ({rest}) after offset {offset}", data)
        count = rest >> 1
        layout = _RR_STRUCTS[count] if count < len(_RR_STRUCTS) else struct.Struct(f"<{count}H")
        rr = layout.unpack_from(data, offset)
    elif rest:
        raise decode_error(HRM, f"{rest} trailing byte(s) after offset {offset} (RR flag not set)", data)
    if flags & _FLAG_CONTACT_SUPPORTED:
        contact: bool | None = bool(flags & _FLAG_CONTACT_DETECTED)
    else:
        contact = None
    return HeartRateMeasurement(heart_rate, contact, energy, rr, bool(flags & _FLAG_U16))


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """Encode 0x2A37; u16 heart rate if ``m.wide_heart_rate`` or the value exceeds 255."""
    require_type(m, HeartRateMeasurement, "heart rate measurement")
    hr = check_uint("heart rate", m.heart_rate, 0xFFFF)
    wide = m.wide_heart_rate or hr > 0xFF
    flags = _FLAG_U16 if wide else 0
    if m.sensor_contact is not None:
        flags |= _FLAG_CONTACT_SUPPORTED | (_FLAG_CONTACT_DETECTED if m.sensor_contact else 0)
    out = bytearray((flags,))
    out += U16.pack(hr) if wide else bytes((hr,))
    if m.energy_expended is not None:
        out[0] |= _FLAG_ENERGY
        out += U16.pack(check_uint("energy expended (kJ)", m.energy_expended, 0xFFFF))
    if m.rr_ticks:
        out[0] |= _FLAG_RR
        for tick in m.rr_ticks:
            out += U16.pack(check_uint("RR interval (1/1024 s ticks)", tick, 0xFFFF))
    return bytes(out)


class BodySensorLocation(enum.IntEnum):
    """Body Sensor Location values; 7-255 are reserved."""

    other = 0
    chest = 1
    wrist = 2
    finger = 3
    hand = 4
    ear_lobe = 5
    foot = 6


_LOCATIONS = tuple(BodySensorLocation)


def decode_body_sensor_location(data: BytesLike) -> BodySensorLocation:
    """Decode 0x2A38 (exactly one byte)."""
    if len(data) != 1:
        raise decode_error(BSL, f"needs exactly 1 byte, got {len(data)}", data)
    raw = data[0]
    if raw >= len(_LOCATIONS):
        raise decode_error(BSL, f"reserved location value {raw} (defined: 0..6)", data)
    return _LOCATIONS[raw]


def encode_body_sensor_location(location: BodySensorLocation) -> bytes:
    """Encode 0x2A38."""
    require_type(location, BodySensorLocation, "body sensor location")
    return bytes((location,))
