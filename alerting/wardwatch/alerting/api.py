"""The alerting HTTP API (aiohttp): alarms, clinician actions, thresholds, audit, burden metrics, users.

Every ``/api/v1`` route except login and the OpenAPI document needs ``Authorization: Bearer
<token>`` (a session from ``POST /api/v1/login`` or a machine token) and a role that grants the
route's permission (:data:`wardwatch.alerting.auth.ROLE_PERMISSIONS`): 401 without valid
credentials, 403 without the permission. Clinician actions need a reason and are audited with
actor and time. The OpenAPI 3.1 document is served at ``/api/v1/openapi.json``. Serve over TLS
(``api.tls_cert``/``api.tls_key``) anywhere but loopback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from wardwatch.alerting import stream
from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    NAME_PATTERN,
    Authenticator,
    AuthError,
    InvalidNameError,
    LoginGuard,
    LoginLimits,
    LoginService,
    LoginThrottledError,
    Permission,
    Role,
    check_name,
    retry_after,
)
from wardwatch.alerting.handover.routes import HANDOVER_PATHS, HANDOVER_SCHEMAS
from wardwatch.alerting.http import ID_RE as _ID_RE
from wardwatch.alerting.http import (
    PRINCIPAL_KEY,
    SERVICE_KEY,
    Handler,
    Reason,
    add_error_responses,
    openapi_operation,
    read_reasoned_body,
    requires,
)
from wardwatch.alerting.http import bad_request as _bad_request
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.http import read_body as _body
from wardwatch.alerting.live import alarm_json as _alarm_json
from wardwatch.alerting.manager import AlarmNotFoundError, AlarmRecord, InvalidTransitionError, resolve_notice
from wardwatch.alerting.metrics import burden
from wardwatch.alerting.observations.routes import OBSERVATION_PATHS, OBSERVATION_SCHEMAS
from wardwatch.alerting.registry.routes import REGISTRY_PATHS, REGISTRY_SCHEMAS
from wardwatch.alerting.rules import RANGES, Thresholds
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import ApiConfig
from wardwatch.alerting.store import StoreError
from wardwatch.core.errors import ConfigError
from wardwatch.core.ids import ID_PATTERN

__all__ = ["OPENAPI", "build_app", "openapi_document", "serve_api"]

_log = logging.getLogger(__name__)

AUTH_KEY: Final = web.AppKey("auth", Authenticator)
LOGIN_KEY: Final = web.AppKey("login", LoginService)
OPENAPI_KEY: Final = web.AppKey("openapi", dict[str, Any])
LOGINS_KEY: Final = web.AppKey("logins", Counter)
_PUBLIC: Final = frozenset({"/api/v1/login", "/api/v1/openapi.json", "/healthz", "/metrics"})

MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the largest time a query may name
MAX_SEQ: Final = 2**63 - 1  # SQLite's largest integer

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/login``."""

    name: Name
    password: Password


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    """Acknowledge or resolve."""

    reason: Reason


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    """Silence for ``minutes``."""

    reason: Reason
    minutes: Annotated[float, msgspec.Meta(gt=0, le=1440)]


class ThresholdsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Replace a patient's threshold overrides (``{}`` removes them all). Values: see ``Thresholds``."""

    overrides: dict[str, float | int | bool]
    reason: Reason


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a user."""

    name: Name
    role: Role
    password: Password


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a machine token (``ttl_s``: at most ten years; none: no expiry)."""

    name: Name
    role: Role
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 366 * 86_400)] | None = None


class BreakGlassBody(msgspec.Struct, forbid_unknown_fields=True):
    """Emergency access: why."""

    reason: Reason


# Clinical ranges a per-patient override must stay within: the rules' own table (one source for the
# rule file, the API and its OpenAPI document); the rules' consistency checks apply on top.
THRESHOLD_RANGES: Final[Mapping[str, tuple[float, float]]] = RANGES
_UNLISTED_RANGE: Final = (-1e6, 1e6)  # a setting added to Thresholds later: finite and sane until listed
_FIELD_TYPES: Final = {f.name: f.type for f in msgspec.structs.fields(Thresholds)}


