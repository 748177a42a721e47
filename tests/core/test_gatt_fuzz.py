"""Seeded fuzz: random bytes into every decoder; only GattDecodeError may escape.

Whatever decodes must also survive encode -> decode unchanged (the only values the encoder may
refuse are mantissas in the special-value range with a non-zero exponent, which it never emits).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    CHARACTERISTICS,
    FLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MAX,
    BytesLike,
    MedFloat,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)

SEED = 0x2A37_2A5F
CASES_PER_DECODER = 20_000
MAX_LENGTH = 30

Decoder = Callable[[BytesLike], object]
Encoder = Callable[[object], bytes]

_codecs: dict[str, tuple[Decoder, Encoder]] = {
    f"{c.uuid16:04x}": (c.decode, c.encode) for c in CHARACTERISTICS.values()
}
_codecs["sfloat"] = (decode_sfloat, encode_sfloat)  # type: ignore[assignment]
_codecs["float"] = (decode_float, encode_float)  # type: ignore[assignment]


def _med_floats(value: object) -> list[MedFloat]:
    if isinstance(value, MedFloat):
        return [value]
    if dataclasses.is_dataclass(value):
        return [v for f in dataclasses.fields(value) if isinstance(v := getattr(value, f.name), MedFloat)]
    return []


def _inputs(seed: int) -> list[BytesLike]:
    rng = random.Random(seed)
    out: list[BytesLike] = []
    for i in range(CASES_PER_DECODER):
        data = bytearray(rng.randbytes(rng.randint(0, MAX_LENGTH)))
        if data and rng.random() < 0.5:
            data[0] &= 0x1F  # clear reserved flag bits so the fuzz reaches past the flags check
        kind = i % 3
        out.append(bytes(data) if kind == 0 else data if kind == 1 else memoryview(bytes(data)))
    return out


@pytest.mark.parametrize("name", sorted(_codecs))
def test_only_gatt_decode_error_escapes(name: str) -> None:
    decoder, encoder = _codecs[name]
    decoded = rejected = 0
    for data in _inputs(SEED + sum(name.encode())):
        try:
            value = decoder(data)
        except GattDecodeError as exc:
            assert str(exc)
            assert exc.data == bytes(data)
            rejected += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure being hunted
            pytest.fail(f"{name}: {type(exc).__name__}: {exc} for {bytes(data).hex()}")
        decoded += 1
        try:
            again = decoder(encoder(value))
        except GattEncodeError:
            limit = FLOAT_MANTISSA_MAX if name == "float" else SFLOAT_MANTISSA_MAX
            assert any(abs(f.mantissa) > limit for f in _med_floats(value)), bytes(data).hex()
            continue
        assert again == value, bytes(data).hex()
    assert decoded + rejected == CASES_PER_DECODER
