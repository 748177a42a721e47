"""The console's server push: the ward board snapshot and its server-sent-events stream.

A stalled client (one that never reads) is cut off and counted while alarms keep paging; a fault
in the live board never reaches the alarm path.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.alerting.serving import PASSWORD, api_config, log_in, serving_api, webhook_ward

from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.live import LiveBoard
from wardwatch.alerting.registry.live_roster import connect_live_roster
from wardwatch.alerting.registry.registry import DeviceSpec
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.schema import (
    AlarmCategory,
    DeviceRole,
    DeviceStatus,
    Priority,
    Sample,
    Signal,
    Vitals,
)
from wardwatch.core.waiting import wait_for

T0 = 1_700_000_000_000


class Live:
    def __init__(self, base: str, http: aiohttp.ClientSession, service: AlarmService, receiver: WebhookReceiver):
        self.base = base
        self.http = http
        self.service = service
        self.receiver = receiver
        self.token = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def live(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[Live]:
    config = api_config(tmp_path, webhook_ward(receiver, timeout_s=600))
    async with serving_api(config, {"ann": Role.NURSE}) as (service, port), aiohttp.ClientSession() as http:
        result = Live(f"http://127.0.0.1:{port}", http, service, receiver)
        result.token = (await log_in(http, result.base, ["ann"]))["ann"]
        yield result


def vitals(patient: str, signal: Signal, value: float, t: int, seq: int = 1) -> Vitals:
    return Vitals(
        patient=patient,
        device=f"{patient}-ox",
        gateway="gw-1",
        signal=signal,
        seq=seq,
        samples=(Sample(t=t, v=value),),
    )


def change(patient: str, active: bool = True) -> ConditionChange:
    return ConditionChange(
        patient=patient,
        ward="ward-a",
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=Priority.HIGH,
        active=active,
        t=T0,
        value=84.0,
        text="SpO2 84 % below 90 %",
    )


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Parse a text/event-stream into (event, data) pairs."""
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def next_event(stream: AsyncIterator[tuple[str, Any]], wanted: str) -> Any:
    async with asyncio.timeout(10):
        async for name, data in stream:
            if name == wanted:
                return data
    raise AssertionError(f"the stream ended before a {wanted!r} event")


async def test_snapshot_shows_latest_values_devices_gateways_and_open_alarms(live: Live) -> None:
    board = live.service.live
    board.on_vitals("ward-a", vitals("p-1", Signal.SPO2, 97, T0))
    board.on_vitals("ward-a", vitals("p-1", Signal.SPO2, 88, T0 + 1000, seq=2))
    board.on_vitals("ward-a", vitals("p-1", Signal.SPO2, 99, T0 - 1000, seq=3))  # late: older than shown
    board.on_device_status(
        "ward-a",
        DeviceStatus(
            patient="p-1",
            device="p-1-ox",
            gateway="gw-1",
            t=T0,
            role=DeviceRole.PULSE_OXIMETER,
            connected=True,
            battery=41,
        ),
    )
    board.on_gateway_availability("ward-a", "gw-1", False, T0)
    live.service.on_conditions([change("p-1")])
    async with live.http.get(live.base + "/api/v1/wards/ward-a/live", headers=live.headers) as response:
        assert response.status == 200
        snapshot = await response.json()
    (patient,) = snapshot["patients"]
    assert patient["vitals"]["spo2"]["value"] == 88
    assert patient["vitals"]["spo2"]["t"] == T0 + 1000
    assert patient["devices"]["p-1-ox"]["battery"] == 41
    assert snapshot["gateways"] == [{"gateway": "gw-1", "online": False, "t": T0}]
    (alarm,) = snapshot["alarms"]
    assert (alarm["patient"], alarm["priority"], alarm["state"]) == ("p-1", "high", "active")
    async with live.http.get(live.base + "/api/v1/wards/ward-b/live", headers=live.headers) as response:
        assert response.status == 404
    async with live.http.get(live.base + "/api/v1/wards/ward-a/stream") as response:
        assert response.status == 401


