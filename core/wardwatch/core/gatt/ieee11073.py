"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers.

A value is ``mantissa × 10**exponent``; the exponent carries the precision, so ``95`` (95 e0) and
``95.0`` (950 e-1) are different values here. The special bit patterns (NaN, NRes, ±INF, reserved)
decode to a :class:`MedFloat` with :attr:`MedFloat.value` ``None`` and an :class:`AbsentReason`,
never to a float. Checked against Wireshark's ``ftype-ieee-11073-float.c`` (SFLOAT 0x07FE +INF,
0x07FF NaN, 0x0800 NRes, 0x0801 reserved, 0x0802 -INF; FLOAT 0x007FFFFE .. 0x00800002 likewise):
the specials are whole bit patterns, i.e. exponent 0 only. The encoder never emits a mantissa in
the special range (|mantissa| <= 2045 resp. 8388605, whatever the exponent) so that decoders
which test the mantissa alone agree; the decoder reads such mantissas with a non-zero exponent as
numbers, as the standard says.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, DecimalException
from functools import lru_cache

from wardwatch.core.errors import GattEncodeError

from ._common import U16, U32, BytesLike, decode_error, require_type

__all__ = [
    "FLOAT_EXPONENT_RANGE",
    "FLOAT_MANTISSA_MAX",
    "SFLOAT_EXPONENT_RANGE",
    "SFLOAT_MANTISSA_MAX",
    "AbsentReason",
    "MedFloat",
    "decode_float",
    "decode_sfloat",
    "encode_float",
    "encode_sfloat",
    "float_from_raw",
    "float_to_raw",
    "sfloat_from_raw",
    "sfloat_to_raw",
]


class AbsentReason(enum.StrEnum):
    """Why a SFLOAT/FLOAT carries no number."""

    nan = "nan"
    nres = "nres"  # not at this resolution
    positive_infinity = "positive_infinity"
    negative_infinity = "negative_infinity"
    reserved = "reserved"


SFLOAT_MANTISSA_MAX = 2045
SFLOAT_EXPONENT_RANGE = (-8, 7)
FLOAT_MANTISSA_MAX = 0x7FFFFD  # 8388605
FLOAT_EXPONENT_RANGE = (-128, 127)

_SFLOAT_SPECIALS = {
    0x07FF: AbsentReason.nan,
    0x0800: AbsentReason.nres,
    0x07FE: AbsentReason.positive_infinity,
    0x0802: AbsentReason.negative_infinity,
    0x0801: AbsentReason.reserved,
}
_SFLOAT_SPECIAL_RAW = {reason: raw for raw, reason in _SFLOAT_SPECIALS.items()}
_FLOAT_SPECIALS = {
    0x007FFFFF: AbsentReason.nan,
    0x00800000: AbsentReason.nres,
    0x007FFFFE: AbsentReason.positive_infinity,
    0x00800002: AbsentReason.negative_infinity,
    0x00800001: AbsentReason.reserved,
}
_FLOAT_SPECIAL_RAW = {reason: raw for raw, reason in _FLOAT_SPECIALS.items()}


@dataclass(frozen=True, slots=True)
class MedFloat:
    """A medical (IEEE 11073) decimal number, or its absence with a reason.

    ``mantissa``/``exponent`` are meaningful only when ``absent_reason`` is ``None``.
    Build numbers with :meth:`from_float` (or directly), absences with :meth:`absent`.
    """

    mantissa: int = 0
    exponent: int = 0
    absent_reason: AbsentReason | None = None

    @property
    def value(self) -> float | None:
        """The number as a float, or ``None`` when absent."""
        if self.absent_reason is not None:
            return None
        if self.exponent >= 0:
            return float(self.mantissa * 10**self.exponent)
        divisor: int = 10**-self.exponent
        return self.mantissa / divisor  # int/int true division rounds correctly

    @property
    def is_absent(self) -> bool:
        """True for NaN, NRes, ±INF and reserved."""
        return self.absent_reason is not None

    @classmethod
    def absent(cls, reason: AbsentReason) -> MedFloat:
        """The special value for ``reason``."""
        return cls(0, 0, reason)

    @classmethod
    def from_float(cls, value: float, decimals: int | None = None) -> MedFloat:
        """Exact decimal form of ``value``: 95.0 -> 95 e0, 5.2 -> 52 e-1.

        With ``decimals`` the value is rounded half-up to that many decimal places and keeps that
        precision (``from_float(95, 1)`` is 950 e-1). NaN and ±inf map to the special values.
        Without ``decimals`` the shortest exact decimal (Python's ``repr``) is used, which may need
        more digits than SFLOAT holds; the encoder then raises :class:`GattEncodeError`.
        """
        if math.isnan(value):
            return cls.absent(AbsentReason.nan)
        if math.isinf(value):
            return cls.absent(AbsentReason.positive_infinity if value > 0 else AbsentReason.negative_infinity)
        try:
            dec = Decimal(repr(float(value)))
            if decimals is not None:
                dec = dec.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
                return cls(int(dec.scaleb(decimals)), -decimals)
            sign, digits, exp = dec.normalize().as_tuple()
        except (DecimalException, OverflowError) as exc:
            raise GattEncodeError(f"cannot represent {value!r} with decimals={decimals}: {exc}") from None
        assert isinstance(exp, int)  # finite, checked above
        mantissa = int("".join(map(str, digits)) or "0")
        if sign:
            mantissa = -mantissa
        if mantissa == 0:
            return cls(0, 0)
        if 0 < exp <= 30:  # prefer integers (100 -> 100 e0); the encoder folds zeros back if needed
            mantissa *= 10**exp
            exp = 0
        return cls(mantissa, exp)

    def __str__(self) -> str:
        if self.absent_reason is not None:
            return self.absent_reason.value
        if 0 <= self.exponent <= 30:
            return str(self.mantissa * 10**self.exponent)
        return str(Decimal(self.mantissa).scaleb(self.exponent))


