"""The handover's HTTP API: review notes, device history and the ward handover.

:data:`HANDOVER_PATHS` and :data:`HANDOVER_SCHEMAS` are merged into :data:`wardwatch.alerting.api.OPENAPI`
like the registry's. Writing a note needs ``write_notes`` (clinical roles: nurse, charge nurse,
doctor); reading notes, device history and the handover needs ``read_alarms``. Every note written is
audited (``note_written``, the text as its reason); reading a patient's notes (``notes_read``) and a
handover (``handover_read``), which hold clinical text, are audited too.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Permission
from wardwatch.alerting.handover.notes import MAX_NOTE_LENGTH, NoteError, ReviewNote
from wardwatch.alerting.handover.report import handover
from wardwatch.alerting.http import (
    SERVICE_KEY,
    TEXT_PATTERN,
    error,
    json_response,
    now_ms,
    path_id,
    principal_of,
    read_body,
    readable_text,
    refusals,
    requires,
)
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.registry.routes import Binding
from wardwatch.alerting.routes.query import PatientPath, WardPath, read_query
from wardwatch.alerting.service import AlarmService
from wardwatch.core.schema import AlarmCategory, AlarmState, Priority

NoteText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NOTE_LENGTH, pattern=TEXT_PATTERN)]
MAX_HOURS: Final = 48


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    """A clinical review note (readable text: no control or bidirectional characters)."""

    text: NoteText


class NotesQuery(msgspec.Struct):
    """How many notes to list, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class DevicesQuery(msgspec.Struct):
    """How many device and gateway events to list, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 200


class HandoverQuery(msgspec.Struct):
    """The window: the last ``hours``."""

    hours: Annotated[int, msgspec.Meta(ge=1, le=MAX_HOURS)] = 12


class NoteList(msgspec.Struct):
    """The patient's review notes, newest first."""

    patient: str
    notes: list[ReviewNote]


class DeviceBinding(Binding):
    """A kit binding over time; ``replaced_by``: the device swapped in when it ended (``null``: none)."""

    replaced_by: str | None


class DeviceEvent(msgspec.Struct):
    """A device's connection or battery transition (the battery level then)."""

    t: int
    device: str
    gateway: str
    event: Literal["connected", "disconnected", "battery"]
    battery: int | None
    reason: str | None


class GatewayEvent(msgspec.Struct):
    """The patient's gateway came online or went offline."""

    t: int
    gateway: str
    online: bool


class PatientDevices(msgspec.Struct):
    """The patient's kit bindings (oldest first) and device and gateway events (newest first)."""

    patient: str
    bindings: list[DeviceBinding]
    events: list[DeviceEvent]
    gateway_events: list[GatewayEvent]


class ClinicianAction(msgspec.Struct):
    """An acknowledgement, silence or resolve (``resolved``: an acknowledgement that ended a latched alarm)."""

    action: Literal["acknowledge", "silence", "resolve"]
    actor: str
    t: int
    note: str | None
    resolved: bool = False


class HandoverAlarm(msgspec.Struct):
    """An alarm open in or since the window and how it ended (``outcome``: resolved, cleared, re-alarmed, or
    open (state)); ``realarm_at``: resolved while present, re-alarms then unless it clears; ``reraised_as``
    and ``realarmed_at``: the alarm it re-alarmed as, and when."""

    alarm_id: str
    patient: str
    rule: str
    category: AlarmCategory
    priority: Priority
    state: AlarmState
    text: str
    started: int
    resolved_at: int | None
    outcome: str
    acknowledged_by: str | None
    acknowledged_at: int | None
    resolved_by: str | None
    resolution_note: str | None
    silenced_by: str | None
    realarm_at: int | None
    reraised_as: str | None
    realarmed_at: int | None
    actions: list[ClinicianAction]


class ScoreAt(msgspec.Struct):
    """A NEWS2 total at ``t``, full or partial."""

    t: int
    score: int
    full: bool


class News2Rise(msgspec.Struct):
    """A patient whose NEWS2 rose in the window: first and last score, the highest."""

    patient: str
    first: ScoreAt
    last: ScoreAt
    highest: int


class NeedsAttention(msgspec.Struct):
    """An admitted patient stale, with devices disconnected, or behind an offline gateway now."""

    patient: str
    stale: bool
    newest_reading: int | None
    disconnected: list[str]
    gateway: str | None
    gateway_offline: bool