def check_overrides(overrides: Mapping[str, Any]) -> str | None:
    """The first problem with threshold ``overrides`` at the API boundary, naming the field, or ``None``."""
    for key, value in overrides.items():
        kind = _FIELD_TYPES.get(key)
        if kind is None:
            return f"{key}: unknown setting (known: {', '.join(sorted(_FIELD_TYPES))})"
        if kind is bool:
            if not isinstance(value, bool):
                return f"{key}: must be true or false, not {value!r}"
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key}: must be a number, not {value!r}"
        if not math.isfinite(value):
            return f"{key}: must be a finite number"
        if kind is int and not float(value).is_integer():
            return f"{key}: must be a whole number, not {value!r}"
        low, high = THRESHOLD_RANGES.get(key, _UNLISTED_RANGE)
        if not low <= value <= high:
            return f"{key}: {value!r} is outside the allowed range {low:g}..{high:g}"
    return None


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``low..high`` (400 naming the parameter otherwise)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if len(raw) <= 20 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise _bad_request(f"{name} must be an integer from {low} to {high}")
    return value


def _limit(request: web.Request, default: int, cap: int) -> int:
    """``limit`` clamped to ``1..cap`` (a negative or huge limit never returns more than the cap)."""
    return max(1, min(_int_query(request, "limit", default, -MAX_SEQ, MAX_SEQ), cap))


def _id_query(request: web.Request, name: str) -> str | None:
    """An optional identifier filter (ward, patient, alarm_id)."""
    value = request.query.get(name)
    if value is not None and not _ID_RE.fullmatch(value):
        raise _bad_request(f"{name} must be a wardwatch identifier (1-64 of a-z, 0-9, '_', '.', '-')")
    return value


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        if request.match_info.http_exception is not None:  # no such route (404/405): say so, auth or not
            status = request.match_info.http_exception.status
            return _error(status, request.match_info.http_exception.reason)
        if request.path not in _PUBLIC:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            principal = (
                request.app[AUTH_KEY].authenticate(token.strip(), _now()) if scheme.lower() == "bearer" else None
            )
            if principal is None:
                status = 401
                return _error(401, "authentication required (Bearer token)", **{"WWW-Authenticate": "Bearer"})
            permission: Permission | None = getattr(handler, "wardwatch_permission", None)
            if permission is None or not principal.can(permission):
                status = 403
                needed = permission or "admin"
                return _error(403, f"role {principal.role} may not do this (needs {needed})")
            request[PRINCIPAL_KEY] = principal
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except StoreError as exc:  # the database refused: nothing was changed, the client may retry
        status = 503
        _log.error("API %s %s: the store failed: %s", request.method, route, exc)
        return _error(503, "the alarm database is unavailable; nothing was changed, try again", **{"Retry-After": "1"})
    finally:
        service.metrics.api_requests.labels(method=request.method, route=route, status=str(status)).inc()


# -- handlers ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Health: 200 ``ok``, or 503 ``degraded`` (only running late) / ``unhealthy`` with the reasons."""
    service = request.app[SERVICE_KEY]
    problems = service.health()
    return _json(
        {
            "status": service.status(),
            "problems": problems,
            "inputs_ready": service.inputs_ready,
            "open_alarms": len(service.manager.open_alarms()),
        },
        status=503 if problems else 200,
    )


async def prometheus_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (no PHI: labels are rules, priorities, channels)."""
    service = request.app[SERVICE_KEY]
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API (with this service's wards)."""
    return _json(request.app[OPENAPI_KEY])


