"""Health Thermometer Service (0x1809): Temperature Measurement (0x2A1C), Temperature Type (0x2A1D),
Intermediate Temperature (0x2A1E), Measurement Interval (0x2A21).

Layout (Bluetooth SIG Health Thermometer Service 1.0, checked against Wireshark's
``packet-btatt.c`` and the Nordic ``ble_hts`` encoder): flags u8 (bit0 Fahrenheit, else Celsius;
bit1 timestamp; bit2 temperature type; bits 3-7 reserved), temperature (IEEE 11073 FLOAT, 4 bytes),
[Date Time, 7 bytes], [temperature type u8]. Temperature Type values 1-9 (armpit .. tympanum),
0 and 10-255 reserved. Intermediate Temperature has the same layout. Measurement Interval is a u16
in seconds (0: no periodic measurement).

Decisions: reserved flags and temperature types are errors; a timestamp with a 0 year, month or
day is an error (as in :mod:`.plx`); the temperature itself is not range-checked here (°F and °C
differ; plausibility is the consumer's job, after conversion).
"""

from __future__ import annotations

import enum
import struct
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
from .ieee11073 import MedFloat, float_from_raw, float_to_raw

__all__ = [
    "IntermediateTemperature",
    "MeasurementInterval",
    "TemperatureMeasurement",
    "TemperatureType",
    "TemperatureUnit",
    "decode_intermediate_temperature",
    "decode_measurement_interval",
    "decode_temperature_measurement",
    "decode_temperature_type",
    "encode_intermediate_temperature",
    "encode_measurement_interval",
    "encode_temperature_measurement",
    "encode_temperature_type",
]

TM = "Temperature Measurement (0x2A1C)"
TT = "Temperature Type (0x2A1D)"
IT = "Intermediate Temperature (0x2A1E)"
MI = "Measurement Interval (0x2A21)"


class TemperatureUnit(enum.IntEnum):
    """Flags bit 0."""

    celsius = 0
    fahrenheit = 1


class TemperatureType(enum.IntEnum):
    """Where the temperature was taken."""

    armpit = 1
    body = 2
    ear = 3
    finger = 4
    gastrointestinal_tract = 5
    mouth = 6
    rectum = 7
    toe = 8
    tympanum = 9


_UNIT, _TIME, _TYPE = 0x01, 0x02, 0x04
_FLAGS_RESERVED = 0xF8


_LAYOUTS = flag_layouts("I", ((_TIME, DATE_TIME_FORMAT), (_TYPE, "B")), 0x08)


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """One 0x2A1C indication; optional fields are None when not present."""

    temperature: MedFloat
    unit: TemperatureUnit = TemperatureUnit.celsius
    timestamp: datetime | None = None
    temperature_type: TemperatureType | None = None

    @property
    def celsius(self) -> float | None:
        """The temperature in °C, or None when absent."""
        v = self.temperature.value
        if v is None:
            return None
        return (v - 32.0) * 5.0 / 9.0 if self.unit == TemperatureUnit.fahrenheit else v


@dataclass(frozen=True, slots=True)
class IntermediateTemperature:
    """One 0x2A1E notification (same fields as a measurement, while it is being taken)."""

    measurement: TemperatureMeasurement


@dataclass(frozen=True, slots=True)
class MeasurementInterval:
    """0x2A21: seconds between periodic measurements (0: none)."""

    seconds: int


def _temperature_type(raw: int, characteristic: str, data: BytesLike) -> TemperatureType:
    if not 1 <= raw <= 9:
        raise decode_error(characteristic, f"reserved temperature type {raw} (valid: 1..9)", data)
    return TemperatureType(raw)


def _decode(data: BytesLike, characteristic: str) -> TemperatureMeasurement:
    flags, v = unpack_flagged(
        data,
        characteristic,
        _LAYOUTS,
        reserved=_FLAGS_RESERVED,
        reserved_bits="3-7",
        minimum="flags and a FLOAT (5 bytes)",
    )
    ts = None
    kind = None
    i = 1
    if flags & _TIME:
        ts = decode_date_time(v[1:7], characteristic, data)
        i = 7
    if flags & _TYPE:
        kind = _temperature_type(v[i], characteristic, data)
    return TemperatureMeasurement(float_from_raw(v[0]), TemperatureUnit(flags & _UNIT), ts, kind)


def _encode(m: TemperatureMeasurement) -> bytes:
    require_type(m, TemperatureMeasurement, "temperature measurement")
    require_type(m.temperature, MedFloat, "temperature")
    flags = _UNIT if m.unit == TemperatureUnit.fahrenheit else 0
    body = struct.pack("<I", float_to_raw(m.temperature))
    if m.timestamp is not None:
        flags |= _TIME
        body += encode_date_time(m.timestamp)
    if m.temperature_type is not None:
        if not isinstance(m.temperature_type, TemperatureType):
            raise GattEncodeError(f"temperature type {m.temperature_type!r} is not a TemperatureType")
        flags |= _TYPE
        body += bytes((m.temperature_type,))
    return bytes((flags,)) + body


def decode_temperature_measurement(data: BytesLike) -> TemperatureMeasurement:
    """Decode 0x2A1C; :class:`GattDecodeError` on any malformed input."""
    return _decode(data, TM)


def encode_temperature_measurement(m: TemperatureMeasurement) -> bytes:
    """Encode 0x2A1C; flags follow from which optional fields are set."""
    return _encode(m)


def decode_intermediate_temperature(data: BytesLike) -> IntermediateTemperature:
    """Decode 0x2A1E."""
    return IntermediateTemperature(_decode(data, IT))


def encode_intermediate_temperature(m: IntermediateTemperature) -> bytes:
    """Encode 0x2A1E."""
    require_type(m, IntermediateTemperature, "intermediate temperature")
    return _encode(m.measurement)


def decode_temperature_type(data: BytesLike) -> TemperatureType:
    """Decode 0x2A1D (exactly one byte, 1..9)."""
    check_length(TT, data, 1, "Temperature Type")
    return _temperature_type(data[0], TT, data)


def encode_temperature_type(kind: TemperatureType) -> bytes:
    """Encode 0x2A1D."""
    if not isinstance(kind, TemperatureType):
        raise GattEncodeError(f"temperature type {kind!r} is not a TemperatureType")
    return bytes((kind,))


def decode_measurement_interval(data: BytesLike) -> MeasurementInterval:
    """Decode 0x2A21 (u16 seconds)."""
    check_length(MI, data, 2, "Measurement Interval")
    return MeasurementInterval(U16.unpack_from(data, 0)[0])


def encode_measurement_interval(interval: MeasurementInterval) -> bytes:
    """Encode 0x2A21."""
    require_type(interval, MeasurementInterval, "measurement interval")
    return U16.pack(check_uint("measurement interval (s)", interval.seconds, 0xFFFF))
