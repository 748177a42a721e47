"""UUID -> codec registry, decode/encode by UUID, and the JSON form of decoded values."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, TypeAlias, TypeVar

from wardwatch.core.errors import GattDecodeError, GattEncodeError

from ._common import BytesLike
from .device import (
    BatteryLevel,
    decode_battery_level,
    decode_device_information_string,
    encode_battery_level,
    encode_device_information_string,
)
from .heart_rate import (
    BodySensorLocation,
    HeartRateMeasurement,
    decode_body_sensor_location,
    decode_heart_rate_measurement,
    encode_body_sensor_location,
    encode_heart_rate_measurement,
)
from .ieee11073 import MedFloat
from .plx import (
    PlxContinuousMeasurement,
    PlxFeatures,
    PlxSpotCheckMeasurement,
    decode_plx_continuous_measurement,
    decode_plx_features,
    decode_plx_spot_check_measurement,
    encode_plx_continuous_measurement,
    encode_plx_features,
    encode_plx_spot_check_measurement,
    flag_names,
)
from .racp import RacpNumberOfRecords, RacpOpcode, RacpRequest, RacpResponse, decode_racp, encode_racp

__all__ = [
    "BATTERY_LEVEL",
    "BATTERY_SERVICE",
    "BODY_SENSOR_LOCATION",
    "CHARACTERISTICS",
    "DEVICE_INFORMATION_SERVICE",
    "FIRMWARE_REVISION_STRING",
    "HARDWARE_REVISION_STRING",
    "HEART_RATE_MEASUREMENT",
    "HEART_RATE_SERVICE",
    "MANUFACTURER_NAME_STRING",
    "MODEL_NUMBER_STRING",
    "PLX_CONTINUOUS_MEASUREMENT",
    "PLX_FEATURES",
    "PLX_SPOT_CHECK_MEASUREMENT",
    "PULSE_OXIMETER_SERVICE",
    "RECORD_ACCESS_CONTROL_POINT",
    "SERIAL_NUMBER_STRING",
    "SOFTWARE_REVISION_STRING",
    "Characteristic",
    "GattValue",
    "UnknownCharacteristicError",
    "characteristic_name",
    "decode",
    "encode",
    "lookup",
    "parse_uuid16",
    "sig_uuid",
    "to_jsonable",
]

HEART_RATE_SERVICE = 0x180D
PULSE_OXIMETER_SERVICE = 0x1822
BATTERY_SERVICE = 0x180F
DEVICE_INFORMATION_SERVICE = 0x180A

HEART_RATE_MEASUREMENT = 0x2A37
BODY_SENSOR_LOCATION = 0x2A38
PLX_SPOT_CHECK_MEASUREMENT = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT = 0x2A5F
PLX_FEATURES = 0x2A60
RECORD_ACCESS_CONTROL_POINT = 0x2A52
BATTERY_LEVEL = 0x2A19
MANUFACTURER_NAME_STRING = 0x2A29
MODEL_NUMBER_STRING = 0x2A24
SERIAL_NUMBER_STRING = 0x2A25
HARDWARE_REVISION_STRING = 0x2A27
FIRMWARE_REVISION_STRING = 0x2A26
SOFTWARE_REVISION_STRING = 0x2A28

GattValue: TypeAlias = (
    HeartRateMeasurement
    | BodySensorLocation
    | PlxContinuousMeasurement
    | PlxSpotCheckMeasurement
    | PlxFeatures
    | BatteryLevel
    | str
    | RacpRequest
    | RacpNumberOfRecords
    | RacpResponse
)

_SIG_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_FULL_UUID = re.compile(r"0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb")
_SHORT_UUID = re.compile(r"(?:0x)?(?:0000)?([0-9a-f]{4})")


class UnknownCharacteristicError(GattDecodeError):
    """The UUID is malformed or names no characteristic this package has a codec for."""


V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Characteristic(Generic[V]):
    """One supported characteristic: its 16-bit UUID, SIG name and codec (bytes <-> ``V``)."""

    uuid16: int
    name: str
    decode: Callable[[BytesLike], V]
    encode: Callable[[V], bytes]

    @property
    def uuid(self) -> str:
        """The full 128-bit UUID string."""
        return sig_uuid(self.uuid16)

    @property
    def label(self) -> str:
        """``Name (0x2A37)``, as used in error messages."""
        return f"{self.name} (0x{self.uuid16:04X})"


def sig_uuid(uuid16: int) -> str:
    """The full 128-bit form of a 16-bit Bluetooth SIG UUID."""
    return f"0000{uuid16:04x}{_SIG_BASE_SUFFIX}"


def parse_uuid16(uuid: str | int) -> int:
    """16-bit value of ``2a37``, ``0x2A37``, ``00002a37`` or ``00002a37-0000-1000-8000-00805f9b34fb``."""
    if isinstance(uuid, int):
        if not 0 <= uuid <= 0xFFFF:
            raise UnknownCharacteristicError(str(uuid), "16-bit UUID must be in 0..0xFFFF")
        return uuid
    text = uuid.strip().lower()
    match = _FULL_UUID.fullmatch(text) or _SHORT_UUID.fullmatch(text)
    if match is None:
        raise UnknownCharacteristicError(
            uuid, "not a Bluetooth SIG UUID (expected e.g. 2a37, 0x2A37 or 00002a37-0000-1000-8000-00805f9b34fb)"
        )
    return int(match.group(1), 16)


def _device_information(uuid16: int, name: str) -> Characteristic[str]:
    label = f"{name} (0x{uuid16:04X})"

    def decode_string(data: BytesLike) -> str:
        return decode_device_information_string(data, label)

    return Characteristic(uuid16, name, decode_string, encode_device_information_string)


CHARACTERISTICS: Mapping[int, Characteristic[Any]] = MappingProxyType(
    {
        c.uuid16: c
        for c in (
            Characteristic(
                HEART_RATE_MEASUREMENT,
                "Heart Rate Measurement",
                decode_heart_rate_measurement,
                encode_heart_rate_measurement,
            ),
            Characteristic(
                BODY_SENSOR_LOCATION, "Body Sensor Location", decode_body_sensor_location, encode_body_sensor_location
            ),
            Characteristic(
                PLX_SPOT_CHECK_MEASUREMENT,
                "PLX Spot-Check Measurement",
                decode_plx_spot_check_measurement,
                encode_plx_spot_check_measurement,
            ),
            Characteristic(
                PLX_CONTINUOUS_MEASUREMENT,
                "PLX Continuous Measurement",
                decode_plx_continuous_measurement,
                encode_plx_continuous_measurement,
            ),
            Characteristic(PLX_FEATURES, "PLX Features", decode_plx_features, encode_plx_features),
            Characteristic(RECORD_ACCESS_CONTROL_POINT, "Record Access Control Point", decode_racp, encode_racp),
            Characteristic(BATTERY_LEVEL, "Battery Level", decode_battery_level, encode_battery_level),
            _device_information(MANUFACTURER_NAME_STRING, "Manufacturer Name String"),
            _device_information(MODEL_NUMBER_STRING, "Model Number String"),
            _device_information(SERIAL_NUMBER_STRING, "Serial Number String"),
            _device_information(HARDWARE_REVISION_STRING, "Hardware Revision String"),
            _device_information(FIRMWARE_REVISION_STRING, "Firmware Revision String"),
            _device_information(SOFTWARE_REVISION_STRING, "Software Revision String"),
        )
    }
)
"""Supported characteristics by 16-bit UUID."""


def lookup(uuid: str | int) -> Characteristic[Any]:
    """The codec for ``uuid``; :class:`UnknownCharacteristicError` if there is none."""
    uuid16 = parse_uuid16(uuid)
    found = CHARACTERISTICS.get(uuid16)
    if found is None:
        raise UnknownCharacteristicError(str(uuid), f"no codec for characteristic 0x{uuid16:04X}")
    return found


def characteristic_name(uuid: str | int) -> str:
    """The Bluetooth SIG name, e.g. ``Heart Rate Measurement`` for ``2a37``."""
    return lookup(uuid).name


def decode(uuid: str | int, data: BytesLike) -> GattValue:
    """Decode ``data`` as characteristic ``uuid``; raises only :class:`GattDecodeError` (or subclass)."""
    value: GattValue = lookup(uuid).decode(data)
    return value


def encode(uuid: str | int, value: GattValue | int) -> bytes:
    """Encode ``value`` for characteristic ``uuid``; :class:`GattEncodeError` if unrepresentable."""
    return lookup(uuid).encode(value)


def _put(out: dict[str, Any], field: str, value: MedFloat | None) -> None:
    if value is None:
        out[field] = None
    elif value.absent_reason is not None:
        out[field] = None
        out[f"{field}_absent_reason"] = value.absent_reason.value
    else:
        out[field] = value.value


def to_jsonable(value: object) -> dict[str, Any]:
    """JSON-ready dict with snake_case keys; absent SFLOATs are null plus ``<field>_absent_reason``."""
    out: dict[str, Any] = {}
    if isinstance(value, HeartRateMeasurement):
        out["heart_rate"] = value.heart_rate
        out["sensor_contact"] = value.sensor_contact
        out["energy_expended"] = value.energy_expended
        out["rr_intervals"] = list(value.rr_intervals)
    elif isinstance(value, PlxContinuousMeasurement):
        _put(out, "spo2", value.spo2)
        _put(out, "pulse_rate", value.pulse_rate)
        _put(out, "spo2_fast", value.spo2_fast)
        _put(out, "pulse_rate_fast", value.pulse_rate_fast)
        _put(out, "spo2_slow", value.spo2_slow)
        _put(out, "pulse_rate_slow", value.pulse_rate_slow)
        out["measurement_status"] = _names(value.measurement_status)
        out["device_sensor_status"] = _names(value.device_sensor_status)
        _put(out, "pulse_amplitude_index", value.pulse_amplitude_index)
    elif isinstance(value, PlxSpotCheckMeasurement):
        _put(out, "spo2", value.spo2)
        _put(out, "pulse_rate", value.pulse_rate)
        out["timestamp"] = None if value.timestamp is None else value.timestamp.isoformat()
        out["measurement_status"] = _names(value.measurement_status)
        out["device_sensor_status"] = _names(value.device_sensor_status)
        _put(out, "pulse_amplitude_index", value.pulse_amplitude_index)
        out["device_clock_not_set"] = value.device_clock_not_set
    elif isinstance(value, PlxFeatures):
        out["supported_features"] = flag_names(value.features)
        out["measurement_status_support"] = _names(value.measurement_status_support)
        out["device_sensor_status_support"] = _names(value.device_sensor_status_support)
    elif isinstance(value, BodySensorLocation):
        out["body_sensor_location"] = value.name
    elif isinstance(value, BatteryLevel):
        out["battery_level"] = value.percent
    elif isinstance(value, str):
        out["value"] = value
    elif not isinstance(value, RacpRequest | RacpNumberOfRecords | RacpResponse):
        out.update(_generic_jsonable(value))
    elif isinstance(value, RacpRequest):
        out["opcode"] = value.opcode.name
        out["operator"] = value.operator.name
        out["operand"] = value.operand.hex()
    elif isinstance(value, RacpNumberOfRecords):
        out["opcode"] = RacpOpcode.number_of_stored_records_response.name
        out["number_of_records"] = value.count
    else:
        _require_racp_response(value)
        out["opcode"] = RacpOpcode.response_code.name
        out["request_opcode"] = value.request_opcode
        out["request_opcode_name"] = _OPCODE_NAMES.get(value.request_opcode)
        out["response_code"] = value.code.name
    return out


_OPCODE_NAMES = {op.value: op.name for op in RacpOpcode}


def _jsonable_field(value: object) -> Any:
    if isinstance(value, enum.IntFlag):
        return flag_names(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _generic_jsonable(value)
    return value


def _generic_jsonable(value: object) -> dict[str, Any]:
    """Any other decoded value: dataclass fields by name (MedFloat as in :func:`_put`), enums by name."""
    if isinstance(value, enum.Enum):
        return {"value": _jsonable_field(value)}
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise GattEncodeError(f"no JSON form for {type(value).__name__}")
    out: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if isinstance(item, MedFloat):
            _put(out, field.name, item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            out.update(_generic_jsonable(item))
        else:
            out[field.name] = _jsonable_field(item)
    return out


def _require_racp_response(value: object) -> None:
    if not isinstance(value, RacpResponse):
        raise GattEncodeError(f"no JSON form for {type(value).__name__}")


def _names(flags: enum.IntFlag | None) -> list[str] | None:
    return None if flags is None else flag_names(flags)