async def login(request: web.Request) -> web.Response:
    """Exchange name and password for a session token (idle expiry = automatic logoff).

    The name is checked before anything is hashed or audited; attempts are rate limited per client and
    overall (429 with ``Retry-After``), with growing delays after repeated failures, never a lockout.
    """
    body = await _body(request, LoginBody)
    service = request.app[SERVICE_KEY]
    now = _now()
    try:
        check_name(body.name)
        token, expires = await request.app[LOGIN_KEY].login(body.name, body.password, request.remote or "?", now)
    except InvalidNameError as exc:
        request.app[LOGINS_KEY].labels(outcome="invalid_name").inc()
        return _error(400, str(exc))
    except LoginThrottledError as exc:
        request.app[LOGINS_KEY].labels(outcome="throttled").inc()
        return _error(429, str(exc), **{"Retry-After": retry_after(exc.retry_after_s)})
    except AuthError:
        request.app[LOGINS_KEY].labels(outcome="failed").inc()
        service.store.audit(AuditEntry(t=now, actor=body.name, action="login_failed"))
        return _error(401, "wrong user name or password", **{"WWW-Authenticate": "Bearer"})
    request.app[LOGINS_KEY].labels(outcome="ok").inc()
    service.store.audit(AuditEntry(t=now, actor=body.name, action="login"))
    principal = request.app[AUTH_KEY].authenticate(token, now)
    role = str(principal.role) if principal is not None else None
    return _json({"token": token, "token_type": "Bearer", "expires": expires, "role": role})


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
    return _json({"token": token, "token_type": "Bearer", "expires": expires, "role": "doctor"})


@requires(Permission.READ_ALARMS)
async def logout(request: web.Request) -> web.Response:
    """End the caller's session; the person's break-glass tokens end with it."""
    header = request.headers.get("Authorization", "")
    ended = request.app[AUTH_KEY].logout(header.partition(" ")[2].strip())
    request.app[SERVICE_KEY].store.audit(
        AuditEntry(t=_now(), actor=_principal(request).actor, action="logout", details={"break_glass_ended": ended})
    )
    return _json({"status": "logged out", "break_glass_ended": ended})


_STATES: Final = {"active", "acknowledged", "silenced", "resolved"}


@requires(Permission.READ_ALARMS)
async def list_alarms(request: web.Request) -> web.Response:
    """Alarms by state (``open`` = not resolved, the default), ward and patient."""
    service = request.app[SERVICE_KEY]
    query = request.query
    wanted = [s for s in query.get("state", "open").split(",") if s]
    states: list[str] = []
    for state in wanted:
        if state == "open":
            states += ["active", "acknowledged", "silenced"]
        elif state in _STATES:
            states.append(state)
        else:
            return _error(400, f"state: unknown state {state[:40]!r} (open, active, acknowledged, silenced, resolved)")
    records = service.store.alarms(
        states=states,
        ward=_id_query(request, "ward"),
        patient=_id_query(request, "patient"),
        limit=_limit(request, 500, 5000),
    )
    return _json({"alarms": [_alarm_json(r) for r in records]})


@requires(Permission.READ_ALARMS)
async def get_alarm(request: web.Request) -> web.Response:
    """One alarm with its pages."""
    service = request.app[SERVICE_KEY]
    record = service.store.alarm(request.match_info["alarm_id"])
    if record is None:
        return _error(404, "no such alarm")
    pages = [
        {
            "page_id": e.page.page_id,
            "destination": e.page.destination,
            "step": e.page.step,
            "created": e.page.t,
            "status": e.status,
            "channel": e.channel,
            "delivered_at": e.delivered_at,
            "attempts": e.attempts,
        }
        for e in service.store.outbox(record.alarm_id)
    ]
    return _json({**_alarm_json(record), "page_log": pages})


async def _command(
    request: web.Request,
    action: Callable[[AlarmService, str, str], AlarmRecord],
    notice: Callable[[AlarmRecord], dict[str, object]] | None = None,
) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        record = action(service, request.match_info["alarm_id"], _principal(request).actor)
    except AlarmNotFoundError as exc:
        return _error(404, str(exc))
    except InvalidTransitionError as exc:
        return _error(409, str(exc))
    return _json({**_alarm_json(record), **(notice(record) if notice is not None else {})})


