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
from collections.abc import Iterable, Mapping
from typing import Final

from wardwatch.ingest.errors import IngestError

__all__ = [
    "FieldValue",
    "LineProtocolError",
    "encode_fields",
    "encode_line",
    "escape_key",
    "escape_measurement",
    "field_value",
    "series_key",
]

FieldValue = float | int | bool | str


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
