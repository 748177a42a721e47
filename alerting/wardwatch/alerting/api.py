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
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Authenticator, AuthError, Permission, Principal, Role
from wardwatch.alerting.manager import AlarmNotFoundError, AlarmRecord, InvalidTransitionError
from wardwatch.alerting.metrics import burden
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import ApiConfig
from wardwatch.alerting.store import StoreError
from wardwatch.core.errors import ConfigError
from wardwatch.core.ids import check_id

__all__ = ["OPENAPI", "build_app", "serve_api"]

_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE_KEY: Final = web.AppKey("service", AlarmService)
AUTH_KEY: Final = web.AppKey("auth", Authenticator)
PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)
_PUBLIC: Final = frozenset({"/api/v1/login", "/api/v1/openapi.json", "/healthz", "/metrics"})

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/login``."""

    name: str
    password: str


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    """Acknowledge or resolve."""

    reason: Reason


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    """Silence for ``minutes``."""

    reason: Reason
    minutes: Annotated[float, msgspec.Meta(gt=0, le=1440)]


class ThresholdsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Replace a patient's threshold overrides (``{}`` removes them all)."""

    overrides: dict[str, Any]
    reason: Reason


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a user."""

    name: str
    role: Role
    password: str


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a machine token."""

    name: str
    role: Role
    ttl_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


def _now() -> int:
    return time.time_ns() // 1_000_000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def requires(permission: Permission) -> Callable[[Handler], Handler]:
    """Mark a handler as needing ``permission`` (checked by the auth middleware)."""

    def mark(handler: Handler) -> Handler:
        handler.wardwatch_permission = permission  # type: ignore[attr-defined]
        return handler

    return mark


def _principal(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL_KEY]
    return principal


async def _body(request: web.Request, model: type[_T]) -> _T:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": f"invalid body: {exc}"}).decode(), content_type="application/json"
        ) from None
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text='{"error": "body is not valid JSON"}', content_type="application/json") from None


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
    finally:
        service.metrics.api_requests.labels(method=request.method, route=route, status=str(status)).inc()


