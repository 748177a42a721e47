"""The alerting HTTP API (aiohttp): alarms, clinician actions, thresholds, audit, burden metrics, users.

Every ``/api/v1`` route except login and the OpenAPI document needs ``Authorization: Bearer
<token>`` (a session from ``POST /api/v1/login`` or a machine token) and a role that grants the
route's permission (:data:`wardwatch.alerting.auth.ROLE_PERMISSIONS`): 401 without valid
credentials, 403 without the permission. Clinician actions need a reason and are audited with
actor and time. The OpenAPI 3.1 document is served at ``/api/v1/openapi.json``. Serve over TLS
(``api.tls_cert``/``api.tls_key``) anywhere but loopback.

This module holds the auth middleware, the application and the server. The handlers live by area in
:mod:`wardwatch.alerting.routes` (and the registry's and observations' ``routes`` modules); each exports
``*_PATHS`` (operations built by :func:`wardwatch.alerting.openapi.operation`, handler included) and
``*_SCHEMAS``, merged below into :data:`OPENAPI`, from which the routes are registered.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from aiohttp import web
from prometheus_client import Counter, Gauge

from wardwatch.alerting import stream
from wardwatch.alerting.auth import Authenticator, LoginGuard, LoginLimits, LoginService, Permission
from wardwatch.alerting.handover.routes import HANDOVER_PATHS, HANDOVER_SCHEMAS
from wardwatch.alerting.http import PRINCIPAL_KEY, SERVICE_KEY, Handler
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.observations.routes import OBSERVATION_PATHS, OBSERVATION_SCHEMAS
from wardwatch.alerting.openapi import TYPES_KEY, components
from wardwatch.alerting.proxies import TRUSTED_PROXIES_KEY, TrustedProxies
from wardwatch.alerting.registry.routes import REGISTRY_PATHS, REGISTRY_SCHEMAS
from wardwatch.alerting.routes.alarms import ALARM_PATHS, ALARM_SCHEMAS
from wardwatch.alerting.routes.audit import AUDIT_PATHS, AUDIT_SCHEMAS
from wardwatch.alerting.routes.service import OPENAPI_KEY, SERVICE_PATHS, SERVICE_SCHEMAS
from wardwatch.alerting.routes.session import AUTH_KEY, LOGIN_KEY, LOGINS_KEY, SESSION_PATHS, SESSION_SCHEMAS
from wardwatch.alerting.routes.thresholds import THRESHOLD_PATH, THRESHOLD_PATHS, THRESHOLD_SCHEMAS
from wardwatch.alerting.routes.users import USER_PATHS, USER_SCHEMAS
from wardwatch.alerting.routes.wards import WARD_PATHS, WARD_SCHEMAS
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import ApiConfig
from wardwatch.alerting.store import StoreError
from wardwatch.core.schema import Page

__all__ = ["OPENAPI", "build_app", "openapi_document", "serve_api"]

_log = logging.getLogger(__name__)

_PUBLIC: Final = frozenset({"/api/v1/login", "/api/v1/openapi.json", "/healthz", "/metrics"})


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
    app[TRUSTED_PROXIES_KEY] = TrustedProxies(config.trusted_proxies)
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
# A route module exports *_PATHS (operations with their handlers) and *_SCHEMAS; add one line to each below.

_SPEC_PATHS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    **SERVICE_PATHS,
    **SESSION_PATHS,
    **ALARM_PATHS,
    **THRESHOLD_PATHS,
    **WARD_PATHS,
    **AUDIT_PATHS,
    **USER_PATHS,
    **REGISTRY_PATHS,
    **OBSERVATION_PATHS,
    **HANDOVER_PATHS,
}
_SCHEMAS: Final[dict[str, Any]] = {
    **SERVICE_SCHEMAS,
    **SESSION_SCHEMAS,
    **ALARM_SCHEMAS,
    **THRESHOLD_SCHEMAS,
    **WARD_SCHEMAS,
    **AUDIT_SCHEMAS,
    **USER_SCHEMAS,
    **REGISTRY_SCHEMAS,
    **OBSERVATION_SCHEMAS,
    **HANDOVER_SCHEMAS,
}
_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    (method, path): op.pop("x-handler") for path, ops in _SPEC_PATHS.items() for method, op in ops.items()
}
for _ops in _SPEC_PATHS.values():
    for _op in _ops.values():
        _op.pop(TYPES_KEY, None)


def _page_webhook() -> dict[str, Any]:
    """The wire schema's ``Page`` (and the enums it names), as the body of a webhook page."""
    schemas = components((Page,))
    page = schemas.pop("Page")
    page["description"] = "Body of a generic webhook page (wardwatch wire schema, kind=page)."
    return {**schemas, "PageWebhook": page}


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
            **_SCHEMAS,
            **_page_webhook(),
        },
    },
    "security": [{"bearer": []}],
    "paths": _SPEC_PATHS,
}


def openapi_document(wards: list[str]) -> dict[str, Any]:
    """:data:`OPENAPI` for a service owning ``wards`` (the thresholds' ``ward`` parameter lists them)."""
    document: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(OPENAPI))
    operations = [document["paths"][THRESHOLD_PATH].values()]
    operations += [item.values() for path, item in document["paths"].items() if path.startswith("/api/v1/registry/")]
    for operation in (op for ops in operations for op in ops):
        for parameter in operation.get("parameters", ()):
            if parameter["name"] == "ward":
                parameter["schema"] = {"type": "string", "enum": wards}
    for path in ("/api/v1/wards/{ward}/live", "/api/v1/wards/{ward}/stream"):
        for parameter in document["paths"][path]["get"]["parameters"]:
            parameter["schema"] = {"type": "string", "enum": wards}
    return document