@requires(Permission.ACT_ON_ALARMS)
async def acknowledge(request: web.Request) -> web.Response:
    """Acknowledge: stops escalation (a latched alarm whose condition is gone is resolved by it)."""
    _, reason = await read_reasoned_body(request, ReasonBody)
    return await _command(request, lambda s, a, actor: s.acknowledge(a, actor, reason))


@requires(Permission.ACT_ON_ALARMS)
async def silence(request: web.Request) -> web.Response:
    """Silence for some minutes (bounded by the ward's ``max_silence_s``)."""
    body, reason = await read_reasoned_body(request, SilenceBody)
    return await _command(request, lambda s, a, actor: s.silence(a, actor, reason, body.minutes))


@requires(Permission.ACT_ON_ALARMS)
async def resolve(request: web.Request) -> web.Response:
    """Resolve by hand; a condition still present re-alarms after the ward's hold (the answer says when)."""
    _, reason = await read_reasoned_body(request, ReasonBody)
    return await _command(request, lambda s, a, actor: s.resolve(a, actor, reason), resolve_notice)


def _patient(request: web.Request) -> str:
    patient = request.match_info["patient"]
    if not _ID_RE.fullmatch(patient):
        raise _bad_request("patient must be a pseudonymous wardwatch identifier (1-64 of a-z, 0-9, '_', '.', '-')")
    return patient


def _ward(request: web.Request, service: AlarmService) -> str:
    ward = request.query.get("ward")
    if ward is None:
        return next(iter(service.config.wards))
    if ward not in service.config.wards:
        raise _bad_request(f"ward must be one of this service's wards: {', '.join(service.config.wards)}")
    return ward


def _effective(service: AlarmService, patient: str, overrides: dict[str, Any], ward: str) -> dict[str, Any]:
    """Validate ``overrides`` against the service's rules and return the effective thresholds on ``ward``."""
    rules = service.rules_with(patient, overrides)
    effective: dict[str, Any] = msgspec.to_builtins(rules.resolve(ward, patient))
    return effective


@requires(Permission.READ_THRESHOLDS)
async def get_thresholds(request: web.Request) -> web.Response:
    """A patient's overrides and effective thresholds; the read is audited."""
    service = request.app[SERVICE_KEY]
    patient = _patient(request)
    ward = _ward(request, service)
    overrides = service.rules.patient_overrides(patient)
    service.store.audit(
        AuditEntry(t=_now(), actor=_principal(request).actor, action="thresholds_read", patient=patient)
    )
    return _json(
        {"patient": patient, "overrides": overrides, "effective": _effective(service, patient, overrides, ward)}
    )


@requires(Permission.WRITE_THRESHOLDS)
async def put_thresholds(request: web.Request) -> web.Response:
    """Replace a patient's overrides: checked, applied to the engine, then saved with its audit entry.

    400 names the offending field; nothing is saved or applied unless every step succeeds.
    """
    service = request.app[SERVICE_KEY]
    patient = _patient(request)
    ward = _ward(request, service)
    body, reason = await read_reasoned_body(request, ThresholdsBody)
    problem = check_overrides(body.overrides)
    if problem is not None:
        return _error(400, f"invalid thresholds: {problem}")
    try:
        effective = _effective(service, patient, body.overrides, ward)
        old = service.set_thresholds(patient, body.overrides, _principal(request).actor, reason)
    except ConfigError as exc:
        return _error(400, f"invalid thresholds: {exc.key}: {exc.problem}")
    return _json({"patient": patient, "old": old, "overrides": body.overrides, "effective": effective})


