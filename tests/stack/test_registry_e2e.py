"""Issue 12, end to end through the API alone: admit, assign a kit, swap a device, discharge.

`wardwatch up` runs the demo ward (real broker, InfluxDB, alerting, ingest, the BLE simulator and one
gateway per home). Everything below goes through the alerting HTTP API as a charge nurse would: p-d00 is
discharged to free her simulated devices, a new patient is admitted (the registry issues the id), given
a threshold that her normal readings cross (so alerting shows it has her samples by raising an alarm) and
the oximeter; then the oximeter is swapped for the strap; then she is discharged. The times from
admission to the first stored point and to the first alarm are measured and printed as JSON
(``pytest -s``); they are figures, not assertions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.core.servers import Influxd, wait_for
from wardwatch.stack.up import API_USER, StackOptions, running_stack

pytestmark = pytest.mark.slow

FREED = "p-d00"  # the demo patient discharged first: her strap and oximeter become the spare kit
GATEWAY = "gw-home-00"
REASON = "issue 12 end-to-end test"
# hr_low above her resting rate (68/min) with no delay: her first samples raise hr_low (medium), so an
# alarm shows that alerting has them; the oximeter's pulse rate and the strap's HR both cross it
OVERRIDES = {"hr_low": 100, "hr_low_delay_s": 0}

Call = Callable[..., Awaitable[tuple[int, Any]]]


def _pages_of(path: Path, patient: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["page"].get("patient") == patient]


async def _points(influxd: Influxd, patient: str, where: str = "") -> list[tuple[int, str]]:
    """(time ns, device) of every vitals point stored for ``patient`` (``where``: more InfluxQL conditions)."""
    found = await influxd.query(
        f"SELECT value, device FROM vitals WHERE patient = '{patient}' {where}",  # noqa: S608 - test code, trusted ids
        db="wardwatch",
    )
    series = found["results"][0].get("series", [])
    return [(row[0], row[2]) for s in series for row in s["values"]]


async def _has_points(influxd: Influxd, patient: str, where: str = "") -> bool:
    return bool(await _points(influxd, patient, where + " LIMIT 1"))


async def _must(call: Call, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
    status, answer = await call(method, path, body)
    assert status == expect, (method, path, status, answer)
    return answer


async def test_admit_assign_swap_discharge_through_the_api(tmp_path: Path) -> None:
    options = StackOptions(state=tmp_path / "state", scenario="demo", speed=1.0, quiet=True, escalation_scale=0.05)
    async with running_stack(options, echo=lambda line: None) as stack, aiohttp.ClientSession() as http:
        assert stack.influxd is not None
        influxd = stack.influxd
        api, pages = stack.summary["api"], Path(stack.summary["pages"])
        password = (stack.state / "api-password").read_text().strip()
        async with http.post(f"{api}/api/v1/login", json={"name": API_USER, "password": password}) as response:
            assert response.status == 200, await response.text()
            headers = {"Authorization": f"Bearer {(await response.json())['token']}"}

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, api + path, json=body, headers=headers) as response:
                return response.status, await response.json()

        # the demo's p-d00 streams; discharge her to free her strap and oximeter
        await wait_for(lambda: _has_points(influxd, FREED), 90, what=f"{FREED}'s vitals stored")
        freed = await _must(call, "GET", f"/api/v1/registry/patients/{FREED}")
        spare = {b["role"]: {"id": b["device"], "role": b["role"], "name": b["name"]} for b in freed["bindings"]}
        assert set(spare) == {"heart_rate_strap", "pulse_oximeter"}, freed
        await _must(call, "POST", f"/api/v1/registry/patients/{FREED}/discharge", {"reason": REASON})

        # a name, an NHS number or an MRN is never a patient id (topics and InfluxDB tags carry the id)
        for name in ("john.smith", "9434765919", "mrn-00123456"):
            status, answer = await call("POST", "/api/v1/registry/patients", {"reason": REASON, "patient": name})
            assert status == 400, (name, status, answer)

        # admit: the registry issues the pseudonym; a threshold her readings cross; the oximeter
        admitted_at = time.time()
        patient = (await _must(call, "POST", "/api/v1/registry/patients", {"reason": REASON}, expect=201))["patient"]
        assert patient.startswith("p-")
        assert patient != FREED
        await _must(call, "PUT", f"/api/v1/patients/{patient}/thresholds", {"overrides": OVERRIDES, "reason": REASON})
        kit = {"gateway": GATEWAY, "devices": [spare["pulse_oximeter"]], "reason": REASON}
        await _must(call, "POST", f"/api/v1/registry/patients/{patient}/kit", kit)
        kit_at = time.time()

        async def first_point() -> bool:
            return bool(await _has_points(influxd, patient))

        async def alarm_raised() -> bool:
            return bool((await _must(call, "GET", f"/api/v1/alarms?patient={patient}"))["alarms"])

        seen: dict[str, float] = {}  # what -> seconds after admission

        async def stored_and_alarmed() -> bool:
            if "stored" not in seen and await _has_points(influxd, patient):
                seen["stored"] = time.time() - admitted_at
            if "alarm" not in seen and (await _must(call, "GET", f"/api/v1/alarms?patient={patient}"))["alarms"]:
                seen["alarm"] = time.time() - admitted_at
            return len(seen) == 2

        await wait_for(stored_and_alarmed, 60, what=f"{patient}'s vitals stored and alarmed on", max_interval=0.2)
        await wait_for(lambda: bool(_pages_of(pages, patient)), 30, what=f"a page for {patient}", max_interval=0.5)
        assert {d for _, d in await _points(influxd, patient)} == {spare["pulse_oximeter"]["id"]}

        # swap the oximeter for the strap: from the swap on, only the strap's samples are hers
        swap = {"old_device": spare["pulse_oximeter"]["id"], "new": spare["heart_rate_strap"], "reason": REASON}
        await _must(call, "POST", f"/api/v1/registry/patients/{patient}/swap", swap)
        swapped_ns = time.time_ns()
        strap = spare["heart_rate_strap"]["id"]
        await wait_for(
            lambda: _has_points(influxd, patient, f"AND device = '{strap}'"), 60, what="the strap's samples stored"
        )
        oximeter = spare["pulse_oximeter"]["id"]
        assert not await _points(influxd, patient, f"AND device = '{oximeter}' AND time >= {swapped_ns}")

        # discharge: her alarm resolves, she pages no more, nothing more is stored for her
        await _must(call, "POST", f"/api/v1/registry/patients/{patient}/discharge", {"reason": REASON})
        discharged_ns = time.time_ns()
        paged_before = len(_pages_of(pages, patient))
        open_alarms = (await _must(call, "GET", f"/api/v1/alarms?patient={patient}"))["alarms"]
        assert not open_alarms, open_alarms
        # wait until ingest has stored another patient's samples taken 15 s after the discharge (more than
        # the escalation step of her medium alarm, 9 s here): by then anything of hers would be there too
        later_ns = discharged_ns + 15_000_000_000
        await wait_for(lambda: _has_points(influxd, "p-d02", f"AND time >= {later_ns}"), 60, what="p-d02 stored after")
        assert not await _points(influxd, patient, f"AND time >= {discharged_ns}")
        assert len(_pages_of(pages, patient)) == paged_before
        resolved = (await _must(call, "GET", f"/api/v1/alarms?patient={patient}&state=resolved"))["alarms"]
        assert resolved, "her alarm was resolved at discharge"
        assert all(a["state"] == "resolved" for a in resolved), resolved

        # every step in the audit log
        audit = (await _must(call, "GET", f"/api/v1/audit?patient={patient}&limit=1000"))["entries"]
        actions = [e["action"] for e in audit]
        for action in ("patient_admitted", "thresholds_set", "kit_assigned", "device_swapped", "patient_discharged"):
            assert action in actions, (action, actions)
        assert "resolve" in actions, actions
        assert all(e["actor"] == API_USER for e in audit if e["action"] in ("kit_assigned", "device_swapped")), audit
        freed_audit = (await _must(call, "GET", f"/api/v1/audit?patient={FREED}&limit=1000"))["entries"]
        assert "patient_discharged" in [e["action"] for e in freed_audit]

    figures = {
        "admission_to_first_stored_point_s": round(seen["stored"], 2),
        "admission_to_first_alarm_s": round(seen["alarm"], 2),
        "kit_assigned_after_admission_s": round(kit_at - admitted_at, 2),
    }
    print("registry e2e:", json.dumps(figures))
