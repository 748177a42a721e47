"""Pulse Oximeter Service: PLX Spot-Check (0x2A5E), Continuous (0x2A5F), Features (0x2A60).

Bit positions were checked against public decoders: Infineon/bless ``cy_ble_plxs.h`` (Device and
Sensor Status bits 0-15 from Extended Display Update Ongoing to Sensor Disconnected, Sensor
Unconnected to User = bit 11; Measurement Status bits 5-15 from Measurement Ongoing to Invalid
Measurement Detected; Spot-Check flags bit0 timestamp .. bit4 device clock not set; Continuous
flags bit0 SpO2PR-Fast .. bit4 PAI; Features bits 0-7), plus the RivieraWaves ``plxp_common.h``
(``PLXP_MEAS_STATUS_VALID_MASK 0xFFE0``: Measurement Status bits 0-4 reserved).

Decisions: reserved bits set in flags or status fields are errors; SpO2 must be within 0..100 %,
pulse rate and pulse amplitude index must not be negative (special values such as NaN are
allowed anywhere); a timestamp with a 0 ("unknown") year, month or day is an error because it
cannot be a ``datetime``. Timestamps are naive: the Date Time field carries no time zone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from wardwatch.core.errors import GattEncodeError

from ._common import (
    DATE_TIME_FORMAT,
    U16,
    U16_U8,
    BytesLike,
    check_length,
    check_uint,
    decode_date_time,
    decode_error,
    encode_date_time,
    flag_layouts,
    require_type,
    u24_to_bytes,
    unpack_flagged,
)
from .ieee11073 import MedFloat, encode_sfloat_non_negative, sfloat_from_raw, sfloat_non_negative, sfloat_to_raw

__all__ = [
    "DeviceSensorStatus",
    "MeasurementStatus",
    "PlxContinuousMeasurement",
    "PlxFeatureFlags",
    "PlxFeatures",
    "PlxSpotCheckMeasurement",
    "decode_plx_continuous_measurement",
    "decode_plx_features",
    "decode_plx_spot_check_measurement",
    "encode_plx_continuous_measurement",
    "encode_plx_features",
    "encode_plx_spot_check_measurement",
    "flag_names",
]

SPOT = "PLX Spot-Check Measurement (0x2A5E)"
CONT = "PLX Continuous Measurement (0x2A5F)"
FEAT = "PLX Features (0x2A60)"


class MeasurementStatus(enum.IntFlag):
    """Measurement Status (u16); bits 0-4 are reserved."""

    measurement_ongoing = 1 << 5
    early_estimated_data = 1 << 6
    validated_data = 1 << 7
    fully_qualified_data = 1 << 8
    data_from_measurement_storage = 1 << 9
    data_for_demonstration = 1 << 10
    data_for_testing = 1 << 11
    calibration_ongoing = 1 << 12
    measurement_unavailable = 1 << 13
    questionable_measurement_detected = 1 << 14
    invalid_measurement_detected = 1 << 15


class DeviceSensorStatus(enum.IntFlag):
    """Device and Sensor Status (u24); bits 16-23 are reserved."""

    extended_display_update_ongoing = 1 << 0
    equipment_malfunction_detected = 1 << 1
    signal_processing_irregularity_detected = 1 << 2
    inadequate_signal_detected = 1 << 3
    poor_signal_detected = 1 << 4
    low_perfusion_detected = 1 << 5
    erratic_signal_detected = 1 << 6
    nonpulsatile_signal_detected = 1 << 7
    questionable_pulse_detected = 1 << 8
    signal_analysis_ongoing = 1 << 9
    sensor_interference_detected = 1 << 10
    sensor_unconnected_to_user = 1 << 11
    unknown_sensor_connected = 1 << 12
    sensor_displaced = 1 << 13
    sensor_malfunctioning = 1 << 14
    sensor_disconnected = 1 << 15


class PlxFeatureFlags(enum.IntFlag):
    """Supported Features (u16) of 0x2A60; bits 8-15 are reserved."""

    measurement_status_support = 1 << 0
    device_and_sensor_status_support = 1 << 1
    measurement_storage_for_spot_check = 1 << 2
    timestamp_for_spot_check = 1 << 3
    spo2pr_fast = 1 << 4
    spo2pr_slow = 1 << 5
    pulse_amplitude_index = 1 << 6
    multiple_bonds = 1 << 7


_MS_RESERVED = 0x001F
_DSS_RESERVED = 0xFF0000
_FEAT_RESERVED = 0xFF00


def flag_names(flags: enum.IntFlag) -> list[str]:
    """Names of the set members, lowest bit first."""
    return [str(member.name) for member in flags]


_measurement_status = lru_cache(maxsize=512)(MeasurementStatus)
_device_sensor_status = lru_cache(maxsize=512)(DeviceSensorStatus)


def _decode_ms(raw: int, characteristic: str, data: BytesLike, what: str = "measurement status") -> MeasurementStatus:
    if raw & _MS_RESERVED:
        raise decode_error(characteristic, f"{what}: reserved bits 0-4 set (0x{raw:04x})", data)
    return _measurement_status(raw)


def _decode_dss(
    low: int, high: int, characteristic: str, data: BytesLike, what: str = "device and sensor status"
) -> DeviceSensorStatus:
    if high:
        raise decode_error(characteristic, f"{what}: reserved bits 16-23 set (0x{high << 16 | low:06x})", data)
    return _device_sensor_status(low)


def _encode_ms(status: MeasurementStatus, what: str = "measurement status") -> bytes:
    raw = check_uint(what, status, 0xFFFF)
    if raw & _MS_RESERVED:
        raise GattEncodeError(f"{what} 0x{raw:04x} has reserved bits 0-4 set")
    return U16.pack(raw)


def _encode_dss(status: DeviceSensorStatus, what: str = "device and sensor status") -> bytes:
    raw = check_uint(what, status, 0xFFFFFF)
    if raw & _DSS_RESERVED:
        raise GattEncodeError(f"{what} 0x{raw:06x} has reserved bits 16-23 set")
    return u24_to_bytes(raw)


def _spo2(raw: int, field: str, characteristic: str, data: BytesLike) -> MedFloat:
    value = sfloat_from_raw(raw)
    v = value.value
    if v is not None and not 0.0 <= v <= 100.0:
        raise decode_error(characteristic, f"{field} {value} % outside 0..100", data)
    return value


def _encode_spo2(value: MedFloat, field: str) -> bytes:
    require_type(value, MedFloat, field)
    v = value.value
    if v is not None and not 0.0 <= v <= 100.0:
        raise GattEncodeError(f"{field} {value} % outside 0..100")
    return U16.pack(sfloat_to_raw(value))


# --- PLX Continuous Measurement (0x2A5F) ---------------------------------------------------------

_C_FAST, _C_SLOW, _C_MS, _C_DSS, _C_PAI = 0x01, 0x02, 0x04, 0x08, 0x10
_C_RESERVED = 0xE0


_CONT_LAYOUTS = flag_layouts(
    "HH", ((_C_FAST, "HH"), (_C_SLOW, "HH"), (_C_MS, "H"), (_C_DSS, "HB"), (_C_PAI, "H")), 0x20
)


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """One 0x2A5F notification; optional fields are None when not present."""

    spo2: MedFloat
    pulse_rate: MedFloat
    spo2_fast: MedFloat | None = None
    pulse_rate_fast: MedFloat | None = None
    spo2_slow: MedFloat | None = None
    pulse_rate_slow: MedFloat | None = None
    measurement_status: MeasurementStatus | None = None
    device_sensor_status: DeviceSensorStatus | None = None
    pulse_amplitude_index: MedFloat | None = None


def decode_plx_continuous_measurement(data: BytesLike) -> PlxContinuousMeasurement:
    """Decode 0x2A5F; :class:`GattDecodeError` on any malformed input."""
    flags, v = unpack_flagged(
        data,
        CONT,
        _CONT_LAYOUTS,
        reserved=_C_RESERVED,
        reserved_bits="5-7",
        minimum="flags, SpO2 and PR (5 bytes)",
    )
    spo2 = _spo2(v[0], "SpO2", CONT, data)
    pr = sfloat_non_negative(v[1], "pulse rate", CONT, data)
    i = 2
    spo2_fast = pr_fast = spo2_slow = pr_slow = pai = None
    ms = None
    dss = None
    if flags & _C_FAST:
        spo2_fast = _spo2(v[2], "SpO2 fast", CONT, data)
        pr_fast = sfloat_non_negative(v[3], "pulse rate fast", CONT, data)
        i = 4
    if flags & _C_SLOW:
        spo2_slow = _spo2(v[i], "SpO2 slow", CONT, data)
        pr_slow = sfloat_non_negative(v[i + 1], "pulse rate slow", CONT, data)
        i += 2
    if flags & _C_MS:
        ms = _decode_ms(v[i], CONT, data)
        i += 1
    if flags & _C_DSS:
        dss = _decode_dss(v[i], v[i + 1], CONT, data)
        i += 2
    if flags & _C_PAI:
        pai = sfloat_non_negative(v[i], "pulse amplitude index", CONT, data)
    return PlxContinuousMeasurement(spo2, pr, spo2_fast, pr_fast, spo2_slow, pr_slow, ms, dss, pai)


def _pair(spo2: MedFloat | None, pr: MedFloat | None, name: str) -> bytes:
    if (spo2 is None) != (pr is None):
        raise GattEncodeError(f"SpO2PR-{name}: SpO2 and pulse rate must both be given or both be None")
    if spo2 is None or pr is None:
        return b""
    return _encode_spo2(spo2, f"SpO2 {name.lower()}") + encode_sfloat_non_negative(pr, f"pulse rate {name.lower()}")


def encode_plx_continuous_measurement(m: PlxContinuousMeasurement) -> bytes:
    """Encode 0x2A5F; flags follow from which optional fields are set."""
    require_type(m, PlxContinuousMeasurement, "PLX continuous measurement")
    flags = 0
    body = _encode_spo2(m.spo2, "SpO2") + encode_sfloat_non_negative(m.pulse_rate, "pulse rate")
    fast = _pair(m.spo2_fast, m.pulse_rate_fast, "Fast")
    if fast:
        flags |= _C_FAST
        body += fast
    slow = _pair(m.spo2_slow, m.pulse_rate_slow, "Slow")
    if slow:
        flags |= _C_SLOW
        body += slow
    if m.measurement_status is not None:
        flags |= _C_MS
        body += _encode_ms(m.measurement_status)
    if m.device_sensor_status is not None:
        flags |= _C_DSS
        body += _encode_dss(m.device_sensor_status)
    if m.pulse_amplitude_index is not None:
        flags |= _C_PAI
        body += encode_sfloat_non_negative(m.pulse_amplitude_index, "pulse amplitude index")
    return bytes((flags,)) + body


# --- PLX Spot-Check Measurement (0x2A5E) ---------------------------------------------------------

_S_TIME, _S_MS, _S_DSS, _S_PAI, _S_CLOCK_NOT_SET = 0x01, 0x02, 0x04, 0x08, 0x10
_S_RESERVED = 0xE0


_SPOT_LAYOUTS = flag_layouts("HH", ((_S_TIME, DATE_TIME_FORMAT), (_S_MS, "H"), (_S_DSS, "HB"), (_S_PAI, "H")), 0x10)


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """One 0x2A5E indication; optional fields are None when not present."""

    spo2: MedFloat
    pulse_rate: MedFloat
    timestamp: datetime | None = None
    measurement_status: MeasurementStatus | None = None
    device_sensor_status: DeviceSensorStatus | None = None
    pulse_amplitude_index: MedFloat | None = None
    device_clock_not_set: bool = False


def _decode_timestamp(fields: tuple[int, ...], data: BytesLike) -> datetime:
    return decode_date_time(fields, SPOT, data)


_encode_timestamp = encode_date_time


def decode_plx_spot_check_measurement(data: BytesLike) -> PlxSpotCheckMeasurement:
    """Decode 0x2A5E; :class:`GattDecodeError` on any malformed input."""
    flags, v = unpack_flagged(
        data,
        SPOT,
        _SPOT_LAYOUTS,
        reserved=_S_RESERVED,
        reserved_bits="5-7",
        minimum="flags, SpO2 and PR (5 bytes)",
        layout_mask=0x0F,
    )
    spo2 = _spo2(v[0], "SpO2", SPOT, data)
    pr = sfloat_non_negative(v[1], "pulse rate", SPOT, data)
    i = 2
    ts = None
    ms = None
    dss = None
    pai = None
    if flags & _S_TIME:
        ts = _decode_timestamp(v[2:8], data)
        i = 8
    if flags & _S_MS:
        ms = _decode_ms(v[i], SPOT, data)
        i += 1
    if flags & _S_DSS:
        dss = _decode_dss(v[i], v[i + 1], SPOT, data)
        i += 2
    if flags & _S_PAI:
        pai = sfloat_non_negative(v[i], "pulse amplitude index", SPOT, data)
    return PlxSpotCheckMeasurement(spo2, pr, ts, ms, dss, pai, bool(flags & _S_CLOCK_NOT_SET))


def encode_plx_spot_check_measurement(m: PlxSpotCheckMeasurement) -> bytes:
    """Encode 0x2A5E; flags follow from which optional fields are set.

    Sub-second parts of the timestamp are dropped (Date Time has 1 s resolution).
    """
    require_type(m, PlxSpotCheckMeasurement, "PLX spot-check measurement")
    flags = _S_CLOCK_NOT_SET if m.device_clock_not_set else 0
    body = _encode_spo2(m.spo2, "SpO2") + encode_sfloat_non_negative(m.pulse_rate, "pulse rate")
    if m.timestamp is not None:
        flags |= _S_TIME
        body += _encode_timestamp(m.timestamp)
    if m.measurement_status is not None:
        flags |= _S_MS
        body += _encode_ms(m.measurement_status)
    if m.device_sensor_status is not None:
        flags |= _S_DSS
        body += _encode_dss(m.device_sensor_status)
    if m.pulse_amplitude_index is not None:
        flags |= _S_PAI
        body += encode_sfloat_non_negative(m.pulse_amplitude_index, "pulse amplitude index")
    return bytes((flags,)) + body


# --- PLX Features (0x2A60) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """0x2A60: supported features, and which status bits the device can set (if it says so)."""

    features: PlxFeatureFlags
    measurement_status_support: MeasurementStatus | None = None
    device_sensor_status_support: DeviceSensorStatus | None = None


def decode_plx_features(data: BytesLike) -> PlxFeatures:
    """Decode 0x2A60; :class:`GattDecodeError` on any malformed input."""
    n = len(data)
    if n < 2:
        raise decode_error(FEAT, f"truncated: needs at least 2 bytes (supported features), got {n}", data)
    raw = U16.unpack_from(data, 0)[0]
    if raw & _FEAT_RESERVED:
        raise decode_error(FEAT, f"reserved feature bits 8-15 set (0x{raw:04x})", data)
    features = PlxFeatureFlags(raw)
    expected = 2
    expected += 2 if raw & PlxFeatureFlags.measurement_status_support else 0
    expected += 3 if raw & PlxFeatureFlags.device_and_sensor_status_support else 0
    check_length(FEAT, data, expected, f"features 0x{raw:04x}")
    offset = 2
    ms = None
    dss = None
    if raw & PlxFeatureFlags.measurement_status_support:
        ms = _decode_ms(U16.unpack_from(data, 2)[0], FEAT, data, "measurement status support")
        offset = 4
    if raw & PlxFeatureFlags.device_and_sensor_status_support:
        low, high = U16_U8.unpack_from(data, offset)
        dss = _decode_dss(low, high, FEAT, data, "device and sensor status support")
    return PlxFeatures(features, ms, dss)


def encode_plx_features(f: PlxFeatures) -> bytes:
    """Encode 0x2A60; the support fields must be given exactly when their feature bits are set."""
    require_type(f, PlxFeatures, "PLX features")
    raw = check_uint("PLX features", f.features, 0xFFFF)
    if raw & _FEAT_RESERVED:
        raise GattEncodeError(f"PLX features 0x{raw:04x} has reserved bits 8-15 set")
    out = U16.pack(raw)
    has_ms = bool(raw & PlxFeatureFlags.measurement_status_support)
    if has_ms != (f.measurement_status_support is not None):
        raise GattEncodeError("measurement_status_support must be given iff measurement_status_support bit is set")
    has_dss = bool(raw & PlxFeatureFlags.device_and_sensor_status_support)
    if has_dss != (f.device_sensor_status_support is not None):
        raise GattEncodeError(
            "device_sensor_status_support must be given iff device_and_sensor_status_support bit is set"
        )
    if f.measurement_status_support is not None:
        out += _encode_ms(f.measurement_status_support, "measurement status support")
    if f.device_sensor_status_support is not None:
        out += _encode_dss(f.device_sensor_status_support, "device and sensor status support")
    return out