@requires(Permission.READ_AUDIT)
async def get_audit(request: web.Request) -> web.Response:
    """Audit entries (filtered), oldest first; reading the audit log is itself audited."""
    service = request.app[SERVICE_KEY]
    since = _int_query(request, "since", -1, 0, MAX_TIME_MS)
    entries = service.store.audit_entries(
        since=since if since >= 0 else None,
        alarm_id=_id_query(request, "alarm_id"),
        patient=_id_query(request, "patient"),
        after_seq=_int_query(request, "after_seq", 0, 0, MAX_SEQ),
        limit=_limit(request, 1000, 10_000),
    )
    service.store.audit(AuditEntry(t=_now(), actor=_principal(request).actor, action="audit_read"))
    return _json({"entries": [msgspec.to_builtins(e) for e in entries]})


@requires(Permission.READ_AUDIT)
async def verify_audit(request: web.Request) -> web.Response:
    """Check the audit hash chain, its MACs (key outside the database) and the signed head checkpoint."""
    check = request.app[SERVICE_KEY].store.check_audit()
    return _json(
        {
            "intact": check.intact,
            "broken_at_seq": check.broken_at_seq,
            "problem": check.problem,
            "entries": check.entries,
            "head_seq": check.head_seq,
            "anchored_from_seq": check.anchored_from_seq,
        }
    )


@requires(Permission.READ_METRICS)
async def get_burden(request: web.Request) -> web.Response:
    """Alarm burden: pages per patient-day, acknowledged fraction, time to acknowledge, by rule."""
    service = request.app[SERVICE_KEY]
    until = _int_query(request, "until", min(_now() + 1, MAX_TIME_MS), 0, MAX_TIME_MS)
    since = _int_query(request, "since", max(0, until - 86_400_000), 0, MAX_TIME_MS)
    return _json(burden(service.store, since, until, _id_query(request, "ward")))


@requires(Permission.MANAGE_USERS)
async def list_users(request: web.Request) -> web.Response:
    """Users and roles (never hashes)."""
    users = request.app[SERVICE_KEY].store.users()
    return _json({"users": [{"name": u.name, "role": u.role, "disabled": u.disabled} for u in users]})


@requires(Permission.MANAGE_USERS)
async def add_user(request: web.Request) -> web.Response:
    """Create a user (admin)."""
    body = await _body(request, UserBody)
    service = request.app[SERVICE_KEY]
    try:
        check_name(body.name)
        password_hash = await request.app[LOGIN_KEY].hash_new_password(body.password)
        service.store.add_user(body.name, str(body.role), password_hash, _now())
    except (AuthError, StoreError) as exc:
        return _error(400, str(exc))
    service.store.audit(
        AuditEntry(
            t=_now(),
            actor=_principal(request).actor,
            action="user_added",
            details={"user": body.name, "role": body.role},
        )
    )
    return _json({"name": body.name, "role": body.role}, status=201)


@requires(Permission.MANAGE_USERS)
async def create_token(request: web.Request) -> web.Response:
    """Create a machine token (admin); the token is shown once."""
    body = await _body(request, TokenBody)
    service = request.app[SERVICE_KEY]
    try:
        ttl = round(body.ttl_s * 1000) if body.ttl_s is not None else None
        token = request.app[AUTH_KEY].create_machine_token(body.name, body.role, _now(), ttl)
    except AuthError as exc:
        return _error(400, str(exc))
    service.store.audit(
        AuditEntry(
            t=_now(),
            actor=_principal(request).actor,
            action="token_created",
            details={"name": body.name, "role": body.role},
        )
    )
    return _json({"name": body.name, "role": body.role, "token": token}, status=201)