async def test_stream_sends_snapshot_then_values_and_alarm_changes(live: Live) -> None:
    live.service.live.flush_s = 0.01
    async with live.http.get(live.base + "/api/v1/wards/ward-a/stream", headers=live.headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        stream = events(response)
        snapshot = await next_event(stream, "snapshot")
        assert snapshot["patients"] == []
        assert snapshot["alarms"] == []
        live.service.live.on_vitals("ward-a", vitals("p-2", Signal.HEART_RATE, 131, T0))
        values = await next_event(stream, "values")
        assert values["patients"][0]["vitals"]["heart_rate"]["value"] == 131
        live.service.on_conditions([change("p-2")])
        alarm = await next_event(stream, "alarm")
        assert (alarm["patient"], alarm["state"]) == ("p-2", "active")
        live.service.acknowledge(alarm["alarm_id"], "ann", "at the bedside")
        acknowledged = await next_event(stream, "alarm")
        assert (acknowledged["state"], acknowledged["actor"]) == ("acknowledged", "ann")


async def test_a_stalled_client_is_cut_off_while_pages_keep_flowing(live: Live) -> None:
    service = live.service
    service.live.buffer = 8
    service.live.flush_s = 0.005
    host, port = live.base.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a browser that has stopped reading
    stalled.setblocking(False)
    await loop.sock_connect(stalled, (host, int(port)))
    request = f"GET /api/v1/wards/ward-a/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {live.token}\r\n\r\n"
    await loop.sock_sendall(stalled, request.encode())

    def dropped() -> float:
        value = service.metrics.registry.get_sample_value(
            "wardwatch_alerting_live_dropped_total", {"why": "buffer_full"}
        )
        return value or 0.0

    try:
        async with live.http.get(live.base + "/api/v1/wards/ward-a/stream", headers=live.headers) as healthy:
            stream = events(healthy)
            await next_event(stream, "snapshot")
            await wait_for(lambda: service.live.watchers() == 2, 5, what="both streams open")
            raised = 0
            seq = 0
            while dropped() == 0:  # readings for a full ward keep arriving, alarms keep paging
                seq += 1
                for i in range(300):
                    service.live.on_vitals("ward-a", vitals(f"p-{i}", Signal.SPO2, 90 + seq % 5, T0 + seq, seq))
                service.on_conditions([change(f"alarm-{raised}")])
                raised += 1
                await asyncio.sleep(0.005)  # let the loop run: the flush timer, the pager, both streams
                assert raised < 2000, "the stalled client was never cut off"
            await wait_for(
                lambda: len(live.receiver.unique("/nurse")) == raised, 10, what="every alarm paged the nurse"
            )
            await wait_for(lambda: service.live.watchers() == 1, 5, what="the stalled stream closed")
            service.on_conditions([change("after-the-stall")])
            while (alarm := await next_event(stream, "alarm"))["patient"] != "after-the-stall":
                pass  # the reading client still gets every alarm change
            assert alarm["state"] == "active"
    finally:
        stalled.close()


async def test_a_fault_in_the_live_board_never_reaches_the_alarm_path(live: Live) -> None:
    def broken(records: Any) -> None:
        raise RuntimeError("bug in the board")

    live.service.live.on_alarms = broken  # type: ignore[method-assign]
    live.service.on_conditions([change("p-9")])
    await wait_for(lambda: len(live.receiver.unique("/nurse")) == 1, 10, what="the page despite the board's bug")
    assert live.service.metrics.registry.get_sample_value("wardwatch_alerting_live_failures_total") == 1
    assert live.service.health() == []


async def test_admissions_and_discharges_reach_the_board_and_its_stream_live(live: Live) -> None:
    """An admitted patient is on the board at once; a discharged one leaves it (and never comes back)."""
    Authenticator(live.service.store, argon2_time_cost=1, argon2_memory_kib=1024).add_user(
        "cat", Role.CHARGE_NURSE, PASSWORD, 0
    )
    async with live.http.post(live.base + "/api/v1/login", json={"name": "cat", "password": PASSWORD}) as response:
        charge = {"Authorization": f"Bearer {(await response.json())['token']}"}
    registry = live.base + "/api/v1/registry"

    async def board_patients() -> list[str]:
        async with live.http.get(live.base + "/api/v1/wards/ward-a/live", headers=live.headers) as response:
            return [p["patient"] for p in (await response.json())["patients"]]

    async with live.http.get(live.base + "/api/v1/wards/ward-a/stream", headers=live.headers) as response:
        stream = events(response)
        assert (await next_event(stream, "snapshot"))["patients"] == []
        body = {"gateway": "gw-1", "capacity": 7, "reason": "new home kit"}
        async with live.http.post(registry + "/gateways", json=body, headers=charge) as answer:
            assert answer.status == 200, await answer.text()
        async with live.http.post(registry + "/patients", json={"reason": "referral"}, headers=charge) as answer:
            assert answer.status == 201, await answer.text()
            patient = (await answer.json())["patient"]
        admitted = await next_event(stream, "admitted")
        assert admitted["patient"] == {"patient": patient, "gateway": None, "vitals": {}, "devices": {}}
        assert await board_patients() == [patient]  # a tile before the first reading
        kit = {"gateway": "gw-1", "devices": [{"id": "plx-9", "role": "pulse_oximeter"}], "reason": "kit delivered"}
        async with live.http.post(f"{registry}/patients/{patient}/kit", json=kit, headers=charge) as answer:
            assert answer.status == 200, await answer.text()
        values = await next_event(stream, "values")
        assert [(p["patient"], p["gateway"]) for p in values["patients"]] == [(patient, "gw-1")]  # its gateway shown

        live.service.on_conditions([change(patient)])
        assert (await next_event(stream, "alarm"))["state"] == "active"
        async with live.http.post(
            f"{registry}/patients/{patient}/discharge", json={"reason": "recovered"}, headers=charge
        ) as answer:
            assert answer.status == 200, await answer.text()
        assert (await next_event(stream, "alarm"))["state"] == "resolved"
        discharged = await next_event(stream, "discharged")
        assert (discharged["patient"], discharged["ward"]) == (patient, "ward-a")
        assert await board_patients() == []
        # a late sample of theirs (taken before the discharge, so still accepted) does not bring the tile back
        live.service.live.on_vitals("ward-a", vitals(patient, Signal.SPO2, 95, T0))
        assert await board_patients() == []
        async with live.http.get(live.base + "/api/v1/wards/ward-a/live", headers=live.headers) as answer:
            assert (await answer.json())["alarms"] == []


async def test_a_restarted_board_shows_the_registrys_admitted_patients_and_never_its_discharged_ones(
    live: Live,
) -> None:
    registry = live.service.registry
    staying = await registry.admit("ward-a", "cat", "referral")
    leaving = await registry.admit("ward-a", "cat", "referral")
    await registry.discharge(leaving.patient, "cat", "recovered")
    restarted = LiveBoard(["ward-a"], live.service.manager.open_alarms)
    connect_live_roster(registry, restarted)
    restarted.on_vitals("ward-a", vitals(leaving.patient, Signal.SPO2, 95, T0))
    assert [p["patient"] for p in restarted.snapshot("ward-a")["patients"]] == [staying.patient]


async def test_a_fault_in_the_board_never_fails_an_admission_a_kit_or_a_discharge(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("bug in the board")

    for update in ("on_admitted", "on_kit", "on_discharged"):
        monkeypatch.setattr(live.service.live, update, broken)
    registry = live.service.registry
    await registry.register_gateway("ward-a", "gw-1", "", 7, "cat", "new home kit")
    row = await registry.admit("ward-a", "cat", "referral")
    await registry.assign_kit(
        row.patient, "gw-1", [DeviceSpec(id="plx-9", role=DeviceRole.PULSE_OXIMETER)], "cat", "kit"
    )
    assert (await registry.discharge(row.patient, "cat", "recovered")).status == "discharged"
    assert live.service.metrics.registry.get_sample_value("wardwatch_alerting_live_failures_total") == 3
