"""Shared helpers of the GATT codecs: byte-like type, precompiled structs, error construction."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from typing import TypeAlias

from wardwatch.core.errors import GattDecodeError, GattEncodeError

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What the decoders accept (bleak hands out ``bytearray``)."""

U16 = struct.Struct("<H")
U16_U8 = struct.Struct("<HB")  # a u24 read as low u16 + high u8
U32 = struct.Struct("<I")


def decode_error(characteristic: str, problem: str, data: BytesLike) -> GattDecodeError:
    """Build the one error a decoder may raise, with a copy of the offending bytes."""
    return GattDecodeError(characteristic, problem, bytes(data))


def check_length(characteristic: str, data: BytesLike, expected: int, what: str) -> None:
    """Raise unless ``data`` is exactly ``expected`` bytes long; ``what`` names the layout."""
    n = len(data)
    if n < expected:
        raise decode_error(characteristic, f"truncated: {what} needs {expected} bytes, got {n}", data)
    if n > expected:
        raise decode_error(
            characteristic, f"{n - expected} trailing byte(s): {what} is {expected} bytes, got {n}", data
        )


def flag_layouts(fixed: str, optional: Sequence[tuple[int, str]], count: int) -> tuple[struct.Struct, ...]:
    """The little-endian layout after the flags byte for each flags value ``0 .. count - 1``.

    ``fixed`` is the struct format of the fields always present; ``optional`` lists, in wire order,
    each flag bit with the format of the fields it adds.
    """
    return tuple(
        struct.Struct("<" + fixed + "".join(fmt for bit, fmt in optional if flags & bit)) for flags in range(count)
    )


def unpack_flagged(
    data: BytesLike,
    characteristic: str,
    layouts: Sequence[struct.Struct],
    *,
    reserved: int,
    reserved_bits: str,
    minimum: str,
    layout_mask: int = 0xFF,
) -> tuple[int, tuple[int, ...]]:
    """Check a flags-led characteristic and unpack the fields after the flags byte.

    ``layouts[flags & layout_mask]`` is the layout the flags select; ``reserved`` masks the flag bits
    (named ``reserved_bits``) that must be clear; ``minimum`` says what an empty value lacks.
    Returns the flags and the unpacked fields.
    """
    if not data:
        raise decode_error(characteristic, f"empty: needs at least {minimum}", data)
    flags = data[0]
    if flags & reserved:
        raise decode_error(characteristic, f"reserved flag bits {reserved_bits} set (flags=0x{flags:02x})", data)
    layout = layouts[flags & layout_mask]
    if len(data) != layout.size + 1:
        check_length(characteristic, data, layout.size + 1, f"flags 0x{flags:02x}")
    return flags, layout.unpack_from(data, 1)


def u24_to_bytes(value: int) -> bytes:
    """Little-endian u24 (the caller has checked the range)."""
    return U16_U8.pack(value & 0xFFFF, value >> 16)


def check_uint(what: str, value: object, maximum: int) -> int:
    """``value`` if it is an int in ``0..maximum``, else :class:`GattEncodeError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise GattEncodeError(f"{what} {value!r} is not an integer in 0..{maximum}")
    return value


def require_type(value: object, expected: type, what: str) -> None:
    """:class:`GattEncodeError` unless ``value`` is an ``expected`` (guards untyped callers)."""
    if not isinstance(value, expected):
        raise GattEncodeError(f"{what}: expected {expected.__name__}, got {type(value).__name__}")


DATE_TIME_FORMAT = "HBBBBB"
"""The struct format (without byte order) of the Date Time fields, for :func:`flag_layouts`."""

DATE_TIME = struct.Struct("<" + DATE_TIME_FORMAT)
"""The 7-byte Date Time (0x2A08) field: year u16, month, day, hours, minutes, seconds."""


def decode_date_time(fields: tuple[int, ...], characteristic: str, data: BytesLike) -> datetime:
    """A naive ``datetime`` from unpacked Date Time fields; :class:`GattDecodeError` if it is none."""
    year, month, day, hour, minute, second = fields
    if 1582 <= year <= 9999 and month and day:
        try:
            return datetime(year, month, day, hour, minute, second)  # naive: Date Time has no zone
        except ValueError as exc:
            problem = str(exc)
    elif year == 0 or month == 0 or day == 0:
        problem = "unknown (0) year, month or day is not supported"
    else:
        problem = "year outside 1582..9999"
    shown = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    raise decode_error(characteristic, f"invalid timestamp {shown}: {problem}", data)


def encode_date_time(ts: datetime) -> bytes:
    """The 7 Date Time bytes of a naive ``datetime`` (sub-second parts are dropped)."""
    require_type(ts, datetime, "timestamp")
    if ts.tzinfo is not None:
        raise GattEncodeError("timestamp must be naive (Date Time has no time zone); convert to local first")
    if ts.year < 1582:
        raise GattEncodeError(f"timestamp year {ts.year} outside 1582..9999")
    return DATE_TIME.pack(ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second)
