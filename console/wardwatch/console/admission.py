"""The console's relay to the registry API: admission, kits, device swaps, discharge and identity.

Every call goes to ``/api/v1/registry`` with the user's own API token, so the registry decides who may
do what (admission and kits: charge nurse, doctor, admin; identity: nurse, charge nurse, doctor) and
audits it; its 400 / 403 / 404 / 409 answers reach the page unchanged (``{"error": ...}``). The
patient's identity travels only in JSON bodies, never in a URL: it is sent with the admission (a POST)
and revealed with a POST (``/identity/reveal``), which needs the CSRF token like every other call with
a side effect (each read is audited by the registry) and is answered ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from wardwatch.console.app import CONFIG_KEY, _id, _pick, _relay

__all__ = ["add_admission_routes"]

_PATIENT: Final = "/api/registry/patients/{patient}"
_BODY_ERROR: Final = "send a JSON object"


def _ward(request: web.Request) -> str:
    return request.app[CONFIG_KEY].ward


async def _object(request: web.Request) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        body = None
    if not isinstance(body, dict):
        problem = msgspec.json.encode({"error": _BODY_ERROR}).decode()
        raise web.HTTPBadRequest(text=problem, content_type="application/json")
    return body


async def gateways(request: web.Request) -> web.Response:
    """The ward's gateways with their capacity and the continuous devices bound now."""
    return await _relay(request, "GET", "/api/v1/registry/gateways", params={"ward": _ward(request)})


async def patients(request: web.Request) -> web.Response:
    """The ward's patients (ids, status; never identity)."""
    params = {"ward": _ward(request), **_pick(request, "status")}
    return await _relay(request, "GET", "/api/v1/registry/patients", params=params)


async def admit(request: web.Request) -> web.Response:
    """Admit a patient to this console's ward (identity in the body, stored encrypted by the registry)."""
    body = await _object(request)
    body["ward"] = _ward(request)
    return await _relay(request, "POST", "/api/v1/registry/patients", body=msgspec.json.encode(body))


async def patient(request: web.Request) -> web.Response:
    """One patient with every binding."""
    return await _relay(request, "GET", f"/api/v1/registry/patients/{_id(request, 'patient')}")


async def reveal_identity(request: web.Request) -> web.Response:
    """The patient's identity, for clinical roles (the registry audits each read; others get its 403)."""
    return await _relay(request, "GET", f"/api/v1/registry/patients/{_id(request, 'patient')}/identity")


def _change(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def relay(request: web.Request) -> web.Response:
        body = msgspec.json.encode(await _object(request))
        path = f"/api/v1/registry/patients/{_id(request, 'patient')}/{action}"
        return await _relay(request, "POST", path, body=body)

    relay.__name__ = f"{action}_relay"
    relay.__doc__ = f"Relay ``{action}`` to the registry (its refusals unchanged)."
    return relay


def add_admission_routes(router: web.UrlDispatcher) -> None:
    """The registry routes of the console (all need a session; POSTs the CSRF token)."""
    router.add_get("/api/registry/gateways", gateways)
    router.add_get("/api/registry/patients", patients)
    router.add_post("/api/registry/patients", admit)
    router.add_get(_PATIENT, patient)
    router.add_post(_PATIENT + "/identity/reveal", reveal_identity)
    for action in ("kit", "swap", "discharge"):
        router.add_post(f"{_PATIENT}/{action}", _change(action))
