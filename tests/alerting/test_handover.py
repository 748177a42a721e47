"""Review notes, device history and the ward handover through the running service's API.

The service runs in-process (``run``) with a real mosquitto and the real engine; patients are admitted
and given kits through the registry API, devices report through MQTT as gateways do, a nurse's
observations raise a real NEWS2 alarm, which is acknowledged and resolved through the API.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.alerting.serving import WARD, Running, running, service_config, webhook_ward

from wardwatch.alerting.engine.news2 import News2Score, Param
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.handover.devices import MAX_EVENTS_PER_DEVICE
from wardwatch.alerting.handover.notes import MAX_NOTE_LENGTH
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import AlarmCategory, DeviceRole, DeviceStatus, Priority, encode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import availability_topic, device_status_topic
from wardwatch.core.waiting import wait_for

pytestmark = [pytest.mark.servers]

TIMEOUT = 15.0
GATEWAY = "gw-home-1"
CALM = {
    "respiration": 16,
    "spo2": 97,
    "supplemental_o2": False,
    "systolic": 120,
    "pulse": 80,
    "consciousness": "A",
    "temperature": 37.0,
}  # NEWS2 0
UNWELL = {**CALM, "respiration": 22, "spo2": 93, "systolic": 105, "pulse": 115, "temperature": 38.5}  # NEWS2 8


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def config_for(
    tmp_path: Path,
    receiver: WebhookReceiver,
    mosquitto: Mosquitto,
    reopen_window_s: float = 30.0,
    resolved_recheck_s: float | None = None,
) -> AlertingConfig:
    recheck: dict[str, Any] = {} if resolved_recheck_s is None else {"resolved_recheck_s": resolved_recheck_s}
    return service_config(tmp_path, mosquitto, webhook_ward(receiver, reopen_window_s=reopen_window_s, **recheck))


@pytest.fixture
async def gateway_mqtt(mosquitto: Mosquitto) -> AsyncIterator[MqttClient]:
    """A client publishing as a gateway would."""
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "test-gateway", clean_start=True) as client:
        await client.wait_connected(TIMEOUT)
        yield client


async def admit_with_kit(api: Running, devices: dict[str, str]) -> str:
    await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": GATEWAY, "capacity": 8, "reason": "new"})
    patient: str = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
    kit = {"gateway": GATEWAY, "devices": [{"id": d, "role": r} for d, r in devices.items()], "reason": "kit"}
    await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/kit", kit)
    return patient


async def report(client: MqttClient, patient: str, device: str, connected: bool, battery: int | None) -> None:
    status = DeviceStatus(
        patient=patient,
        device=device,
        gateway=GATEWAY,
        t=now_ms(),
        role=DeviceRole.PULSE_OXIMETER,
        connected=connected,
        battery=battery,
        reason=None if connected else "out_of_range",
    )
    await client.publish(device_status_topic(WARD, GATEWAY, patient, device), encode(status), qos=1)


async def test_review_notes_are_written_by_clinicians_read_by_all_and_audited(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient: str = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
        path = f"/api/v1/patients/{patient}/notes"
        first = await api.ok("nurse", "POST", path, {"text": "Video call: breathless on stairs.\nReview tomorrow."})
        assert (first["author"], first["role"], first["patient"]) == ("nurse", "nurse", patient)
        second = await api.ok("charge", "POST", path, {"text": "Spoke to GP; plan agreed"})
        assert second["t"] >= first["t"]
        notes = (await api.ok("viewer", "GET", path))["notes"]
        assert [n["text"] for n in notes] == [
            "Spoke to GP; plan agreed",
            "Video call: breathless on stairs.\nReview tomorrow.",
        ]
        # least privilege: a viewer reads but does not write; an admin does neither clinical thing
        assert (await api.call("viewer", "POST", path, {"text": "x"}))[0] == 403
        assert (await api.call("root", "POST", path, {"text": "x"}))[0] == 403
        # bounded, readable text; unknown fields refused
        for bad in (
            {"text": ""},
            {"text": "   "},
            {"text": "a\u202eb"},
            {"text": "x" * (MAX_NOTE_LENGTH + 1)},
            {"note": "x"},
        ):
            status, answer = await api.call("nurse", "POST", path, bad)
            assert status == 400, (bad, answer)
        assert len((await api.ok("viewer", "GET", path))["notes"]) == 2
        # a patient the registry never issued, and one discharged
        assert (await api.call("nurse", "POST", "/api/v1/patients/p-nobody/notes", {"text": "x"}))[0] == 404
        assert (await api.call("viewer", "GET", "/api/v1/patients/p-nobody/notes"))[0] == 404
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/discharge", {"reason": "recovered"})
        status, answer = await api.call("nurse", "POST", path, {"text": "late note"})
        assert (status, "discharged" in answer["error"]) == (409, True)
        assert len((await api.ok("viewer", "GET", path))["notes"]) == 2  # still readable after discharge
        # each write audited with the text; each read audited
        audit = (await api.ok("charge", "GET", f"/api/v1/audit?patient={patient}"))["entries"]
        written = [e for e in audit if e["action"] == "note_written"]
        assert [(e["actor"], e["reason"]) for e in written] == [
            ("nurse", "Video call: breathless on stairs.\nReview tomorrow."),
            ("charge", "Spoke to GP; plan agreed"),
        ]
        assert [e["details"]["note_id"] for e in written] == [first["id"], second["id"]]
        assert sum(e["action"] == "notes_read" for e in audit) == 3  # the 404 read is not a read
        # append-only in the store itself
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            api.service.store.connection.execute("UPDATE review_notes SET text = 'changed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            api.service.store.connection.execute("DELETE FROM review_notes")


async def test_device_history_shows_bindings_swaps_and_link_and_battery_transitions(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver, gateway_mqtt: MqttClient
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit_with_kit(api, {"hrs-1": "heart_rate_strap", "plx-1": "pulse_oximeter"})
        history = api.service.handover.devices
        # connected at 80 %, the same again (nothing new), 78 % (below the step), then out of range at 69 %
        for connected, battery in [(True, 80), (True, 80), (True, 78), (False, 69), (True, 69), (True, 19)]:
            await report(gateway_mqtt, patient, "plx-1", connected, battery)
        await wait_for(lambda: history.stored >= 4, TIMEOUT, what="four device transitions")
        swap = {"old_device": "plx-1", "new": {"id": "plx-2", "role": "pulse_oximeter"}, "reason": "cracked case"}
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/swap", swap)
        await gateway_mqtt.publish(availability_topic(WARD, GATEWAY), b"offline", qos=1)
        await wait_for(lambda: history.stored >= 5, TIMEOUT, what="the gateway going offline")
        found = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/devices")
        bound = {b["device"]: b for b in found["bindings"]}
        assert set(bound) == {"hrs-1", "plx-1", "plx-2"}
        assert bound["plx-1"]["until"] is not None
        assert bound["plx-1"]["replaced_by"] == "plx-2"
        assert bound["plx-2"]["since"] == bound["plx-1"]["until"]
        assert bound["plx-2"]["until"] is None
        assert bound["hrs-1"]["until"] is None
        assert bound["hrs-1"]["replaced_by"] is None
        events = [(e["event"], e["battery"]) for e in reversed(found["events"])]
        # unchanged and 78 % (less than a step) are not events; a link change carries the battery level
        assert events == [("connected", 80), ("disconnected", 69), ("connected", 69), ("battery", 19)]
        assert found["events"][2]["reason"] == "out_of_range"
        assert [(e["gateway"], e["online"]) for e in found["gateway_events"]] == [(GATEWAY, False)]
        assert (await api.call("viewer", "GET", "/api/v1/patients/p-nobody/devices"))[0] == 404
        assert (await api.call("viewer", "GET", f"/api/v1/patients/{patient}/devices?limit=0"))[0] == 400


async def test_a_flapping_device_keeps_a_bounded_history(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit_with_kit(api, {"plx-1": "pulse_oximeter"})
        history = api.service.handover.devices
        for i in range(MAX_EVENTS_PER_DEVICE + 100):
            status = DeviceStatus(
                patient=patient,
                device="plx-1",
                gateway=GATEWAY,
                t=now_ms(),
                role=DeviceRole.PULSE_OXIMETER,
                connected=i % 2 == 0,
            )
            history.on_device_status(WARD, status)
        assert history.stored == MAX_EVENTS_PER_DEVICE + 100
        found = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/devices?limit=1000")
        assert len(found["events"]) == MAX_EVENTS_PER_DEVICE
        assert found["events"][0]["event"] == "disconnected"  # the newest kept: the last flap
        # a store that fails here is counted and never reaches the caller (the MQTT input and the engine)
        api.service.store.connection.execute("DROP TABLE device_events")
        failures = api.service.metrics.failures.labels(stage="device_history")
        before = failures._value.get()
        history.on_device_status(WARD, msgspec.structs.replace(status, connected=not status.connected))
        assert failures._value.get() == before + 1


async def test_handover_shows_alarms_and_how_they_ended_news2_rises_stale_patients_and_notes(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver, gateway_mqtt: MqttClient
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        unwell = await admit_with_kit(api, {"plx-u": "pulse_oximeter"})
        quiet: str = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
        # NEWS2 0 logged, then observations scoring 8: a real emergency alarm through the engine
        await api.ok("nurse", "POST", f"/api/v1/patients/{unwell}/observations", {"taken_at": now_ms(), **CALM})
        assert api.service.handover.scores.sample(now_ms()) == 1
        await api.ok("nurse", "POST", f"/api/v1/patients/{unwell}/observations", {"taken_at": now_ms(), **UNWELL})
        alarms = (await api.ok("viewer", "GET", f"/api/v1/alarms?patient={unwell}"))["alarms"]
        (alarm,) = [a for a in alarms if a["rule"] == "news2_emergency"]
        action = f"/api/v1/alarms/{alarm['alarm_id']}"
        await api.ok("nurse", "POST", action + "/acknowledge", {"reason": "called the patient"})
        await api.ok("charge", "POST", action + "/resolve", {"reason": "ambulance called, admitted to hospital"})
        await api.ok(
            "nurse", "POST", f"/api/v1/patients/{quiet}/notes", {"text": "No answer on the phone; retry 14:00"}
        )
        await report(gateway_mqtt, unwell, "plx-u", False, 55)
        await wait_for(lambda: api.service.handover.devices.stored >= 1, TIMEOUT, what="the disconnection")
        await wait_for(
            lambda: api.service.live.snapshot(WARD)["patients"] != [], TIMEOUT, what="the device on the live board"
        )

        found = await api.ok("viewer", "GET", f"/api/v1/wards/{WARD}/handover")
        assert found["hours"] == 12
        assert found["until"] - found["since"] == 12 * 3_600_000
        (ended,) = [a for a in found["alarms"] if a["alarm_id"] == alarm["alarm_id"]]
        assert ended["outcome"] == "resolved"
        assert (ended["acknowledged_by"], ended["resolved_by"]) == ("nurse", "charge")
        assert ended["resolution_note"] == "ambulance called, admitted to hospital"
        assert [a["action"] for a in ended["actions"]] == ["acknowledge", "resolve"]
        (rose,) = found["news2_rose"]
        assert (rose["patient"], rose["first"]["score"], rose["last"]["score"]) == (unwell, 0, 8)
        attention = {a["patient"]: a for a in found["attention"]}
        assert attention[unwell]["disconnected"] == ["plx-u"]
        assert attention[unwell]["stale"]
        assert attention[quiet]["stale"]
        assert attention[quiet]["newest_reading"] is None
        assert [(n["patient"], n["author"], n["text"]) for n in found["notes"]] == [
            (quiet, "nurse", "No answer on the phone; retry 14:00")
        ]
        assert found["truncated"] == {"alarms": False, "notes": False}
        later = await api.ok("viewer", "GET", f"/api/v1/wards/{WARD}/handover?hours=1")
        assert later["until"] - later["since"] == 3_600_000
        # bounds and the read audited
        assert (await api.call("viewer", "GET", f"/api/v1/wards/{WARD}/handover?hours=49"))[0] == 400
        assert (await api.call("viewer", "GET", f"/api/v1/wards/{WARD}/handover?hours=x"))[0] == 400
        assert (await api.call("viewer", "GET", f"/api/v1/wards/{WARD}/handover?hours=\u00b2"))[0] == 400  # not 500
        assert (await api.call("viewer", "GET", "/api/v1/wards/ward-z/handover"))[0] == 404
        audit = (await api.ok("charge", "GET", "/api/v1/audit"))["entries"]
        assert [e["actor"] for e in audit if e["action"] == "handover_read"] == ["viewer", "viewer"]


async def test_device_state_is_read_back_after_a_restart_so_nothing_repeats(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver, gateway_mqtt: MqttClient
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        patient = await admit_with_kit(api, {"plx-1": "pulse_oximeter"})
        await report(gateway_mqtt, patient, "plx-1", True, 64)
        await wait_for(lambda: api.service.handover.devices.stored == 1, TIMEOUT, what="the connection")
    async with running(config, with_users=False) as api:
        history = api.service.handover.devices
        await report(gateway_mqtt, patient, "plx-1", True, 63)  # the same state after the restart
        await report(gateway_mqtt, patient, "plx-1", False, 63)
        await wait_for(lambda: history.stored == 1, TIMEOUT, what="the disconnection")
        found = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/devices")
        assert [(e["event"], e["battery"]) for e in found["events"]] == [("disconnected", 63), ("connected", 64)]


def condition(patient: str, priority: Priority, active: bool) -> ConditionChange:
    return ConditionChange(
        patient=patient,
        ward=WARD,
        rule="spo2_low" if priority is Priority.HIGH else "hr_high",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=priority,
        active=active,
        t=now_ms(),
        value=84.0,
        text="test condition",
    )


async def test_handover_tells_every_way_an_alarm_ended(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto, reopen_window_s=0.1)) as api:
        service = api.service
        latched, cleared, silenced = "p-latched", "p-cleared", "p-silenced"
        service.on_conditions(
            [
                condition(p, Priority.HIGH if p != cleared else Priority.MEDIUM, True)
                for p in (latched, cleared, silenced)
            ]
        )
        ids = {r.patient: r.alarm_id for r in service.manager.open_alarms()}
        # a high alarm stays (latched) when its condition clears: acknowledging it then ends it
        service.on_conditions([condition(latched, Priority.HIGH, False), condition(cleared, Priority.MEDIUM, False)])
        await api.ok(
            "nurse", "POST", f"/api/v1/alarms/{ids[latched]}/acknowledge", {"reason": "back in range at the call"}
        )
        await api.ok(
            "nurse", "POST", f"/api/v1/alarms/{ids[silenced]}/silence", {"reason": "probe reseated", "minutes": 5}
        )
        await wait_for(lambda: service.manager.get(ids[cleared]) is None, TIMEOUT, what="the cleared alarm to end")
        found = await api.ok("viewer", "GET", f"/api/v1/wards/{WARD}/handover")
        by_patient = {a["patient"]: a for a in found["alarms"]}
        assert (by_patient[latched]["outcome"], by_patient[latched]["resolved_by"]) == ("resolved", "nurse")
        assert by_patient[latched]["resolution_note"] == "back in range at the call"
        assert (by_patient[cleared]["outcome"], by_patient[cleared]["resolved_by"]) == ("cleared", None)
        assert (by_patient[silenced]["outcome"], by_patient[silenced]["silenced_by"]) == ("open (silenced)", "nurse")
        assert by_patient[silenced]["acknowledged_by"] is None


async def test_handover_shows_a_resolve_while_present_and_its_realarm(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    """Before: an alarm resolved by hand while present showed only "resolved", never that it re-alarmed."""
    config = config_for(tmp_path, receiver, mosquitto, resolved_recheck_s=0.5)
    async with running(config) as api:
        service = api.service
        service.on_conditions([condition("p-lasting", Priority.HIGH, True)])
        (first,) = [r.alarm_id for r in service.manager.open_alarms()]
        await api.ok("nurse", "POST", f"/api/v1/alarms/{first}/resolve", {"reason": "called, feels fine"})
        pending = await api.ok("viewer", "GET", f"/api/v1/wards/{WARD}/handover")
        watched = {a["alarm_id"]: a for a in pending["alarms"]}
        assert watched[first]["outcome"] == "resolved"
        assert watched[first]["realarm_at"] is not None
        await wait_for(lambda: service.manager.open_alarms() != [], TIMEOUT, what="the re-alarm")
        (again,) = [r.alarm_id for r in service.manager.open_alarms()]
        found = await api.ok("viewer", "GET", f"/api/v1/wards/{WARD}/handover")
        by_id = {a["alarm_id"]: a for a in found["alarms"]}
        resolved = by_id[first]
        assert (resolved["outcome"], resolved["resolved_by"], resolved["reraised_as"]) == ("re-alarmed", "nurse", again)
        assert resolved["resolution_note"] == "called, feels fine"
        assert resolved["realarmed_at"] >= resolved["resolved_at"] + 500
        assert resolved["realarm_at"] is None
        assert by_id[again]["outcome"] == "open (active)"


async def test_the_news2_log_stores_changes_only_and_keeps_each_patients_newest_score(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    with Store(config.database) as store:
        service = AlarmService(config, store)  # not started: its NEWS2 log is driven by hand
        for patient in ("p-steady", "p-rising"):
            await service.registry.admit(WARD, "charge", "referred", patient=patient)
        scores = {"p-steady": 1, "p-rising": 2}
        missing = (Param.RESPIRATION,)
        service.observations.score_source = lambda patient, t: News2Score(
            score=scores[patient], points={}, used={}, missing=missing, spo2_scale=1, t=t
        )
        log = service.handover.scores
        day = 86_400_000
        t0 = now_ms() - 9 * day
        assert log.sample(t0) == 2
        assert log.sample(t0 + 60_000) == 0  # nothing changed
        scores["p-rising"] = 3
        assert log.sample(t0 + 120_000) == 1
        assert log.sample(t0 + 8 * day) == 0  # unchanged for 8 days; old rows pruned but each newest kept
        rows = store.connection.execute("SELECT patient, score FROM news2_log ORDER BY id").fetchall()
        assert rows == [("p-steady", 1), ("p-rising", 3)]
        scores["p-steady"] = 5
        assert log.sample(t0 + 8 * day + 60_000) == 1
        window = log.window(["p-steady", "p-rising"], t0 + 8 * day)
        steady = window["p-steady"]  # the score before the window, then the rise in it
        assert (steady["first"]["score"], steady["last"]["score"], steady["highest"]) == (1, 5, 5)
        rising = window["p-rising"]  # unchanged: its score from before the window
        assert (rising["first"]["score"], rising["last"]["score"], rising["highest"]) == (3, 3, 3)