def build_app(service: AlarmService, config: ApiConfig) -> web.Application:
    """The aiohttp application of the API."""
    app = web.Application(middlewares=[_auth_middleware], client_max_size=64 * 1024)
    app[SERVICE_KEY] = service
    stream.install(app, service.live)
    app[OPENAPI_KEY] = openapi_document(list(service.config.wards))
    auth = Authenticator(
        service.store,
        session_ttl_ms=round(config.session_ttl_s * 1000),
        session_max_ms=round(config.session_max_s * 1000),
        argon2_time_cost=config.argon2_time_cost,
        argon2_memory_kib=config.argon2_memory_kib,
        break_glass_ms=round(config.break_glass_s * 1000),
    )
    app[AUTH_KEY] = auth
    limits = LoginLimits(
        client_rate_per_s=config.login_client_rate_per_s,
        verify_rate_per_s=config.login_verify_rate_per_s,
        verify_burst=max(2, round(2 * config.login_verify_rate_per_s)),
    )
    logins = LoginService(
        auth, LoginGuard(limits), workers=config.login_hash_workers, executor=config.login_hash_executor
    )
    app[LOGIN_KEY] = logins
    registry = service.metrics.registry
    app[LOGINS_KEY] = Counter(
        "wardwatch_alerting_logins",
        "Login attempts by outcome (ok, failed, throttled, invalid_name)",
        ["outcome"],
        registry=registry,
    )
    verifications = Gauge(
        "wardwatch_alerting_password_verifications", "argon2 verifications run since start", registry=registry
    )
    verifications.set_function(lambda: logins.verifications)

    async def stop_logins(_: web.Application) -> None:
        logins.close()

    app.on_cleanup.append(stop_logins)
    for path, methods in OPENAPI["paths"].items():
        for method in methods:
            app.router.add_route(method.upper(), path, _HANDLERS[(method, path)])
    return app


@contextlib.asynccontextmanager
async def serve_api(service: AlarmService, config: ApiConfig) -> AsyncIterator[int]:
    """Serve the API (HTTPS if a certificate is configured); yields the bound port."""
    runner = web.AppRunner(build_app(service, config), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        context: ssl.SSLContext | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else config.port
        yield port
    finally:
        await runner.cleanup()


# -- OpenAPI ---------------------------------------------------------------------------------------

_ALARM_PATH: Final = "/api/v1/alarms/{alarm_id}"
_PATIENT_PATH: Final = "/api/v1/patients/{patient}/thresholds"
_BODIES: Final = (LoginBody, ReasonBody, SilenceBody, ThresholdsBody, UserBody, TokenBody, BreakGlassBody)
_, _COMPONENTS = msgspec.json.schema_components(_BODIES, ref_template="#/components/schemas/{name}")


def _override_schema(name: str, kind: Any) -> dict[str, Any]:
    if kind is bool:
        return {"type": "boolean"}
    low, high = THRESHOLD_RANGES.get(name, _UNLISTED_RANGE)
    if kind is int:
        return {"type": "integer", "minimum": int(low), "maximum": int(high)}
    if kind is float:
        return {"type": "number", "minimum": low, "maximum": high}
    choices = typing.get_args(kind)  # a Literal: its values (news2_scale 1 or 2, a profile name)
    if not choices:
        raise TypeError(f"threshold {name}: no OpenAPI schema for {kind!r}; add one here")
    return {"enum": list(choices)}


_COMPONENTS["ThresholdsBody"]["properties"]["overrides"] = {
    "type": "object",
    "description": "Settings to override (the rest come from the ward and defaults); must also be consistent, "
    "e.g. hr_low_severe < hr_low < hr_high",
    "additionalProperties": False,
    "properties": {name: _override_schema(name, kind) for name, kind in _FIELD_TYPES.items()},
}
_COMPONENTS["UserBody"]["properties"]["password"]["minLength"] = MIN_PASSWORD_LENGTH

_TIME: Final = {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS, "description": "ms since the epoch"}
_QUERY: Final[dict[str, dict[str, Any]]] = {
    "state": {"type": "string", "description": "comma-separated: open, active, acknowledged, silenced, resolved"},
    "ward": {"type": "string", "pattern": ID_PATTERN},
    "patient": {"type": "string", "pattern": ID_PATTERN},
    "alarm_id": {"type": "string", "pattern": ID_PATTERN},
    "limit": {"type": "integer", "minimum": -MAX_SEQ, "maximum": MAX_SEQ, "description": "clamped to 1..cap"},
    "since": _TIME,
    "until": _TIME,
    "after_seq": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
}
_PATH_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "alarm_id": {"type": "string", "minLength": 1, "maxLength": 200},
    "patient": {"type": "string", "pattern": ID_PATTERN},
    "ward": {"type": "string", "pattern": ID_PATTERN},
}


