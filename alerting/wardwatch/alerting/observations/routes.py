"""The manual observations' HTTP API under ``/api/v1/patients/{patient}/observations`` and ``.../news2``.

:data:`OBSERVATION_PATHS` and :data:`OBSERVATION_SCHEMAS` are merged into
:data:`wardwatch.alerting.api.OPENAPI` like the registry's. Entering needs ``record_observations``
(clinical roles: nurse, charge nurse, doctor); reading needs ``read_alarms``. Values outside their
bounds, a time in the future or too old, or an empty entry are a 422 saying which; every entry is audited.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from wardwatch.alerting.auth import Permission
from wardwatch.alerting.engine.news2 import Source
from wardwatch.alerting.http import (
    SERVICE_KEY,
    TEXT_PATTERN,
    error,
    json_response,
    path_id,
    principal_of,
    readable_text,
    refusals,
    requires,
)
from wardwatch.alerting.observations.live import news2_band
from wardwatch.alerting.observations.records import FUTURE_SLACK_MS, MAX_AGE_MS, ObservationError, Observations
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.query import PatientPath, read_query

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


class ObservationsQuery(msgspec.Struct):
    """How many entries to list, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class Observation(msgspec.Struct, kw_only=True):
    """One stored entry: who recorded it when, the SpO2 scale it was scored on, and the values given."""

    id: int
    patient: str
    ward: str
    taken_at: int
    recorded_at: int
    recorded_by: str
    spo2_scale: Literal[1, 2]
    note: str
    respiration: float | None = None  # numbers as stored (REAL)
    spo2: float | None = None
    supplemental_o2: bool | None = None
    systolic: float | None = None
    pulse: float | None = None
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    temperature: float | None = None


class ObservationList(msgspec.Struct):
    """The patient's manual observations, newest first."""

    patient: str
    observations: list[Observation]


class News2Parameter(msgspec.Struct):
    """One parameter of a NEWS2: its points, the value scored (ACVPU letter, bool for oxygen), when, from whom."""

    points: int
    value: float | str | bool
    t: int
    source: Source


class PatientNews2(msgspec.Struct):
    """The patient's NEWS2 now: total, full or partial (the missing parameters named), band, each parameter."""

    patient: str
    score: int
    full: bool
    label: str
    tier: str
    band: str  # low, low-medium, medium, high (the RCP risk bands)
    t: int
    spo2_scale: Literal[1, 2]
    o2: int
    missing: list[str]
    parameters: dict[str, News2Parameter]


def _observations(request: web.Request) -> Observations:
    return request.app[SERVICE_KEY].observations


@requires(Permission.RECORD_OBSERVATIONS)
@refusals(ObservationError)
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
    record = _observations(request).record(patient, body.taken_at, values, note, principal_of(request).actor)
    return json_response(record.as_json(), status=201)


@requires(Permission.READ_ALARMS)
async def list_observations(request: web.Request) -> web.Response:
    """The patient's manual observations, newest first."""
    patient = path_id(request, "patient")
    records = _observations(request).history(patient, read_query(request, ObservationsQuery).limit)
    return json_response({"patient": patient, "observations": [r.as_json() for r in records]})


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
    answer = PatientNews2(
        patient=patient,
        score=score.score,
        full=score.full,
        label=score.label,
        tier=score.tier,
        band=news2_band(score.score, score.any_three),
        t=score.t,
        spo2_scale=score.spo2_scale,
        o2=score.o2,
        missing=[p.value for p in score.missing],
        parameters={p.value: News2Parameter(score.points[p], o.value, o.t, o.source) for p, o in score.used.items()},
    )
    return json_response(answer)


_PATH: Final = "/api/v1/patients/{patient}"
OBSERVATION_PATHS: Final[PathTable] = {
    _PATH + "/observations": {
        "get": operation(
            "A patient's manual observations, newest first",
            list_observations,
            Permission.READ_ALARMS,
            response=ObservationList,
            path=PatientPath,
            query=ObservationsQuery,
        ),
        "post": operation(
            "Enter a nurse's observations (clinical roles; audited); NEWS2 is re-scored",
            record_observation,
            Permission.RECORD_OBSERVATIONS,
            body=ObservationBody,
            response=Observation,
            status=201,
            path=PatientPath,
            statuses=(404, 409, 422),
        ),
    },
    _PATH + "/news2": {
        "get": operation(
            "The patient's NEWS2 now (full or partial, the missing parameters named)",
            get_news2,
            Permission.READ_ALARMS,
            response=PatientNews2,
            path=PatientPath,
            statuses=(400, 404, 503),
        )
    },
}
OBSERVATION_SCHEMAS: Final = components_of(OBSERVATION_PATHS)
