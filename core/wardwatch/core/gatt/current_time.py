"""Current Time Service (0x1805): Current Time (0x2A2B).

Layout (Bluetooth SIG Current Time Service 1.1, checked against Wireshark's ``packet-btatt.c``):
Exact Time 256 = Date Time (7 bytes) + day of week (u8, 1 Monday .. 7 Sunday, 0 unknown) +
fractions256 (u8, 1/256 s), then adjust reason (u8 flags: bit0 manual time update, bit1 external
reference time update, bit2 change of time zone, bit3 change of DST; bits 4-7 reserved). 10 bytes.

A gateway writes it on connect so that a device's clock is set and does not drift: the timestamps of
the measurements it stores afterwards are then right.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from wardwatch.core.errors import GattEncodeError

from ._common import (
    BytesLike,
    check_length,
    check_uint,
    decode_date_time,
    decode_error,
    encode_date_time,
    require_type,
)

__all__ = ["CurrentTime", "decode_current_time", "encode_current_time"]

CT = "Current Time (0x2A2B)"
EXTERNAL_REFERENCE = 0x02  # adjust reason: external reference time update
_LAYOUT = struct.Struct("<HBBBBBBBB")
_REASON_RESERVED = 0xF0


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """A device's clock: naive local time, day of week (0 unknown), 1/256 s, adjust reason flags."""

    timestamp: datetime
    day_of_week: int = 0
    fractions256: int = 0
    adjust_reason: int = 0

    @classmethod
    def of(cls, moment: datetime, adjust_reason: int = EXTERNAL_REFERENCE) -> CurrentTime:
        """The value that sets a device's clock to ``moment`` (naive local time)."""
        fractions = moment.microsecond * 256 // 1_000_000
        return cls(moment.replace(microsecond=0), moment.isoweekday(), fractions, adjust_reason)


def decode_current_time(data: BytesLike) -> CurrentTime:
    """Decode 0x2A2B (exactly 10 bytes)."""
    check_length(CT, data, _LAYOUT.size, "Current Time")
    v = _LAYOUT.unpack_from(data, 0)
    timestamp = decode_date_time(v[0:6], CT, data)
    day, fractions, reason = v[6], v[7], v[8]
    if day > 7:
        raise decode_error(CT, f"day of week {day} outside 0..7", data)
    if reason & _REASON_RESERVED:
        raise decode_error(CT, f"adjust reason: reserved bits 4-7 set (0x{reason:02x})", data)
    return CurrentTime(timestamp, day, fractions, reason)


def encode_current_time(value: CurrentTime) -> bytes:
    """Encode 0x2A2B."""
    require_type(value, CurrentTime, "current time")
    day = check_uint("day of week", value.day_of_week, 7)
    fractions = check_uint("fractions256", value.fractions256, 255)
    reason = check_uint("adjust reason", value.adjust_reason, 0xFF)
    if reason & _REASON_RESERVED:
        raise GattEncodeError(f"adjust reason 0x{reason:02x} has reserved bits 4-7 set")
    return encode_date_time(value.timestamp) + bytes((day, fractions, reason))
