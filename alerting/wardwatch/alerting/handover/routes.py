"""The handover's HTTP API: review notes, device history and the ward handover.

:data:`HANDOVER_PATHS` and :data:`HANDOVER_SCHEMAS` are merged into :data:`wardwatch.alerting.api.OPENAPI`
like the registry's. Writing a note needs ``write_notes`` (clinical roles: nurse, charge nurse,
doctor); reading notes, device history and the handover needs ``read_alarms``. Every note written is
audited (``note_written``, the text as its reason); reading a patient's notes (``notes_read``) and a
handover (``handover_read``), which hold clinical text, are audited too.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from aiohttp import web

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Permission
from wardwatch.alerting.handover.notes import MAX_NOTE_LENGTH, NoteError
from wardwatch.alerting.handover.report import handover
from wardwatch.alerting.http import (
    SERVICE_KEY,
    TEXT_PATTERN,
    Handler,
    add_error_responses,
    bad_request,
    error,
    json_response,
    now_ms,
    openapi_operation,
    path_id,
    principal_of,
    read_body,
    readable_text,
    requires,
)
from wardwatch.core.ids import ID_PATTERN

NoteText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NOTE_LENGTH, pattern=TEXT_PATTERN)]
MAX_HOURS: Final = 48


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    """A clinical review note (readable text: no control or bidirectional characters)."""

    text: NoteText


_, HANDOVER_SCHEMAS = msgspec.json.schema_components((NoteBody,), ref_template="#/components/schemas/{name}")


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@requires(Permission.WRITE_NOTES)
async def write_note(request: web.Request) -> web.Response:
    """Store a review note by the caller (author, role, time) and audit it."""
    patient = path_id(request, "patient")
    body = await read_body(request, NoteBody)
    text = readable_text(body.text, "text")
    principal = principal_of(request)
    try:
        note = request.app[SERVICE_KEY].handover.notes.write(patient, text, principal.actor, str(principal.role))
    except NoteError as exc:
        return error(exc.status, exc.message)
    return json_response(note.as_json(), status=201)


@requires(Permission.READ_ALARMS)
async def list_notes(request: web.Request) -> web.Response:
    """The patient's review notes, newest first; the read is audited."""
    patient = path_id(request, "patient")
    limit = _int_query(request, "limit", 100, 1, 500)
    service = request.app[SERVICE_KEY]
    try:
        ward = service.handover.notes.ward_of(patient, writing=False)
    except NoteError as exc:
        return error(exc.status, exc.message)
    notes = service.handover.notes.of_patient(patient, limit)
    service.store.audit(
        AuditEntry(t=now_ms(), actor=principal_of(request).actor, action="notes_read", patient=patient, ward=ward)
    )
    return json_response({"patient": patient, "notes": [n.as_json() for n in notes]})


@requires(Permission.READ_ALARMS)
async def device_history(request: web.Request) -> web.Response:
    """The patient's kit bindings over time and the devices' connection and battery transitions."""
    patient = path_id(request, "patient")
    limit = _int_query(request, "limit", 200, 1, 1000)
    service = request.app[SERVICE_KEY]
    try:
        service.handover.notes.ward_of(patient, writing=False)
    except NoteError as exc:
        return error(exc.status, exc.message)
    return json_response(service.handover.devices.history(patient, limit))


@requires(Permission.READ_ALARMS)
async def ward_handover(request: web.Request) -> web.Response:
    """The ward's handover for the last ``hours``; the read is audited."""
    ward = path_id(request, "ward")
    service = request.app[SERVICE_KEY]
    if ward not in service.config.wards:
        return error(404, f"no ward {ward} in this service (wards: {', '.join(service.config.wards)})")
    hours = _int_query(request, "hours", 12, 1, MAX_HOURS)
    report = handover(service, ward, hours)
    service.store.audit(
        AuditEntry(
            t=now_ms(), actor=principal_of(request).actor, action="handover_read", ward=ward, details={"hours": hours}
        )
    )
    return json_response(report)


def _op(
    summary: str,
    handler: Handler,
    permission: Permission,
    body: str | None = None,
    *,
    path: str = "patient",
    query: dict[str, tuple[int, int]] | None = None,
    statuses: tuple[int, ...] = (),
) -> dict[str, Any]:
    op = openapi_operation(summary, handler, permission, body)
    op["parameters"] = [
        {"name": path, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
    ]
    for name, (low, high) in (query or {}).items():
        op["parameters"].append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": low, "maximum": high},
            }
        )
    if handler is write_note:
        op["responses"]["201"] = {"description": "stored and audited; the body is the stored note"}
    return add_error_responses(op, {400, 401, 403, *statuses})


_PATH: Final = "/api/v1/patients/{patient}"
HANDOVER_PATHS: Final[dict[str, dict[str, dict[str, Any]]]] = {
    _PATH + "/notes": {
        "get": _op(
            "A patient's review notes, newest first (the read is audited)",
            list_notes,
            Permission.READ_ALARMS,
            query={"limit": (1, 500)},
            statuses=(404,),
        ),
        "post": _op(
            "Write a review note (clinical roles; append-only; audited)",
            write_note,
            Permission.WRITE_NOTES,
            "NoteBody",
            statuses=(404, 409),
        ),
    },
    _PATH + "/devices": {
        "get": _op(
            "A patient's device history: kit bindings (since/until, swaps), connection and battery transitions",
            device_history,
            Permission.READ_ALARMS,
            query={"limit": (1, 1000)},
            statuses=(404,),
        )
    },
    "/api/v1/wards/{ward}/handover": {
        "get": _op(
            "The ward's handover: alarms and how they ended, NEWS2 rises, stale or disconnected patients, notes",
            ward_handover,
            Permission.READ_ALARMS,
            path="ward",
            query={"hours": (1, MAX_HOURS)},
            statuses=(404,),
        )
    },
}
