"""The line-protocol encoder: exact escaping, value formats, refusals; and a round trip through influxd."""

from __future__ import annotations

import aiohttp
import pytest

from wardwatch.core.servers import Influxd
from wardwatch.ingest.lineprotocol import (
    LineProtocolError,
    encode_line,
    escape_key,
    escape_measurement,
    field_value,
    series_key,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("cpu", "cpu"),
        ("a b", r"a\ b"),
        ("a,b", r"a\,b"),
        ("a=b", "a=b"),  # '=' needs no escape in a measurement
        ('a"b', 'a"b'),
        (r"a\b", r"a\b"),  # a backslash inside is literal
    ],
)
def test_measurement_escapes_comma_and_space(raw: str, escaped: str) -> None:
    assert escape_measurement(raw) == escaped


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("p-1", "p-1"), ("a b", r"a\ b"), ("a,b", r"a\,b"), ("a=b", r"a\=b"), ('a"b', 'a"b'), ("ü µ", r"ü\ µ")],
)
def test_keys_and_tag_values_escape_comma_equals_space(raw: str, escaped: str) -> None:
    assert escape_key(raw) == escaped


@pytest.mark.parametrize("bad", ["", "a\\", "a\nb", "a\rb"])
def test_unrepresentable_keys_are_refused(bad: str) -> None:
    with pytest.raises(LineProtocolError):
        escape_key(bad)


def test_measurement_must_not_look_like_a_comment() -> None:
    with pytest.raises(LineProtocolError):
        escape_measurement("#x")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (72.0, "72.0"),
        (0.8123, "0.8123"),
        (1e-05, "1e-05"),
        (-3.5, "-3.5"),
        (42, "42i"),
        (-1, "-1i"),
        (True, "true"),
        (False, "false"),
        ("ok", '"ok"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("line\nbreak", '"line\nbreak"'),
    ],
)
def test_field_values(value: float | int | bool | str, encoded: str) -> None:
    assert field_value(value) == encoded


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(LineProtocolError):
        field_value(value)


def test_series_key_sorts_tags() -> None:
    assert series_key("vitals", {"ward": "w 1", "patient": "p,1"}) == r"vitals,patient=p\,1,ward=w\ 1"


def test_encode_line() -> None:
    line = encode_line("m x", {"t=k": "v"}, {"f": 1.5, "s": 'q"'}, 1700000000000)
    assert line == 'm\\ x,t\\=k=v f=1.5,s="q\\"" 1700000000000\n'


NASTY = ["plain", "with space", "com,ma", "equ=als", 'dq"uote', "back\\slash", "ünï cødé µ", "=,= ,"]


async def test_round_trip_through_influxd(influxd: Influxd) -> None:
    """What the encoder writes, influxd 1.6.7 reads back unchanged (tags, field keys and strings)."""
    await influxd.create_database("lp")
    lines = [
        encode_line("m e,a", {"tag key": value, "n": str(i)}, {"f k": value, "x=": float(i)}, 1_000 + i)
        for i, value in enumerate(NASTY)
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{influxd.url}/write?db=lp&precision=ms", data="".join(lines).encode(), raise_for_status=True
        ) as response,
    ):
        assert response.status == 204
    query = 'SELECT "f k", "x=", "tag key" FROM "m e,a"'
    result = await influxd.query(query, db="lp")
    rows = result["results"][0]["series"][0]["values"]
    assert [(row[1], row[2], row[3]) for row in rows] == [(v, float(i), v) for i, v in enumerate(NASTY)]
