"""``wardwatch up`` admits its scenario's patients through the registry API, as a ward's staff would.

For each home gateway: ``POST /api/v1/registry/gateways`` (capacity = its connection slots); for each
patient: ``POST /api/v1/registry/patients`` asking for the scenario's id (so the ground truth still names
them), then ``POST .../kit`` with the patient's devices. Run again on the same state directory, it
leaves what is already admitted and bound as it is. The alerting service publishes each gateway's kit
(retained) and refuses vitals of anything not bound this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from wardwatch.core.waiting import wait_for
from wardwatch.stack.errors import StackError

REASON: Final = "wardwatch up: demo scenario"


class EnrolError(StackError):
    """The registry refused part of the scenario."""


async def _ready(http: aiohttp.ClientSession, base: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with http.get(base + "/healthz") as response:
            return bool((await response.json()).get("inputs_ready"))
    return False


async def enrol(
    base: str,
    user: str,
    password: str,
    ward: str,
    patients: Sequence[dict[str, Any]],
    slots: int,
    *,
    over_capacity: bool = False,
    timeout: float = 60.0,
) -> tuple[int, int]:
    """Register the patients' gateways, admit them, bind their devices; returns (patients, devices) newly done.

    ``over_capacity``: register each gateway with room for all its devices even beyond ``slots`` (the
    registry would refuse the kit; the gateway itself then reports the devices it cannot connect).
    """
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _ready(http, base), timeout, what="the alerting API", interval=0.1)
        async with http.post(base + "/api/v1/login", json={"name": user, "password": password}) as response:
            if response.status != 200:
                raise EnrolError(f"cannot log in to the alerting API as {user}: {await response.text()}")
            token = (await response.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, base + path, json=body, headers=headers) as response:
                return response.status, await response.json()

        async def must(method: str, path: str, body: Any) -> Any:
            status, answer = await call(method, path, body)
            if status not in (200, 201):
                raise EnrolError(f"registry refused {method} {path}: {answer.get('error', answer)}")
            return answer

        for gateway in sorted({patient["gateway"] for patient in patients}):
            worn = sum(len(patient["devices"]) for patient in patients if patient["gateway"] == gateway)
            capacity = max(slots, worn) if over_capacity else slots
            body = {
                "ward": ward,
                "gateway": gateway,
                "capacity": capacity,
                "home": f"home of {gateway}",
                "reason": REASON,
            }
            await must("POST", "/api/v1/registry/gateways", body)
        admitted = bound = 0
        for patient in patients:
            status, held = await call("GET", f"/api/v1/registry/patients/{patient['id']}")
            if status == 404:
                body = {"ward": ward, "patient": patient["id"], "reason": REASON}
                held = {**await must("POST", "/api/v1/registry/patients", body), "bindings": []}
                admitted += 1
            elif status != 200 or held["status"] != "admitted":
                raise EnrolError(
                    f"patient {patient['id']} cannot be admitted again ({held}); start with a fresh --state directory"
                )
            current = {binding["device"] for binding in held["bindings"] if binding["until"] is None}
            devices = [
                {"id": device["id"], "role": device["kind"], "name": device["name"]}
                for device in patient["devices"]
                if device["id"] not in current
            ]
            if devices:
                body = {"gateway": patient["gateway"], "devices": devices, "reason": REASON}
                await must("POST", f"/api/v1/registry/patients/{patient['id']}/kit", body)
                bound += len(devices)
        return admitted, bound
