"""A hand-checked InfluxDB line-protocol encoder (escaping per the InfluxDB 1.x/2.x spec).

``measurement[,tag=value...] field=value[,field=value...] timestamp\\n``

* measurement: ``,`` and space are escaped with a backslash;
* tag keys, tag values and field keys: ``,``, ``=`` and space are escaped;
* string field values are double-quoted, with ``"`` and ``\\`` escaped;
* floats use Python's shortest round-trip ``repr`` (``72.0``, ``1e-05``); integers get the ``i`` suffix;
  booleans are ``true``/``false``.

Checked against influxd 1.6.7: a backslash in a tag is taken literally (``a\\b`` stays ``a\\b``) and a
tag or key ending in a backslash, or holding a line break, cannot be written at all, so
:func:`escape_key` refuses those. Non-finite floats do not exist in line protocol and are refused too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from wardwatch.ingest.errors import IngestError
from wardwatch.ingest.points import FieldValue, Point, Tags

__all__ = [
    "FieldValue",
    "LineEncoder",
    "LineProtocolError",
    "encode_fields",
    "encode_line",
    "escape_key",
    "escape_measurement",
    "field_value",
    "series_key",
]


class LineProtocolError(IngestError, ValueError):
    """A value cannot be represented in line protocol."""


_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ "})
_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING: Final = str.maketrans({'"': r"\"", "\\": "\\\\"})


def _check_name(value: str, what: str) -> None:
    if not value:
        raise LineProtocolError(f"{what} must not be empty")
    if "\n" in value or "\r" in value:
        raise LineProtocolError(f"{what} {value!r} contains a line break, which line protocol cannot carry")
    if value.endswith("\\"):
        raise LineProtocolError(f"{what} {value!r} ends with a backslash, which line protocol cannot carry")


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    _check_name(name, "measurement")
    if name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r} starts with '#', which makes the line a comment")
    return name.translate(_MEASUREMENT)


def escape_key(value: str, what: str = "tag") -> str:
    """Escape a tag key, tag value or field key."""
    _check_name(value, what)
    return value.translate(_KEY)


def field_value(value: FieldValue) -> str:
    """Encode one field value: float, integer (``i`` suffix), boolean or quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"field value {value!r} is not finite; line protocol has no NaN or infinity")
        return repr(value)
    return '"' + value.translate(_STRING) + '"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key (InfluxDB's preferred order)."""
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_key(k, 'tag key')}={escape_key(v, 'tag value')}" for k, v in sorted(tags.items())]
    return ",".join(parts)


def encode_fields(fields: Iterable[tuple[str, FieldValue]]) -> str:
    """``key=value,...`` for the given fields (at least one)."""
    encoded = ",".join(f"{escape_key(k, 'field key')}={field_value(v)}" for k, v in fields)
    if not encoded:
        raise LineProtocolError("a point needs at least one field")
    return encoded


def encode_line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp: int) -> str:
    """One complete line, ending in ``\\n``; ``timestamp`` is an integer in the write's precision."""
    return f"{series_key(measurement, tags)} {encode_fields(fields.items())} {int(timestamp)}\n"


class LineEncoder:
    """:class:`~wardwatch.ingest.points.Point` values to line protocol (ms precision), as the InfluxDB sinks send.

    Series keys are encoded once per ``tags`` tuple (the point encoder shares one per series) and field keys
    once per name; at most ``cache_size`` series are remembered.
    """

    def __init__(self, cache_size: int = 100_000) -> None:
        self._series: dict[int, tuple[str, Tags, str]] = {}  # id(tags) -> (measurement, tags kept alive, key)
        self._field_keys: dict[str, str] = {}
        self._cache_size = cache_size

    def _key(self, measurement: str, tags: Tags) -> str:
        cached = self._series.get(id(tags))
        if cached is not None and cached[1] is tags and cached[0] == measurement:
            return cached[2]
        key = series_key(measurement, dict(tags))
        if len(self._series) >= self._cache_size:
            self._series.clear()
        self._series[id(tags)] = (measurement, tags, key)
        return key

    def _fields(self, fields: Mapping[str, FieldValue]) -> str:
        keys = self._field_keys
        parts = []
        for name, value in fields.items():
            key = keys.get(name)
            if key is None:
                key = keys[name] = escape_key(name, "field key")
            parts.append(f"{key}={field_value(value)}")
        if not parts:
            raise LineProtocolError("a point needs at least one field")
        return ",".join(parts)

    def line(self, point: Point) -> str:
        """One point as a line ending in ``\\n``; raises :class:`LineProtocolError` if it cannot be written."""
        return f"{self._key(point.measurement, point.tags)} {self._fields(point.fields)} {int(point.time)}\n"

    def body(self, points: Sequence[Point]) -> bytes:
        """The lines of ``points``, as one request body."""
        return "".join([self.line(point) for point in points]).encode()
