"""Sessions: log in, log out, break glass."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web
from prometheus_client import Counter

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import (
    MAX_PASSWORD_LENGTH,
    NAME_PATTERN,
    Authenticator,
    AuthError,
    InvalidNameError,
    LoginService,
    LoginThrottledError,
    Permission,
    check_name,
    retry_after,
)
from wardwatch.alerting.http import SERVICE_KEY, Reason, read_reasoned_body, requires
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.http import read_body as _body
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.proxies import client_address

AUTH_KEY: Final = web.AppKey("auth", Authenticator)
LOGIN_KEY: Final = web.AppKey("login", LoginService)
LOGINS_KEY: Final = web.AppKey("logins", Counter)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/login``."""

    name: Name
    password: Password


class BreakGlassBody(msgspec.Struct, forbid_unknown_fields=True):
    """Emergency access: why."""

    reason: Reason


class Session(msgspec.Struct):
    """A bearer token, when it expires (ms since the epoch; idle expiry moves it) and the role it carries."""

    token: str
    expires: int
    role: str | None
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)


class LoggedOut(msgspec.Struct):
    """The session ended, and how many of the person's break-glass tokens with it."""

    status: str
    break_glass_ended: int


async def login(request: web.Request) -> web.Response:
    """Exchange name and password for a session token (idle expiry = automatic logoff).

    The name is checked before anything is hashed or audited; attempts are rate limited per client and
    overall (429 with ``Retry-After``), with growing delays after repeated failures of a name, never a
    lockout. The client is the peer, or the address a trusted proxy (``api.trusted_proxies``) forwards;
    the audit entry names it.
    """
    body = await _body(request, LoginBody)
    service = request.app[SERVICE_KEY]
    now = _now()
    client = client_address(request)  # the browser's, when a trusted proxy (the console) forwards it
    try:
        check_name(body.name)
        token, expires = await request.app[LOGIN_KEY].login(body.name, body.password, client, now)
    except InvalidNameError as exc:
        request.app[LOGINS_KEY].labels(outcome="invalid_name").inc()
        return _error(400, str(exc))
    except LoginThrottledError as exc:
        request.app[LOGINS_KEY].labels(outcome="throttled").inc()
        return _error(429, str(exc), **{"Retry-After": retry_after(exc.retry_after_s)})
    except AuthError:
        request.app[LOGINS_KEY].labels(outcome="failed").inc()
        service.store.audit(AuditEntry(t=now, actor=body.name, action="login_failed", details={"client": client}))
        return _error(401, "wrong user name or password", **{"WWW-Authenticate": "Bearer"})
    request.app[LOGINS_KEY].labels(outcome="ok").inc()
    service.store.audit(AuditEntry(t=now, actor=body.name, action="login", details={"client": client}))
    principal = request.app[AUTH_KEY].authenticate(token, now)
    role = str(principal.role) if principal is not None else None
    return _json(Session(token=token, expires=expires, role=role))


@requires(Permission.READ_ALARMS)
async def break_glass(request: web.Request) -> web.Response:
    """Emergency ``doctor`` rights for a short time, for a clinician's own session, with a reason; audited."""
    _, reason = await read_reasoned_body(request, BreakGlassBody)
    principal = _principal(request)
    service = request.app[SERVICE_KEY]
    now = _now()
    try:
        token, expires = request.app[AUTH_KEY].break_glass(principal, now)
    except AuthError as exc:
        service.store.audit(
            AuditEntry(
                t=now, actor=principal.actor, action="break_glass_refused", reason=reason, details={"why": str(exc)}
            )
        )
        return _error(403, str(exc))
    service.store.audit(
        AuditEntry(t=now, actor=principal.name, action="break_glass", reason=reason, details={"expires": expires})
    )
    return _json(Session(token=token, expires=expires, role="doctor"))


@requires(Permission.READ_ALARMS)
async def logout(request: web.Request) -> web.Response:
    """End the caller's session; the person's break-glass tokens end with it."""
    header = request.headers.get("Authorization", "")
    ended = request.app[AUTH_KEY].logout(header.partition(" ")[2].strip())
    request.app[SERVICE_KEY].store.audit(
        AuditEntry(t=_now(), actor=_principal(request).actor, action="logout", details={"break_glass_ended": ended})
    )
    return _json(LoggedOut(status="logged out", break_glass_ended=ended))


SESSION_PATHS: Final[PathTable] = {
    "/api/v1/login": {
        "post": operation("Log in", login, None, body=LoginBody, response=Session, statuses=(401, 429)),
    },
    "/api/v1/logout": {
        "post": operation("End the session (and its break-glass tokens)", logout, "read_alarms", response=LoggedOut)
    },
    "/api/v1/break-glass": {
        "post": operation(
            "Emergency doctor rights for a short time (clinical roles, own session only), audited",
            break_glass,
            "read_alarms",
            body=BreakGlassBody,
            response=Session,
        )
    },
}
SESSION_SCHEMAS: Final = components_of(SESSION_PATHS)
