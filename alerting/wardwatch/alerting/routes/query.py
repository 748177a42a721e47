"""Path and query parameters as the alerting API declares and its handlers read them: identifiers, bounded
integers, limits; the path Structs several route modules share."""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeVar

import msgspec
from aiohttp import web

from wardwatch.alerting.http import ID_RE, bad_request
from wardwatch.core.ids import ID_PATTERN

MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the largest time a query may name
MAX_SEQ: Final = 2**63 - 1  # SQLite's largest integer

IdParam = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
TimeParam = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_MS, description="ms since the epoch")]
LimitParam = Annotated[int, msgspec.Meta(ge=-MAX_SEQ, le=MAX_SEQ, description="clamped to 1..cap")]
SeqParam = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


class PatientPath(msgspec.Struct):
    """The patient (pseudonymous id) an operation is about."""

    patient: IdParam


class WardPath(msgspec.Struct):
    """The ward (one of this service's)."""

    ward: IdParam


_Q = TypeVar("_Q", bound=msgspec.Struct)


def read_query(request: web.Request, kind: type[_Q]) -> _Q:
    """The query parameters as ``kind``, the Struct the operation declares them with (types, bounds,
    defaults: one declaration for the document and the handler); 400 naming the parameter otherwise.

    Integers are ASCII digits only (msgspec's lax conversion: not "²", "+5" or "1_000"); unknown
    parameters are ignored.
    """
    try:
        return msgspec.convert(dict(request.query), kind, strict=False)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).rpartition(" - at `$.")
        raise bad_request(f"{where.removesuffix('`')}: {problem} (query parameter)" if problem else str(exc)) from None


def declared_default(kind: type[msgspec.Struct], name: str) -> Any:
    """The default of parameter ``name`` as the route's parameter Struct declares it (and its document shows)."""
    (field,) = [f for f in msgspec.structs.fields(kind) if f.name == name]
    return field.default


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``low..high`` (400 naming the parameter otherwise)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if len(raw) <= 20 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return value


def limit_query(request: web.Request, default: int, cap: int) -> int:
    """``limit`` clamped to ``1..cap`` (a negative or huge limit never returns more than the cap)."""
    return max(1, min(int_query(request, "limit", default, -MAX_SEQ, MAX_SEQ), cap))


def id_query(request: web.Request, name: str) -> str | None:
    """An optional identifier filter (ward, patient, alarm_id)."""
    value = request.query.get(name)
    if value is not None and not ID_RE.fullmatch(value):
        raise bad_request(f"{name} must be a wardwatch identifier (1-64 of a-z, 0-9, '_', '.', '-')")
    return value
