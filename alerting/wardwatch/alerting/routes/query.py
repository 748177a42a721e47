"""Path and query parameters as the alerting API declares and its handlers read them: identifiers, bounded
integers, limits; the path Structs several route modules share."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Final, TypeVar

import msgspec
from aiohttp import web

from wardwatch.alerting.http import bad_request
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
_INTEGER: Final = re.compile(r"-?[0-9]{1,20}")


@functools.cache
def _integers(kind: type[msgspec.Struct]) -> tuple[str, ...]:
    """The names of ``kind``'s integer fields (msgspec would also take "1e3" or "5.0" for them)."""
    inspect = msgspec.inspect

    def bare(t: inspect.Type) -> inspect.Type:  # a type without its description
        return t.type if isinstance(t, inspect.Metadata) else t

    names = []
    for field in inspect.type_info(kind).fields:  # type: ignore[attr-defined]
        kinds = field.type.types if isinstance(field.type, inspect.UnionType) else (field.type,)
        if any(isinstance(bare(k), inspect.IntType) for k in kinds):
            names.append(field.encode_name)
    return tuple(names)


def read_query(request: web.Request, kind: type[_Q]) -> _Q:
    """The query parameters as ``kind``, the Struct the operation declares them with (types, bounds,
    defaults: one declaration for the document and the handler); 400 naming the parameter otherwise.

    Integers are ASCII digits only (not "²", "+5", "1_000" or "1e3"); unknown parameters are ignored.
    """
    for name in _integers(kind):
        raw = request.query.get(name)
        if raw is not None and not _INTEGER.fullmatch(raw):
            raise bad_request(f"{name}: must be an integer in ASCII digits (query parameter)")
    try:
        return msgspec.convert(dict(request.query), kind, strict=False)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).rpartition(" - at `$.")
        raise bad_request(f"{where.removesuffix('`')}: {problem} (query parameter)" if problem else str(exc)) from None


def clamped(limit: int, cap: int) -> int:
    """``limit`` clamped to ``1..cap`` (a negative or huge limit never returns more than the cap)."""
    return max(1, min(limit, cap))
