"""Battery Level (0x2A19) and the Device Information (0x180A) strings (0x2A24-0x2A29)."""

from __future__ import annotations

from dataclasses import dataclass

from wardwatch.core.errors import GattEncodeError

from ._common import BytesLike, check_uint, decode_error, require_type

__all__ = [
    "BatteryLevel",
    "decode_battery_level",
    "decode_device_information_string",
    "encode_battery_level",
    "encode_device_information_string",
]

BATTERY = "Battery Level (0x2A19)"


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery charge in percent, 0..100."""

    percent: int


_LEVELS = tuple(BatteryLevel(p) for p in range(101))


def decode_battery_level(data: BytesLike) -> BatteryLevel:
    """Decode 0x2A19 (exactly one byte, 0..100)."""
    if len(data) != 1:
        raise decode_error(BATTERY, f"needs exactly 1 byte, got {len(data)}", data)
    raw = data[0]
    if raw > 100:
        raise decode_error(BATTERY, f"level {raw} % above 100", data)
    return _LEVELS[raw]


def encode_battery_level(level: BatteryLevel | int) -> bytes:
    """Encode 0x2A19 from a :class:`BatteryLevel` or a plain percentage."""
    percent = level.percent if isinstance(level, BatteryLevel) else level
    return bytes((check_uint("battery level (%)", percent, 100),))


def decode_device_information_string(data: BytesLike, characteristic: str = "Device Information string") -> str:
    """UTF-8 text with trailing NULs stripped (some firmwares pad with them)."""
    raw = bytes(data).rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(characteristic, f"invalid UTF-8 at byte {exc.start}: {exc.reason}", data) from None


def encode_device_information_string(text: str) -> bytes:
    """UTF-8 bytes of ``text`` (no unpaired surrogates, no trailing NUL)."""
    require_type(text, str, "device information string")
    if text.endswith("\x00"):
        raise GattEncodeError("text ends with NUL, which decoders strip")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GattEncodeError(f"text is not encodable as UTF-8 at position {exc.start}: {exc.reason}") from None
