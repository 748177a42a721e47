"""Unauthenticated service routes: health, Prometheus metrics and the OpenAPI document itself."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wardwatch.alerting.http import SERVICE_KEY
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.openapi import PathTable, components_of, operation

OPENAPI_KEY: Final = web.AppKey("openapi", dict[str, Any])


class Health(msgspec.Struct):
    """The service's health (503 unless ``ok``, with the problems named)."""

    status: str
    problems: list[str]
    inputs_ready: bool
    open_alarms: int


async def healthz(request: web.Request) -> web.Response:
    """Health: 200 ``ok``, or 503 ``degraded`` (only running late) / ``unhealthy`` with the reasons."""
    service = request.app[SERVICE_KEY]
    problems = service.health()
    health = Health(
        status=service.status(),
        problems=list(problems),
        inputs_ready=service.inputs_ready,
        open_alarms=len(service.manager.open_alarms()),
    )
    return _json(health, status=503 if problems else 200)


async def prometheus_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (no PHI: labels are rules, priorities, channels)."""
    service = request.app[SERVICE_KEY]
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API (with this service's wards)."""
    return _json(request.app[OPENAPI_KEY])


_HEALTH: Final = operation("Liveness", healthz, None, response=Health)
_HEALTH["responses"]["503"] = {**_HEALTH["responses"]["200"], "description": "degraded or unhealthy: the problems"}

SERVICE_PATHS: Final[PathTable] = {
    "/healthz": {"get": _HEALTH},
    "/metrics": {
        "get": operation(
            "Prometheus metrics", prometheus_metrics, None, media={"text/plain": {"schema": {"type": "string"}}}
        )
    },
    "/api/v1/openapi.json": {
        "get": operation("This document", openapi, None, media={"application/json": {"schema": {"type": "object"}}})
    },
}
SERVICE_SCHEMAS: Final = components_of(SERVICE_PATHS)