class Truncated(msgspec.Struct):
    """Which lists hit their limit."""

    alarms: bool
    notes: bool


class Handover(msgspec.Struct):
    """The ward's handover for ``[since, until]``: alarms, NEWS2 rises, patients needing attention, notes."""

    ward: str
    hours: int
    since: int
    until: int
    alarms: list[HandoverAlarm]
    news2_rose: list[News2Rise]
    attention: list[NeedsAttention]
    notes: list[ReviewNote]
    truncated: Truncated


def _patient_of_ward(request: web.Request) -> tuple[AlarmService, str, str]:
    """The service, the path's patient and their ward (404 for a patient not on this service's wards)."""
    patient = path_id(request, "patient")
    service = request.app[SERVICE_KEY]
    return service, patient, service.handover.notes.ward_of(patient, writing=False)


@requires(Permission.WRITE_NOTES)
@refusals(NoteError)
async def write_note(request: web.Request) -> web.Response:
    """Store a review note by the caller (author, role, time) and audit it."""
    patient = path_id(request, "patient")
    body = await read_body(request, NoteBody)
    text = readable_text(body.text, "text")
    principal = principal_of(request)
    note = request.app[SERVICE_KEY].handover.notes.write(patient, text, principal.actor, str(principal.role))
    return json_response(note.as_json(), status=201)


@requires(Permission.READ_ALARMS)
@refusals(NoteError)
async def list_notes(request: web.Request) -> web.Response:
    """The patient's review notes, newest first; the read is audited."""
    limit = read_query(request, NotesQuery).limit
    service, patient, ward = _patient_of_ward(request)
    notes = service.handover.notes.of_patient(patient, limit)
    service.store.audit(
        AuditEntry(t=now_ms(), actor=principal_of(request).actor, action="notes_read", patient=patient, ward=ward)
    )
    return json_response({"patient": patient, "notes": [n.as_json() for n in notes]})


@requires(Permission.READ_ALARMS)
@refusals(NoteError)
async def device_history(request: web.Request) -> web.Response:
    """The patient's kit bindings over time and the devices' connection and battery transitions."""
    limit = read_query(request, DevicesQuery).limit
    service, patient, _ = _patient_of_ward(request)
    return json_response(service.handover.devices.history(patient, limit))


@requires(Permission.READ_ALARMS)
async def ward_handover(request: web.Request) -> web.Response:
    """The ward's handover for the last ``hours``; the read is audited."""
    ward = path_id(request, "ward")
    service = request.app[SERVICE_KEY]
    if ward not in service.config.wards:
        return error(404, f"no ward {ward} in this service (wards: {', '.join(service.config.wards)})")
    hours = read_query(request, HandoverQuery).hours
    report = handover(service, ward, hours)
    service.store.audit(
        AuditEntry(
            t=now_ms(), actor=principal_of(request).actor, action="handover_read", ward=ward, details={"hours": hours}
        )
    )
    return json_response(report)


_PATH: Final = "/api/v1/patients/{patient}"
HANDOVER_PATHS: Final[PathTable] = {
    _PATH + "/notes": {
        "get": operation(
            "A patient's review notes, newest first (the read is audited)",
            list_notes,
            Permission.READ_ALARMS,
            response=NoteList,
            path=PatientPath,
            query=NotesQuery,
            statuses=(404,),
        ),
        "post": operation(
            "Write a review note (clinical roles; append-only; audited)",
            write_note,
            Permission.WRITE_NOTES,
            body=NoteBody,
            response=ReviewNote,
            status=201,
            path=PatientPath,
            statuses=(404, 409),
        ),
    },
    _PATH + "/devices": {
        "get": operation(
            "A patient's device history: kit bindings (since/until, swaps), connection and battery transitions",
            device_history,
            Permission.READ_ALARMS,
            response=PatientDevices,
            path=PatientPath,
            query=DevicesQuery,
            statuses=(404,),
        )
    },
    "/api/v1/wards/{ward}/handover": {
        "get": operation(
            "The ward's handover: alarms and how they ended, NEWS2 rises, stale or disconnected patients, notes",
            ward_handover,
            Permission.READ_ALARMS,
            response=Handover,
            path=WardPath,
            query=HandoverQuery,
            statuses=(404,),
        )
    },
}
HANDOVER_SCHEMAS: Final = components_of(HANDOVER_PATHS)