def _op(
    summary: str,
    handler: Handler,
    permission: str | None,
    body: str | None = None,
    query: tuple[str, ...] = (),
    path: tuple[str, ...] = (),
    statuses: tuple[int, ...] = (),
) -> dict[str, Any]:
    op = openapi_operation(summary, handler, permission, body)
    errors = set(statuses)
    if permission is not None:
        errors |= {401, 403}
    if body is not None:
        errors.add(400)
    if query:
        errors.add(400)
    parameters = [{"name": p, "in": "path", "required": True, "schema": _PATH_PARAMS[p]} for p in path]
    parameters += [{"name": q, "in": "query", "required": False, "schema": _QUERY[q]} for q in query]
    if parameters:
        op["parameters"] = parameters
    return add_error_responses(op, errors)


_ACTION: Final = ("alarm_id",)
_SPEC_PATHS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "/healthz": {"get": _op("Liveness", healthz, None)},
    "/metrics": {"get": _op("Prometheus metrics", prometheus_metrics, None)},
    "/api/v1/openapi.json": {"get": _op("This document", openapi, None)},
    "/api/v1/login": {
        "post": _op("Log in; returns {token, token_type, expires, role}", login, None, "LoginBody", statuses=(401, 429))
    },
    "/api/v1/logout": {"post": _op("End the session (and its break-glass tokens)", logout, "read_alarms")},
    "/api/v1/break-glass": {
        "post": _op(
            "Emergency doctor rights for a short time (clinical roles, own session only), audited",
            break_glass,
            "read_alarms",
            "BreakGlassBody",
        )
    },
    "/api/v1/alarms": {
        "get": _op(
            "List alarms (state=open|active|acknowledged|silenced|resolved, comma-separated)",
            list_alarms,
            "read_alarms",
            query=("state", "ward", "patient", "limit"),
        )
    },
    _ALARM_PATH: {"get": _op("One alarm with its page log", get_alarm, "read_alarms", path=_ACTION, statuses=(404,))},
    _ALARM_PATH + "/acknowledge": {
        "post": _op(
            "Acknowledge (stops escalation)",
            acknowledge,
            "act_on_alarms",
            "ReasonBody",
            path=_ACTION,
            statuses=(404, 409),
        )
    },
    _ALARM_PATH + "/silence": {
        "post": _op(
            "Silence for some minutes", silence, "act_on_alarms", "SilenceBody", path=_ACTION, statuses=(404, 409)
        )
    },
    _ALARM_PATH + "/resolve": {
        "post": _op("Resolve", resolve, "act_on_alarms", "ReasonBody", path=_ACTION, statuses=(404, 409))
    },
    _PATIENT_PATH: {
        "get": _op(
            "Overrides and effective thresholds", get_thresholds, "read_thresholds", query=("ward",), path=("patient",)
        ),
        "put": _op(
            "Replace overrides: checked, applied to the engine, then saved and audited (with old and new)",
            put_thresholds,
            "write_thresholds",
            "ThresholdsBody",
            query=("ward",),
            path=("patient",),
        ),
    },
    "/api/v1/wards/{ward}/live": {
        "get": _op(
            "The ward's live board: latest readings per patient and device, gateways, open alarms",
            requires(Permission.READ_ALARMS)(stream.ward_snapshot),
            "read_alarms",
            path=("ward",),
            statuses=(404,),
        )
    },
    "/api/v1/wards/{ward}/stream": {
        "get": _op(
            "Server-sent events (text/event-stream) of the ward's board: snapshot, then values and alarm events",
            requires(Permission.READ_ALARMS)(stream.ward_stream),
            "read_alarms",
            path=("ward",),
            statuses=(404,),
        )
    },
    "/api/v1/audit": {
        "get": _op(
            "Audit entries, oldest first",
            get_audit,
            "read_audit",
            query=("since", "alarm_id", "patient", "after_seq", "limit"),
        )
    },
    "/api/v1/audit/verify": {"get": _op("Verify the audit hash chain", verify_audit, "read_audit")},
    "/api/v1/metrics/burden": {
        "get": _op(
            "Alarm burden: pages/patient-day, acknowledged fraction, time to acknowledge, by rule",
            get_burden,
            "read_metrics",
            query=("since", "until", "ward"),
        )
    },
    "/api/v1/users": {
        "get": _op("List users", list_users, "manage_users"),
        "post": _op("Create a user", add_user, "manage_users", "UserBody"),
    },
    "/api/v1/tokens": {"post": _op("Create a machine token (shown once)", create_token, "manage_users", "TokenBody")},
    **REGISTRY_PATHS,
    **OBSERVATION_PATHS,
    **HANDOVER_PATHS,
}
_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    (method, path): op.pop("x-handler") for path, ops in _SPEC_PATHS.items() for method, op in ops.items()
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "wardwatch alerting API",
        "version": "1",
        "description": (
            "Alarms, clinician actions (acknowledge/silence/resolve with a reason, audited), per-patient "
            "thresholds, the append-only audit log and alarm-burden metrics. Bearer tokens from /api/v1/login "
            "(sessions with idle expiry) or machine tokens. Roles: viewer, nurse, charge_nurse, doctor, admin. "
            "Webhook pages: POST of the `Page` JSON with an `Idempotency-Key` header (= page_id); the "
            "PagerDuty-compatible channel posts Events API v2 events with dedup_key `{alarm_id}/{destination}`."
        ),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            **_COMPONENTS,
            **REGISTRY_SCHEMAS,
            **OBSERVATION_SCHEMAS,
            **HANDOVER_SCHEMAS,
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "PageWebhook": {
                "type": "object",
                "description": "Body of a generic webhook page (wardwatch wire schema v1, kind=page).",
                "required": [
                    "v",
                    "kind",
                    "page_id",
                    "alarm_id",
                    "dedup_key",
                    "patient",
                    "ward",
                    "priority",
                    "destination",
                    "step",
                    "t",
                    "text",
                ],
                "properties": {
                    "v": {"const": 1},
                    "kind": {"const": "page"},
                    "page_id": {"type": "string", "description": "idempotency key: {alarm_id}.r{round}.s{step}"},
                    "alarm_id": {"type": "string"},
                    "dedup_key": {"type": "string", "description": "{ward}/{patient}/{rule}"},
                    "patient": {"type": "string", "description": "pseudonymous id"},
                    "ward": {"type": "string"},
                    "priority": {"enum": ["high", "medium", "low"]},
                    "destination": {"type": "string"},
                    "step": {"type": "integer", "description": "escalation step; -1 for resolved notices"},
                    "t": {"type": "integer", "description": "ms since epoch"},
                    "text": {"type": "string"},
                    "state": {"enum": ["active", "resolved"]},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": _SPEC_PATHS,
}


def openapi_document(wards: list[str]) -> dict[str, Any]:
    """:data:`OPENAPI` for a service owning ``wards`` (the thresholds' ``ward`` parameter lists them)."""
    document: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(OPENAPI))
    operations = [document["paths"][_PATIENT_PATH].values()]
    operations += [item.values() for path, item in document["paths"].items() if path.startswith("/api/v1/registry/")]
    for operation in (op for ops in operations for op in ops):
        for parameter in operation.get("parameters", ()):
            if parameter["name"] == "ward":
                parameter["schema"] = {"type": "string", "enum": wards}
    for path in ("/api/v1/wards/{ward}/live", "/api/v1/wards/{ward}/stream"):
        for parameter in document["paths"][path]["get"]["parameters"]:
            parameter["schema"] = {"type": "string", "enum": wards}
    return document
