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
    FLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MAX,
    BytesLike,
    MedFloat,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)
from wardwatch.core.profiles import CODECS

SEED = 0x2A37_2A5F
CASES_PER_DECODER = 20_000
MAX_LENGTH = 30

Decoder = Callable[[BytesLike], object]
Encoder = Callable[[object], bytes]

_codecs: dict[str, tuple[Decoder, Encoder]] = {f"{c.uuid16:04x}": (c.decode, c.encode) for c in CODECS.values()}
_codecs["sfloat"] = (decode_sfloat, encode_sfloat)  # type: ignore[assignment]
_codecs["float"] = (decode_float, encode_float)  # type: ignore[assignment]


def _med_floats(value: object) -> list[MedFloat]:
    if isinstance(value, MedFloat):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [m for f in dataclasses.fields(value) for m in _med_floats(getattr(value, f.name))]
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


# Valid values per codec: mutating them reaches the checks behind the flags and length checks.
_VALID = {
    "2a37": ["1e46640033036603", "0048", "014801", "103c1c04", "0848ffff"],
    "2a38": ["01"],
    "2a5e": ["016200 4b00 e807050f0c1e00", "1f6200 4b00 e807021d173b3b 2000 100000 34f0", "106200 0008"],
    "2a5f": ["105f003c0034f0", "1c6100 4800 8000 000800 34f0", "1f6100 4800 6000 4a00 6200 4600 0040 030000 0a00"],
    "2a60": ["7f00 e0ff ffff00", "f000", "0200 000800", "0100 e0ff"],
    "2a52": ["0101", "0401", "05000300", "06000101", "01030100e807", "0300"],
    "2a19": ["57"],
    "2a35": ["1e 7800 5000 5a00 e807050f0c1e00 4800 01 2100", "00 7800 5000 5a00", "11 1000 0b00 0c00 0800"],
    "2a36": ["04 9600 ff07 ff07 4800", "1a 9600 ff07 ff07 e807050f0c1e00 01 0000"],
    "2a49": ["3f00", "ff01"],
    "2a1c": ["06 720100ff e807050f0c1e00 02", "01 fa0300ff", "00 ffff7f00"],
    "2a1d": ["02"],
    "2a1e": ["04 720100ff 06", "00 720100ff"],
    "2a21": ["2c01"],
    "2a2b": ["e807050f0c1e00030002", "e80701010000000000 00"],
    "sfloat": ["5f00", "34f0"],
    "float": ["340000ff"],
}


def _mutations(seed: int, samples: list[str]) -> list[BytesLike]:
    rng = random.Random(seed)
    valid = [bytes.fromhex(s) for s in samples]
    out: list[BytesLike] = []
    for _ in range(CASES_PER_DECODER):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(5)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif op == 2:
                del data[rng.randrange(len(data) + 1) :]
            elif op == 3:
                data += rng.randbytes(rng.randint(1, 4))
            elif data:
                del data[rng.randrange(len(data))]
        out.append(bytes(data))
    return out


def _check(name: str, inputs: list[BytesLike]) -> tuple[int, int]:
    decoder, encoder = _codecs[name]
    decoded = rejected = 0
    for data in inputs:
        error: GattDecodeError | None = None
        try:
            value = decoder(data)
        except GattDecodeError as exc:
            error = exc
        except Exception as exc:  # pragma: no cover - the failure being hunted
            pytest.fail(f"{name}: {type(exc).__name__}: {exc} for {bytes(data).hex()}")
        if error is not None:
            assert error.data == bytes(data)
            assert error.problem
            rejected += 1
            continue
        decoded += 1
        try:
            again = decoder(encoder(value))
        except GattEncodeError:
            limit = FLOAT_MANTISSA_MAX if name == "float" else SFLOAT_MANTISSA_MAX
            assert any(abs(f.mantissa) > limit for f in _med_floats(value)), bytes(data).hex()
            continue
        assert again == value, bytes(data).hex()
    assert decoded + rejected == len(inputs)
    return decoded, rejected


@pytest.mark.parametrize("name", sorted(_codecs))
def test_random_bytes_only_raise_gatt_decode_error(name: str) -> None:
    _check(name, _inputs(SEED + sum(name.encode())))


@pytest.mark.parametrize("name", sorted(_VALID))
def test_mutated_values_only_raise_gatt_decode_error(name: str) -> None:
    decoded, rejected = _check(name, _mutations(SEED ^ sum(name.encode()), _VALID[name]))
    assert decoded > 0
    assert rejected > 0