# -- handlers ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Health: 200 ``ok``, or 503 ``unhealthy`` with the reasons (e.g. a patient's monitoring impaired)."""
    service = request.app[SERVICE_KEY]
    problems = service.health()
    return _json(
        {
            "status": "unhealthy" if problems else "ok",
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
    """The OpenAPI document of this API."""
    return _json(OPENAPI)


async def login(request: web.Request) -> web.Response:
    """Exchange name and password for a session token (idle expiry = automatic logoff)."""
    body = await _body(request, LoginBody)
    service = request.app[SERVICE_KEY]
    now = _now()
    try:
        token, expires = request.app[AUTH_KEY].login(body.name, body.password, now)
    except AuthError:
        service.store.audit(AuditEntry(t=now, actor=body.name[:64], action="login_failed"))
        return _error(401, "wrong user name or password", **{"WWW-Authenticate": "Bearer"})
    service.store.audit(AuditEntry(t=now, actor=body.name, action="login"))
    return _json({"token": token, "token_type": "Bearer", "expires": expires})


class BreakGlassBody(msgspec.Struct, forbid_unknown_fields=True):
    """Emergency access: why."""

    reason: Reason


@requires(Permission.READ_ALARMS)
async def break_glass(request: web.Request) -> web.Response:
    """Emergency ``doctor`` rights for an hour, for a person, with a reason; audited."""
    body = await _body(request, BreakGlassBody)
    principal = _principal(request)
    now = _now()
    try:
        token, expires = request.app[AUTH_KEY].break_glass(principal, now)
    except AuthError as exc:
        return _error(403, str(exc))
    request.app[SERVICE_KEY].store.audit(
        AuditEntry(t=now, actor=principal.name, action="break_glass", reason=body.reason, details={"expires": expires})
    )
    return _json({"token": token, "token_type": "Bearer", "expires": expires, "role": "doctor"})


@requires(Permission.READ_ALARMS)
async def logout(request: web.Request) -> web.Response:
    """End the caller's session."""
    header = request.headers.get("Authorization", "")
    request.app[AUTH_KEY].logout(header.partition(" ")[2].strip())
    request.app[SERVICE_KEY].store.audit(AuditEntry(t=_now(), actor=_principal(request).actor, action="logout"))
    return _json({"status": "logged out"})


def _alarm_json(record: AlarmRecord) -> dict[str, Any]:
    return {
        "alarm_id": record.alarm_id,
        "dedup_key": record.dedup_key,
        "ward": record.ward,
        "patient": record.patient,
        "rule": record.rule,
        "category": record.category,
        "priority": record.priority,
        "state": record.state,
        "started": record.started,
        "updated": record.updated,
        "value": record.value,
        "text": record.text,
        "actor": record.actor,
        "condition_active": record.condition_active,
        "escalation": {"round": record.round, "step": record.step, "next_step_at": record.next_step_at},
        "acknowledged_at": record.acknowledged_at,
        "silenced_until": record.silenced_until,
        "renotify_at": record.renotify_at,
        "resolved_at": record.resolved_at,
        "pages": record.pages,
        "flaps": record.flaps,
    }


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
            return _error(400, f"unknown state {state!r} (open, active, acknowledged, silenced, resolved)")
    try:
        limit = min(int(query.get("limit", "500")), 5000)
    except ValueError:
        return _error(400, "limit must be an integer")
    records = service.store.alarms(
        states=states, ward=query.get("ward"), patient=query.get("patient"), limit=max(1, limit)
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


async def _command(request: web.Request, action: Callable[[AlarmService, str, str], AlarmRecord]) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        record = action(service, request.match_info["alarm_id"], _principal(request).actor)
    except AlarmNotFoundError as exc:
        return _error(404, str(exc))
    except InvalidTransitionError as exc:
        return _error(409, str(exc))
    return _json(_alarm_json(record))


@requires(Permission.ACT_ON_ALARMS)
async def acknowledge(request: web.Request) -> web.Response:
    """Acknowledge: stops escalation."""
    body = await _body(request, ReasonBody)
    return await _command(request, lambda s, a, actor: s.acknowledge(a, actor, body.reason))


@requires(Permission.ACT_ON_ALARMS)
async def silence(request: web.Request) -> web.Response:
    """Silence for some minutes (bounded by the ward's ``max_silence_s``)."""
    body = await _body(request, SilenceBody)
    return await _command(request, lambda s, a, actor: s.silence(a, actor, body.reason, body.minutes))


@requires(Permission.ACT_ON_ALARMS)
async def resolve(request: web.Request) -> web.Response:
    """Resolve by hand."""
    body = await _body(request, ReasonBody)
    return await _command(request, lambda s, a, actor: s.resolve(a, actor, body.reason))


def _patient(request: web.Request) -> str:
    try:
        return check_id(request.match_info["patient"], "patient id")
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": str(exc)}).decode(), content_type="application/json"
        ) from None


def _effective(service: AlarmService, patient: str, overrides: dict[str, Any], ward: str | None) -> dict[str, Any]:
    """Validate ``overrides`` against the service's rules and return the effective thresholds on ``ward``."""
    rules = service.rules_with(patient, overrides)
    effective: dict[str, Any] = msgspec.to_builtins(rules.resolve(ward or next(iter(service.config.wards)), patient))
    return effective


@requires(Permission.READ_THRESHOLDS)
async def get_thresholds(request: web.Request) -> web.Response:
    """A patient's overrides and effective thresholds; the read is audited."""
    service = request.app[SERVICE_KEY]
    patient = _patient(request)
    overrides = service.rules.patient_overrides(patient)
    service.store.audit(
        AuditEntry(t=_now(), actor=_principal(request).actor, action="thresholds_read", patient=patient)
    )
    return _json(
        {
            "patient": patient,
            "overrides": overrides,
            "effective": _effective(service, patient, overrides, request.query.get("ward")),
        }
    )


@requires(Permission.WRITE_THRESHOLDS)
async def put_thresholds(request: web.Request) -> web.Response:
    """Replace a patient's overrides (validated; audited with old and new values)."""
    service = request.app[SERVICE_KEY]
    patient = _patient(request)
    body = await _body(request, ThresholdsBody)
    try:
        effective = _effective(service, patient, body.overrides, request.query.get("ward"))
    except ConfigError as exc:
        return _error(400, f"invalid thresholds: {exc.problem} ({exc.key})")
    old = service.set_thresholds(patient, body.overrides, _principal(request).actor, body.reason)
    return _json({"patient": patient, "old": old, "overrides": body.overrides, "effective": effective})


def _int_query(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": f"{name} must be an integer"}).decode(), content_type="application/json"
        ) from None


@requires(Permission.READ_AUDIT)
async def get_audit(request: web.Request) -> web.Response:
    """Audit entries (filtered), oldest first; reading the audit log is itself audited."""
    service = request.app[SERVICE_KEY]
    entries = service.store.audit_entries(
        since=_int_query(request, "since", None),
        alarm_id=request.query.get("alarm_id"),
        patient=request.query.get("patient"),
        after_seq=_int_query(request, "after_seq", 0) or 0,
        limit=min(_int_query(request, "limit", 1000) or 1000, 10_000),
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
    until = _int_query(request, "until", _now() + 1)
    assert until is not None
    since = _int_query(request, "since", until - 86_400_000)
    assert since is not None
    return _json(burden(service.store, since, until, request.query.get("ward")))


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
        request.app[AUTH_KEY].add_user(body.name, body.role, body.password, _now())
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
    app[AUTH_KEY] = Authenticator(
        service.store,
        session_ttl_ms=round(config.session_ttl_s * 1000),
        session_max_ms=round(config.session_max_s * 1000),
        argon2_time_cost=config.argon2_time_cost,
        argon2_memory_kib=config.argon2_memory_kib,
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
    app.router.add_post("/api/v1/break-glass", break_glass)
    app.router.add_get("/api/v1/alarms", list_alarms)
    app.router.add_get("/api/v1/alarms/{alarm_id}", get_alarm)
    app.router.add_post("/api/v1/alarms/{alarm_id}/acknowledge", acknowledge)
    app.router.add_post("/api/v1/alarms/{alarm_id}/silence", silence)
    app.router.add_post("/api/v1/alarms/{alarm_id}/resolve", resolve)
    app.router.add_get("/api/v1/patients/{patient}/thresholds", get_thresholds)
    app.router.add_put("/api/v1/patients/{patient}/thresholds", put_thresholds)
    app.router.add_get("/api/v1/audit", get_audit)
    app.router.add_get("/api/v1/audit/verify", verify_audit)
    app.router.add_get("/api/v1/metrics/burden", get_burden)
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", add_user)
    app.router.add_post("/api/v1/tokens", create_token)
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


def _op(
    summary: str, permission: str | None, body: str | None = None, params: list[str] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
    if permission is not None:
        op["description"] = f"Needs permission `{permission}`."
        op["responses"].update(
            {"401": {"description": "no valid token"}, "403": {"description": "role lacks permission"}}
        )
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if params:
        op["parameters"] = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}} for p in params]
    return op


def _schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(model)
    return (
        {k: v for k, v in schema.items() if k != "$defs"} if "$ref" not in schema else schema["$defs"][model.__name__]
    )


_ALARM_PATH = "/api/v1/alarms/{alarm_id}"
_PATIENT_PATH = "/api/v1/patients/{patient}/thresholds"

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
            "LoginBody": _schema(LoginBody),
            "ReasonBody": _schema(ReasonBody),
            "SilenceBody": _schema(SilenceBody),
            "ThresholdsBody": _schema(ThresholdsBody),
            "UserBody": _schema(UserBody),
            "TokenBody": _schema(TokenBody),
            "BreakGlassBody": _schema(BreakGlassBody),
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
    "paths": {
        "/healthz": {"get": _op("Liveness", None)},
        "/metrics": {"get": _op("Prometheus metrics", None)},
        "/api/v1/openapi.json": {"get": _op("This document", None)},
        "/api/v1/login": {"post": _op("Log in; returns {token, token_type, expires}", None, "LoginBody")},
        "/api/v1/logout": {"post": _op("End the session", "read_alarms")},
        "/api/v1/break-glass": {
            "post": _op("Emergency doctor rights for 1 h (people only), audited", "read_alarms", "BreakGlassBody")
        },
        "/api/v1/alarms": {
            "get": _op(
                "List alarms (state=open|active|acknowledged|silenced|resolved, comma-separated)",
                "read_alarms",
                params=["state", "ward", "patient", "limit"],
            )
        },
        _ALARM_PATH: {"get": _op("One alarm with its page log", "read_alarms")},
        _ALARM_PATH + "/acknowledge": {"post": _op("Acknowledge (stops escalation)", "act_on_alarms", "ReasonBody")},
        _ALARM_PATH + "/silence": {"post": _op("Silence for some minutes", "act_on_alarms", "SilenceBody")},
        _ALARM_PATH + "/resolve": {"post": _op("Resolve", "act_on_alarms", "ReasonBody")},
        _PATIENT_PATH: {
            "get": _op("Overrides and effective thresholds", "read_thresholds", params=["ward"]),
            "put": _op("Replace overrides (audited with old and new)", "write_thresholds", "ThresholdsBody", ["ward"]),
        },
        "/api/v1/audit": {
            "get": _op(
                "Audit entries, oldest first",
                "read_audit",
                params=["since", "alarm_id", "patient", "after_seq", "limit"],
            )
        },
        "/api/v1/audit/verify": {"get": _op("Verify the audit hash chain", "read_audit")},
        "/api/v1/metrics/burden": {
            "get": _op(
                "Alarm burden: pages/patient-day, acknowledged fraction, time to acknowledge, by rule",
                "read_metrics",
                params=["since", "until", "ward"],
            )
        },
        "/api/v1/users": {
            "get": _op("List users", "manage_users"),
            "post": _op("Create a user", "manage_users", "UserBody"),
        },
        "/api/v1/tokens": {"post": _op("Create a machine token (shown once)", "manage_users", "TokenBody")},
    },
}
