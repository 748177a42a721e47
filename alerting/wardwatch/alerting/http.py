"""What every alerting API handler shares: app and request keys, bodies, errors, the permission marker.

Used by :mod:`wardwatch.alerting.api` and by modules that add routes to it (the registry's
:mod:`wardwatch.alerting.registry.routes`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Final, Protocol, TypeVar, cast

import msgspec
from aiohttp import web

from wardwatch.alerting.auth import Permission, Principal
from wardwatch.alerting.service import AlarmService
from wardwatch.core.ids import ID_PATTERN

_T = TypeVar("_T")


class _HasReason(Protocol):
    @property
    def reason(self) -> str: ...


class Refusal(Protocol):
    """An error that names the HTTP status saying why (the registry's, the notes', the observations')."""

    status: int
    message: str


_R = TypeVar("_R", bound=_HasReason)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE_KEY: Final = web.AppKey("service", AlarmService)
PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)

ID_RE: Final = re.compile(ID_PATTERN.removesuffix("$"))  # fullmatch: "$" would accept a final newline

# Free text (reasons) may hold tabs and line breaks, never other control characters or bidirectional
# overrides that make an audit entry read differently from what it says.
TEXT_PATTERN: Final = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202a-\u202e\u2066-\u2069]*$"
_TEXT_RE: Final = re.compile(TEXT_PATTERN.removesuffix("$"))

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=TEXT_PATTERN)]


def now_ms() -> int:
    """Wall time in ms since the epoch."""
    return time.time_ns() // 1_000_000


def error(status: int, message: str, **headers: str) -> web.Response:
    """A JSON ``{"error": message}`` response."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 to raise, with a JSON error body."""
    return web.HTTPBadRequest(text=msgspec.json.encode({"error": message}).decode(), content_type="application/json")


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as JSON (msgspec)."""
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def refusals(
    *kinds: type[Exception], status_of: Mapping[type[Exception], int] | None = None
) -> Callable[[Handler], Handler]:
    """Handler decorator: a raised error of ``kinds`` (a :class:`Refusal`) answers its status and message; one
    of a type in ``status_of`` (first match) answers that status with the error's text."""
    statuses = dict(status_of or {})

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answered(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except kinds as exc:
                refusal = cast(Refusal, exc)
                return error(refusal.status, refusal.message)
            except tuple(statuses) as exc:
                return error(next(s for k, s in statuses.items() if isinstance(exc, k)), str(exc))

        return answered

    return decorate


def requires(permission: Permission) -> Callable[[Handler], Handler]:
    """Mark a handler as needing ``permission`` (checked by the auth middleware)."""

    def mark(handler: Handler) -> Handler:
        handler.wardwatch_permission = permission  # type: ignore[attr-defined]
        return handler

    return mark


def principal_of(request: web.Request) -> Principal:
    """Who made the (authenticated) request."""
    principal: Principal = request[PRINCIPAL_KEY]
    return principal


async def read_body(request: web.Request, model: type[_T]) -> _T:
    """The JSON body as ``model``; 400 saying what is wrong."""
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise bad_request("body is not valid JSON") from None


def readable_text(value: str, field: str) -> str:
    """Free text for the audit log: not blank, no control or bidirectional-override characters."""
    if not value.strip() or not _TEXT_RE.fullmatch(value):
        raise bad_request(f"{field} must be readable text (not blank; no control or bidirectional characters)")
    return value


async def read_reasoned_body(request: web.Request, model: type[_R]) -> tuple[_R, str]:
    """The JSON body as ``model`` and its ``reason``, checked to be readable text; 400 saying what is wrong."""
    body = await read_body(request, model)
    return body, readable_text(body.reason, "reason")


def path_id(request: web.Request, name: str) -> str:
    """The path parameter ``name``, which must be a wardwatch identifier (else 400)."""
    value = request.match_info[name]
    if not ID_RE.fullmatch(value):
        raise bad_request(f"{name} must be a wardwatch identifier (1-64 of a-z, 0-9, '_', '.', '-')")
    return value