def _special(table: dict[AbsentReason, int], reason: AbsentReason) -> int:
    raw = table.get(reason)
    if raw is None:
        raise GattEncodeError(f"unknown absent reason {reason!r}")
    return raw


def _fit(value: MedFloat, mantissa_max: int, exponent_range: tuple[int, int], kind: str) -> tuple[int, int]:
    """Mantissa/exponent within the format's range, changing only trailing zeros (no rounding)."""
    m, e = value.mantissa, value.exponent
    if isinstance(m, bool) or not isinstance(m, int) or isinstance(e, bool) or not isinstance(e, int):
        raise GattEncodeError(f"mantissa and exponent must be integers, got {m!r} and {e!r}")
    e_min, e_max = exponent_range
    if -mantissa_max <= m <= mantissa_max and e_min <= e <= e_max:
        return m, e
    if m == 0:
        return 0, min(max(e, e_min), e_max)
    while abs(m) > mantissa_max and m % 10 == 0:
        m //= 10
        e += 1
    while e > e_max and abs(m) * 10 <= mantissa_max:
        m *= 10
        e -= 1
    while e < e_min and m % 10 == 0:
        m //= 10
        e += 1
    if abs(m) > mantissa_max:
        raise GattEncodeError(
            f"{value} needs mantissa {m}, more digits than {kind} holds (|mantissa| <= {mantissa_max}); "
            "round it first, e.g. MedFloat.from_float(x, decimals=1)"
        )
    if not e_min <= e <= e_max:
        raise GattEncodeError(f"{value} is out of {kind} range (exponent {e} not in {e_min}..{e_max})")
    return m, e


@lru_cache(maxsize=4096)
def sfloat_from_raw(raw: int) -> MedFloat:
    """The SFLOAT whose 16-bit pattern is ``raw`` (0..0xFFFF); results are cached and shared."""
    special = _SFLOAT_SPECIALS.get(raw)
    if special is not None:
        return MedFloat(0, 0, special)
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    return MedFloat(mantissa, exponent)


def sfloat_to_raw(value: MedFloat) -> int:
    """The 16-bit pattern of ``value``; :class:`GattEncodeError` if it does not fit."""
    if value.absent_reason is not None:
        return _special(_SFLOAT_SPECIAL_RAW, value.absent_reason)
    m, e = _fit(value, SFLOAT_MANTISSA_MAX, SFLOAT_EXPONENT_RANGE, "SFLOAT")
    return ((e & 0x0F) << 12) | (m & 0x0FFF)


def float_from_raw(raw: int) -> MedFloat:
    """The FLOAT whose 32-bit pattern is ``raw`` (0..0xFFFFFFFF)."""
    special = _FLOAT_SPECIALS.get(raw)
    if special is not None:
        return MedFloat(0, 0, special)
    exponent = raw >> 24
    if exponent >= 0x80:
        exponent -= 0x100
    mantissa = raw & 0xFFFFFF
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    return MedFloat(mantissa, exponent)


def float_to_raw(value: MedFloat) -> int:
    """The 32-bit pattern of ``value``; :class:`GattEncodeError` if it does not fit."""
    if value.absent_reason is not None:
        return _special(_FLOAT_SPECIAL_RAW, value.absent_reason)
    m, e = _fit(value, FLOAT_MANTISSA_MAX, FLOAT_EXPONENT_RANGE, "FLOAT")
    return ((e & 0xFF) << 24) | (m & 0xFFFFFF)


def _as_medfloat(value: MedFloat | float) -> MedFloat:
    if isinstance(value, MedFloat):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MedFloat.from_float(value)
    raise GattEncodeError(f"expected MedFloat or float, got {type(value).__name__}")


def decode_sfloat(data: BytesLike) -> MedFloat:
    """Exactly 2 bytes, little-endian SFLOAT."""
    if len(data) != 2:
        raise decode_error("SFLOAT", f"needs exactly 2 bytes, got {len(data)}", data)
    return sfloat_from_raw(U16.unpack(data)[0])


def encode_sfloat(value: MedFloat | float) -> bytes:
    """2 bytes, little-endian SFLOAT (a float goes through :meth:`MedFloat.from_float`)."""
    return U16.pack(sfloat_to_raw(_as_medfloat(value)))


def decode_float(data: BytesLike) -> MedFloat:
    """Exactly 4 bytes, little-endian FLOAT."""
    if len(data) != 4:
        raise decode_error("FLOAT", f"needs exactly 4 bytes, got {len(data)}", data)
    return float_from_raw(U32.unpack(data)[0])


def encode_float(value: MedFloat | float) -> bytes:
    """4 bytes, little-endian FLOAT (a float goes through :meth:`MedFloat.from_float`)."""
    return U32.pack(float_to_raw(_as_medfloat(value)))


def sfloat_non_negative(raw: int, field: str, characteristic: str, data: BytesLike) -> MedFloat:
    """The SFLOAT ``raw`` (``field`` of ``characteristic``); :class:`GattDecodeError` if it is negative."""
    value = sfloat_from_raw(raw)
    v = value.value
    if v is not None and v < 0.0:
        raise decode_error(characteristic, f"{field} {value} is negative", data)
    return value


def encode_sfloat_non_negative(value: MedFloat, field: str) -> bytes:
    """The 2 SFLOAT bytes of ``value`` (``field``); :class:`GattEncodeError` if it is negative."""
    require_type(value, MedFloat, field)
    v = value.value
    if v is not None and v < 0.0:
        raise GattEncodeError(f"{field} {value} is negative")
    return U16.pack(sfloat_to_raw(value))
