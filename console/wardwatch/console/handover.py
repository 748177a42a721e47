"""The console's routes for review notes, device history and the ward handover: relays to the alerting API.

Added to the application by :func:`add_handover_routes`. Writing a note is a POST: the security
middleware has already checked the session, its CSRF token, JSON and the origin; the alerting API
checks the role (``write_notes``), the text and audits the note.
"""

from __future__ import annotations

from aiohttp import web

from wardwatch.console.app import CONFIG_KEY, id_param, relay


async def notes(request: web.Request) -> web.Response:
    """A patient's review notes (the read is audited by the API)."""
    patient = id_param(request, "patient")
    params = {"limit": request.query["limit"]} if "limit" in request.query else None
    return await relay(request, "GET", f"/api/v1/patients/{patient}/notes", params=params)


async def write_note(request: web.Request) -> web.Response:
    """Write a review note ``{"text": ...}`` as the logged-in clinician."""
    patient = id_param(request, "patient")
    return await relay(request, "POST", f"/api/v1/patients/{patient}/notes", body=await request.read())


async def devices(request: web.Request) -> web.Response:
    """A patient's device history: kit bindings and connection/battery transitions."""
    return await relay(request, "GET", f"/api/v1/patients/{id_param(request, 'patient')}/devices")


async def handover(request: web.Request) -> web.Response:
    """The console's ward handover for the last ``hours`` (1-48, default 12)."""
    ward = request.app[CONFIG_KEY].ward
    params = {"hours": request.query["hours"]} if "hours" in request.query else None
    return await relay(request, "GET", f"/api/v1/wards/{ward}/handover", params=params)


def add_handover_routes(router: web.UrlDispatcher) -> None:
    """Add the notes, device history and handover routes."""
    router.add_get("/api/patients/{patient}/notes", notes)
    router.add_post("/api/patients/{patient}/notes", write_note)
    router.add_get("/api/patients/{patient}/devices", devices)
    router.add_get("/api/handover", handover)
