"""The console's NEWS2, manual-observation and per-patient threshold routes (relayed to the alerting API).

* ``GET /api/patients/{p}/news2`` — the NEWS2 now, with each parameter's value, time and source.
* ``GET /api/patients/{p}/news2/history?range=1h|24h|7d`` — the score over time, from InfluxDB's ``news2``
  measurement (what alerting published and ingest stored), read with the read-only user.
* ``GET`` / ``POST /api/patients/{p}/observations`` — a nurse's observations (the API checks, stores,
  audits and scores them; its 4xx message comes back as it is).
* ``POST /api/patients/{p}/thresholds`` — replace the patient's overrides with a reason (a ``PUT`` at the
  API, which bounds, applies and audits it). A POST here, so the console's CSRF check covers it.
* ``GET /api/forms`` — the bounds of both forms, taken from the API's own OpenAPI document, so the page
  offers exactly the ranges the API enforces.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import aiohttp
from aiohttp import web

from wardwatch.console.app import CONFIG_KEY, HTTP_KEY, TRENDS_KEY, _error, _id, _json, _relay
from wardwatch.console.trends import TrendRange

__all__ = ["HISTORY_BUCKETS", "add_routes", "history_query"]

_log = logging.getLogger(__name__)

HISTORY_BUCKETS: Final = {TrendRange.HOUR: None, TrendRange.DAY: "5m", TrendRange.WEEK: "30m"}
"""How the score history is read: every stored score for an hour, the worst score per bucket beyond."""
_HISTORY_LIMIT: Final = 5000


def history_query(database: str, policy: str, ward: str, patient: str, span: TrendRange) -> str:
    """The InfluxQL of a score history (``ward`` and ``patient`` are checked identifiers)."""
    source = f'"{database}"."{policy}"."news2"'
    where = f"WHERE \"ward\" = '{ward}' AND \"patient\" = '{patient}' AND time > now() - {span.value}"
    bucket = HISTORY_BUCKETS[span]
    if bucket is None:
        return f'SELECT "score", "full", "missing" FROM {source} {where} ORDER BY time LIMIT {_HISTORY_LIMIT}'  # noqa: S608
    return (
        f'SELECT max("score") AS "score", last("full") AS "full", last("missing") AS "missing" FROM {source} '  # noqa: S608
        f"{where} GROUP BY time({bucket}) fill(none)"
    )


async def news2_now(request: web.Request) -> web.Response:
    """The patient's NEWS2 now, each parameter with its value, time and source; ``{"patient", "score": null}`` while
    the alarm service has nothing to score (a patient just admitted): no score yet is an answer, not an error."""
    patient = _id(request, "patient")
    response = await _relay(request, "GET", f"/api/v1/patients/{patient}/news2")
    if response.status == 404:
        return _json({"patient": patient, "score": None})
    return response


async def news2_history(request: web.Request) -> web.Response:
    """``{range, bucket, points: [[t_ms, score, full, missing], ...]}`` from InfluxDB (read-only user)."""
    patient = _id(request, "patient")
    try:
        span = TrendRange(request.query.get("range", "24h"))
    except ValueError:
        return _error(400, "range must be 1h, 24h or 7d")
    config = request.app[CONFIG_KEY]
    reader = request.app[TRENDS_KEY]
    text = history_query(config.influx.database, config.influx.raw_policy, config.ward, patient, span)
    try:
        series = await reader.series(text)
    except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
        _log.error("reading the NEWS2 history failed: %s", exc)
        return _error(503, "the trend database cannot be read just now; the live NEWS2 is unaffected")
    points: list[list[Any]] = []
    for item in series:
        columns = item.get("columns", [])
        for row in item.get("values", []):
            values = dict(zip(columns, row, strict=False))
            if values.get("score") is None:
                continue
            missing = values.get("missing") or ""
            points.append(
                [values["time"], values["score"], bool(values.get("full")), missing.split(",") if missing else []]
            )
    return _json({"range": span.value, "bucket": HISTORY_BUCKETS[span] or "every score", "points": points})


async def observations(request: web.Request) -> web.Response:
    """The patient's latest manual observations."""
    patient = _id(request, "patient")
    return await _relay(request, "GET", f"/api/v1/patients/{patient}/observations", params={"limit": "10"})


async def record_observation(request: web.Request) -> web.Response:
    """Enter observations (the API bounds them and says what is wrong)."""
    patient = _id(request, "patient")
    return await _relay(request, "POST", f"/api/v1/patients/{patient}/observations", body=await request.read())


async def put_thresholds(request: web.Request) -> web.Response:
    """Replace the patient's threshold overrides, with a reason (PUT at the API: bounded and audited)."""
    patient = _id(request, "patient")
    ward = request.app[CONFIG_KEY].ward
    path = f"/api/v1/patients/{patient}/thresholds"
    return await _relay(request, "PUT", path, params={"ward": ward}, body=await request.read())


async def forms(request: web.Request) -> web.Response:
    """The observation and threshold bounds from the API's OpenAPI document."""
    url = request.app[CONFIG_KEY].alerting.url + "/api/v1/openapi.json"
    try:
        async with request.app[HTTP_KEY].get(url) as upstream:
            document: dict[str, Any] = await upstream.json(content_type=None)
            status = upstream.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        _log.error("the alerting API's OpenAPI document is unreachable: %s", exc)
        return _error(503, "the alarm service cannot be reached; try again shortly")
    if status != 200:
        return _error(502, f"the alarm service answered {status} for its OpenAPI document")
    schemas = document.get("components", {}).get("schemas", {})
    try:
        observation = schemas["ObservationBody"]["properties"]
        thresholds = schemas["ThresholdsBody"]["properties"]["overrides"]["properties"]
        reason = schemas["ThresholdsBody"]["properties"]["reason"]
    except KeyError as exc:
        return _error(502, f"the alarm service's OpenAPI document lacks {exc}: is it a different version?")
    return _json({"observation": observation, "thresholds": thresholds, "reason": reason})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the routes above."""
    router.add_get("/api/forms", forms)
    router.add_get("/api/patients/{patient}/news2", news2_now)
    router.add_get("/api/patients/{patient}/news2/history", news2_history)
    router.add_get("/api/patients/{patient}/observations", observations)
    router.add_post("/api/patients/{patient}/observations", record_observation)
    router.add_post("/api/patients/{patient}/thresholds", put_thresholds)
