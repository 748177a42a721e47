"""Alarms: list, one with its page log, the clinician actions (acknowledge, silence, resolve) and the burden."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final

import msgspec
from aiohttp import web

from wardwatch.alerting.auth import Permission
from wardwatch.alerting.http import SERVICE_KEY, Reason, read_reasoned_body, requires
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.live import alarm_json as _alarm_json
from wardwatch.alerting.manager import AlarmNotFoundError, AlarmRecord, InvalidTransitionError, resolve_notice
from wardwatch.alerting.metrics import burden
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.query import MAX_TIME_MS, IdParam, LimitParam, TimeParam, clamped, read_query
from wardwatch.alerting.service import AlarmService
from wardwatch.core.schema import AlarmCategory, AlarmState, Priority


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    """Acknowledge or resolve."""

    reason: Reason


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    """Silence for ``minutes``."""

    reason: Reason
    minutes: Annotated[float, msgspec.Meta(gt=0, le=1440)]


class AlarmPath(msgspec.Struct):
    """The alarm an operation is about."""

    alarm_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class AlarmsQuery(msgspec.Struct):
    """Which alarms to list."""

    state: Annotated[
        str, msgspec.Meta(description="comma-separated: open, active, acknowledged, silenced, resolved")
    ] = "open"
    ward: IdParam | None = None
    patient: IdParam | None = None
    limit: LimitParam = 500


class BurdenQuery(msgspec.Struct):
    """The window (default: the last day) and ward of a burden report."""

    since: TimeParam | None = None
    until: TimeParam | None = None
    ward: IdParam | None = None


class Escalation(msgspec.Struct):
    """Where the alarm's escalation stands: round, last step paged, when the next step is due."""

    round: int
    step: int
    next_step_at: int | None


class Alarm(msgspec.Struct):
    """An alarm as the API and the live stream show it (times: ms since the epoch)."""

    alarm_id: str
    dedup_key: str
    ward: str
    patient: str
    rule: str
    category: AlarmCategory
    priority: Priority
    state: AlarmState
    started: int
    updated: int
    value: float | None
    text: str
    actor: str | None
    condition_active: bool
    escalation: Escalation
    acknowledged_at: int | None
    silenced_until: int | None
    renotify_at: int | None
    resolved_at: int | None
    realarm_at: int | None  # resolved by hand while present: a new alarm opens then unless it clears
    reraised_as: str | None
    reraised_from: str | None
    pages: int
    flaps: int


class ResolvedAlarm(Alarm):
    """The answer to a manual resolve: the alarm, whether its condition lasts and when it re-alarms."""

    condition_still_present: bool
    notice: str | None = None


class PageLogEntry(msgspec.Struct):
    """A page sent for an alarm and its delivery state."""

    page_id: str
    destination: str
    step: int
    created: int
    status: str
    channel: str | None
    delivered_at: int | None
    attempts: int


class AlarmWithPages(Alarm):
    """One alarm with its page log."""

    page_log: list[PageLogEntry]


class AlarmList(msgspec.Struct):
    """The alarms found."""

    alarms: list[Alarm]


class TimeToAcknowledge(msgspec.Struct):
    """Seconds from start to first acknowledgement (``null`` without acknowledged alarms)."""

    median: float | None
    p90: float | None
    mean: float | None


class BurdenBlock(msgspec.Struct):
    """The burden of a set of alarms."""

    alarms: int
    pages: int
    pages_per_patient_day: float | None
    alarms_per_patient_day: float | None
    acknowledged_fraction: float | None
    time_to_acknowledge_s: TimeToAcknowledge
    flaps: int


class Burden(msgspec.Struct):
    """Alarm burden for alarms started in ``[since, until)``, overall and by rule."""

    since: int
    until: int
    ward: str | None
    patient_days: int
    total: BurdenBlock
    by_rule: dict[str, BurdenBlock]


_STATES: Final = {"active", "acknowledged", "silenced", "resolved"}


@requires(Permission.READ_ALARMS)
async def list_alarms(request: web.Request) -> web.Response:
    """Alarms by state (``open`` = not resolved, the default), ward and patient."""
    service = request.app[SERVICE_KEY]
    query = read_query(request, AlarmsQuery)
    wanted = [s for s in query.state.split(",") if s]
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
        ward=query.ward,
        patient=query.patient,
        limit=clamped(query.limit, 5000),
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


@requires(Permission.READ_METRICS)
async def get_burden(request: web.Request) -> web.Response:
    """Alarm burden: pages per patient-day, acknowledged fraction, time to acknowledge, by rule."""
    service = request.app[SERVICE_KEY]
    query = read_query(request, BurdenQuery)
    until = query.until if query.until is not None else min(_now() + 1, MAX_TIME_MS)
    since = query.since if query.since is not None else max(0, until - 86_400_000)
    return _json(burden(service.store, since, until, query.ward))


_ALARM: Final = "/api/v1/alarms/{alarm_id}"
ALARM_PATHS: Final[PathTable] = {
    "/api/v1/alarms": {
        "get": operation(
            "List alarms (state=open|active|acknowledged|silenced|resolved, comma-separated)",
            list_alarms,
            "read_alarms",
            response=AlarmList,
            query=AlarmsQuery,
        )
    },
    _ALARM: {
        "get": operation(
            "One alarm with its page log",
            get_alarm,
            "read_alarms",
            response=AlarmWithPages,
            path=AlarmPath,
            statuses=(404,),
        )
    },
    _ALARM + "/acknowledge": {
        "post": operation(
            "Acknowledge (stops escalation)",
            acknowledge,
            "act_on_alarms",
            body=ReasonBody,
            response=Alarm,
            path=AlarmPath,
            statuses=(404, 409),
        )
    },
    _ALARM + "/silence": {
        "post": operation(
            "Silence for some minutes",
            silence,
            "act_on_alarms",
            body=SilenceBody,
            response=Alarm,
            path=AlarmPath,
            statuses=(404, 409),
        )
    },
    _ALARM + "/resolve": {
        "post": operation(
            "Resolve; a condition still present re-alarms after the ward's resolved_recheck_s unless it clears",
            resolve,
            "act_on_alarms",
            body=ReasonBody,
            response=ResolvedAlarm,
            path=AlarmPath,
            statuses=(404, 409),
        )
    },
    "/api/v1/metrics/burden": {
        "get": operation(
            "Alarm burden: pages/patient-day, acknowledged fraction, time to acknowledge, by rule",
            get_burden,
            "read_metrics",
            response=Burden,
            query=BurdenQuery,
        )
    },
}
ALARM_SCHEMAS: Final = components_of(ALARM_PATHS)
