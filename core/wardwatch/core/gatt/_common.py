"""Shared helpers of the GATT codecs: byte-like type, precompiled structs, error construction."""

from __future__ import annotations

import struct
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
