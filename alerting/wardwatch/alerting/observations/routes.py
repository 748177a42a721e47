"""The manual observations' HTTP API under ``/api/v1/patients/{patient}/observations`` and ``.../news2``.

:data:`OBSERVATION_PATHS` and :data:`OBSERVATION_SCHEMAS` are merged into
:data:`wardwatch.alerting.api.OPENAPI` like the registry's. Entering needs ``record_observations``
(clinical roles: nurse, charge nurse, doctor); reading needs ``read_alarms``. Values outside their
bounds, a time in the future or too old, or an empty entry are a 422 saying which; every entry is audited.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web

from wardwatch.alerting.auth import Permission
from wardwatch.alerting.engine.news2 import News2Score
from wardwatch.alerting.http import (
    SERVICE_KEY,
    TEXT_PATTERN,
    Handler,
    add_error_responses,
    bad_request,
    error,
    json_response,
    openapi_operation,
    path_id,
    principal_of,
    readable_text,
    requires,
)
from wardwatch.alerting.observations.live import news2_band
from wardwatch.alerting.observations.records import FUTURE_SLACK_MS, MAX_AGE_MS, ObservationError, Observations
from wardwatch.core.ids import ID_PATTERN

Note = Annotated[str, msgspec.Meta(max_length=500, pattern=TEXT_PATTERN)]


class ObservationBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One set of observations a nurse took at ``taken_at`` (ms since the epoch); give at least one value.

    Bounds are what can be measured and entered, not alarm limits: respiration 0-80 /min, SpO2 50-100 %,
    systolic 40-300 mmHg, pulse 20-250 /min, temperature 30-45 °C, consciousness one ACVPU letter.
    """

    # how old or early (relative to now) the API accepts it, for forms: x-max-age-ms, x-future-slack-ms
    taken_at: Annotated[
        int, msgspec.Meta(ge=0, extra_json_schema={"x-max-age-ms": MAX_AGE_MS, "x-future-slack-ms": FUTURE_SLACK_MS})
    ]
    respiration: Annotated[int, msgspec.Meta(ge=0, le=80)] | None = None
    spo2: Annotated[int, msgspec.Meta(ge=50, le=100)] | None = None
    supplemental_o2: bool | None = None
    systolic: Annotated[int, msgspec.Meta(ge=40, le=300)] | None = None
    pulse: Annotated[int, msgspec.Meta(ge=20, le=250)] | None = None
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=30.0, le=45.0)] | None = None
    note: Note = ""


_, OBSERVATION_SCHEMAS = msgspec.json.schema_components((ObservationBody,), ref_template="#/components/schemas/{name}")


def _observations(request: web.Request) -> Observations:
    return request.app[SERVICE_KEY].observations


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise bad_request("limit must be an integer from 1 to 1000")
    return int(raw)


@requires(Permission.RECORD_OBSERVATIONS)
async def record_observation(request: web.Request) -> web.Response:
    """Store and audit a nurse's observations; the engine re-scores the patient's NEWS2 at once."""
    patient = path_id(request, "patient")
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw, type=ObservationBody)
    except msgspec.ValidationError as exc:
        return error(422, f"invalid observation: {exc}")
    except msgspec.DecodeError:
        return error(400, "body is not valid JSON")
    note = readable_text(body.note, "note") if body.note else ""
    values = {
        name: getattr(body, name)
        for name in ("respiration", "spo2", "supplemental_o2", "systolic", "pulse", "consciousness", "temperature")
    }
    try:
        record = _observations(request).record(patient, body.taken_at, values, note, principal_of(request).actor)
    except ObservationError as exc:
        return error(exc.status, exc.message)
    return json_response(record.as_json(), status=201)


@requires(Permission.READ_ALARMS)
async def list_observations(request: web.Request) -> web.Response:
    """The patient's manual observations, newest first."""
    patient = path_id(request, "patient")
    records = _observations(request).history(patient, _limit(request))
    return json_response({"patient": patient, "observations": [r.as_json() for r in records]})


def score_json(score: News2Score) -> dict[str, Any]:
    """A NEWS2 as the API (and the score stream) shows it."""
    return {
        "score": score.score,
        "full": score.full,
        "label": score.label,
        "tier": score.tier,
        "band": news2_band(score.score, score.any_three),
        "t": score.t,
        "spo2_scale": score.spo2_scale,
        "o2": score.o2,
        "missing": [p.value for p in score.missing],
        "parameters": {
            p.value: {"points": score.points[p], "value": o.value, "t": o.t, "source": o.source}
            for p, o in score.used.items()
        },
    }


@requires(Permission.READ_ALARMS)
async def get_news2(request: web.Request) -> web.Response:
    """The patient's NEWS2 now: each parameter from the device or the nurse, whichever is recent."""
    patient = path_id(request, "patient")
    observations = _observations(request)
    source = observations.score_source
    if source is None:
        return error(503, "no engine scores NEWS2 in this service")
    score = source(patient, request.app[SERVICE_KEY].clock.now_ms())
    if score is None:
        return error(404, f"no data or observations for patient {patient} since the service started")
    return json_response({"patient": patient, **score_json(score)})


def _op(
    summary: str, handler: Handler, permission: Permission, body: str | None = None, *, statuses: tuple[int, ...] = ()
) -> dict[str, Any]:
    op = openapi_operation(summary, handler, permission, body)
    op["parameters"] = [
        {"name": "patient", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
    ]
    if handler is list_observations:
        op["parameters"].append(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            }
        )
    if handler is record_observation:
        op["responses"]["201"] = {"description": "stored and audited; the body is the stored entry"}
    return add_error_responses(op, {400, 401, 403, *statuses})


_PATH: Final = "/api/v1/patients/{patient}"
OBSERVATION_PATHS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    _PATH + "/observations": {
        "get": _op("A patient's manual observations, newest first", list_observations, Permission.READ_ALARMS),
        "post": _op(
            "Enter a nurse's observations (clinical roles; audited); NEWS2 is re-scored",
            record_observation,
            Permission.RECORD_OBSERVATIONS,
            "ObservationBody",
            statuses=(404, 409, 422),
        ),
    },
    _PATH + "/news2": {
        "get": _op(
            "The patient's NEWS2 now (full or partial, the missing parameters named)",
            get_news2,
            Permission.READ_ALARMS,
            statuses=(404, 503),
        )
    },
}
