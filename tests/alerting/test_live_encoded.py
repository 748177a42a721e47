"""The live board keeps each patient's and open alarm's JSON between changes: a snapshot is never stale for them.

A subscription's snapshot joins the kept bytes of the patients and alarms that did not change instead of
encoding the whole ward on the alarm service's loop; whatever changed in between, it must equal the board.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec

from wardwatch.alerting.live import LiveBoard, Subscription
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.alerting.testing import open_alarm_record
from wardwatch.core.schema import (
    SCHEMA_VERSION,
    AlarmState,
    DeviceLink,
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    Priority,
    Sample,
    Signal,
    Vitals,
)

T0 = 1_700_000_000_000
WARD, OTHER = "ward-a", "ward-b"
PATIENTS = [f"p-{i}" for i in range(6)]


def _snapshot_event(subscription: Subscription) -> dict[str, Any]:
    head, data = subscription._events[0].decode().split("\n", 1)
    assert head == "event: snapshot"
    parsed: dict[str, Any] = json.loads(data.removeprefix("data: "))
    return parsed


def _board_now(board: LiveBoard, ward: str) -> list[Any]:
    """The ward's patients as the board holds them, encoded whole (no kept bytes)."""
    patients: list[Any] = json.loads(msgspec.json.encode(board.snapshot(ward)["patients"]))
    return patients


def _assert_snapshots_match(board: LiveBoard, ward: str) -> None:
    expected = _board_now(board, ward)
    board._generation += 1  # a fresh snapshot event, not the one shared since the last change
    watcher = board.subscribe(ward)
    assert _snapshot_event(watcher)["patients"] == expected
    board.unsubscribe(watcher)
    encoded = json.loads(msgspec.json.encode(board.snapshot(ward, encoded=True)))  # GET .../live
    assert encoded["patients"] == expected


def _change(board: LiveBoard, rng: random.Random, ward: str, t: int) -> None:
    patient = rng.choice(PATIENTS)
    match rng.randrange(6):
        case 0:
            signal = rng.choice([Signal.SPO2, Signal.HEART_RATE, Signal.BATTERY])
            sample = Sample(t=t, v=float(rng.randrange(80, 100)))
            vitals = Vitals(
                v=SCHEMA_VERSION,
                patient=patient,
                device=f"{patient}-ox",
                gateway="gw-1",
                signal=signal,
                seq=t,
                samples=(sample,),
            )
            board.on_vitals(ward, vitals)
        case 1:
            status = DeviceStatus(
                v=SCHEMA_VERSION,
                patient=patient,
                device=f"{patient}-ox",
                gateway="gw-1",
                t=t,
                role=DeviceRole.PULSE_OXIMETER,
                connected=rng.random() < 0.5,
                battery=rng.randrange(101),
            )
            board.on_device_status(ward, status)
        case 2:
            link = DeviceLink(
                device=f"{patient}-hr",
                patient=patient,
                role=DeviceRole.HEART_RATE_STRAP,
                connected=True,
                battery=rng.randrange(101),
                last_seen=t,
            )
            board.on_gateway_status(
                GatewayStatus(v=SCHEMA_VERSION, gateway="gw-2", ward=ward, t=t, uptime_s=1, devices=(link,))
            )
        case 3:
            board.on_news2(ward, patient, {"score": rng.randrange(10), "band": "low", "complete": False})
        case 4:
            board.on_kit(ward, patient, f"gw-{rng.randrange(3)}")
        case _:
            board.on_admitted(ward, patient)


async def test_a_snapshot_after_changes_equals_the_board() -> None:
    rng = random.Random(13)
    board = LiveBoard([WARD, OTHER], list, now_ms=lambda: T0, flush_s=3600, buffer=10_000)
    watcher = board.subscribe(WARD)  # OTHER has no watcher: its changes are never sent, only its snapshots
    for step in range(400):
        ward = rng.choice([WARD, OTHER])
        _change(board, rng, ward, T0 + step * 100)
        if rng.random() < 0.3:
            board._flush()
        if rng.random() < 0.3:
            _assert_snapshots_match(board, ward)
        if step == 300:
            board.on_discharged(WARD, PATIENTS[0])
    for ward in (WARD, OTHER):
        _assert_snapshots_match(board, ward)
    assert not watcher.overflowed


async def test_a_patient_changed_while_nobody_watches_its_ward_is_not_shown_stale() -> None:
    board = LiveBoard([WARD, OTHER], list, now_ms=lambda: T0, flush_s=3600)
    board.subscribe(WARD)
    board.on_news2(OTHER, "p-1", {"score": 1, "band": "low", "complete": False})
    board._flush()
    assert board.snapshot(OTHER)["patients"][0]["news2"]["score"] == 1
    _assert_snapshots_match(board, OTHER)  # p-1's entry is encoded and kept here
    board.on_news2(OTHER, "p-1", {"score": 7, "band": "high", "complete": True})
    board._flush()  # a flush for WARD's watcher clears OTHER's dirty patients too: their kept bytes must go
    _assert_snapshots_match(board, OTHER)
    assert _board_now(board, OTHER)[0]["news2"]["score"] == 7


def _alarm(patient: str) -> AlarmRecord:
    return open_alarm_record(WARD, patient, T0)


def _snapshot_alarms(board: LiveBoard) -> list[Any]:
    board._generation += 1  # a fresh snapshot event, not the one shared since the last change
    watcher = board.subscribe(WARD)
    alarms: list[Any] = _snapshot_event(watcher)["alarms"]
    board.unsubscribe(watcher)
    assert json.loads(msgspec.json.encode(board.snapshot(WARD, encoded=True)))["alarms"] == alarms  # GET .../live
    assert json.loads(msgspec.json.encode(board.snapshot(WARD)["alarms"])) == alarms
    return alarms


async def test_a_snapshot_shows_each_alarm_as_it_is_now() -> None:
    records = [_alarm("p-1"), _alarm("p-2")]
    board = LiveBoard([WARD], lambda: list(records), now_ms=lambda: T0, flush_s=3600)
    board.subscribe(WARD)
    assert [a["state"] for a in _snapshot_alarms(board)] == ["active", "active"]  # both encoded and kept
    # acknowledged in the same millisecond it was last changed: shown once the change is saved (on_alarms)
    records[0].state = AlarmState.ACKNOWLEDGED
    board.on_alarms([records[0]])
    assert [a["state"] for a in _snapshot_alarms(board)] == ["acknowledged", "active"]
    # escalated later, not saved yet (the store is down): the board shows it as the manager has it
    records[1].priority = Priority.HIGH
    records[1].updated = T0 + 1000
    assert [a["priority"] for a in _snapshot_alarms(board)] == ["medium", "high"]
    # resolved: gone from the open alarms and from what the board keeps
    resolved = records.pop(0)
    resolved.state = AlarmState.RESOLVED
    board.on_alarms([resolved])
    assert [a["alarm_id"] for a in _snapshot_alarms(board)] == ["a-p-2"]
    assert set(board._alarm_entries) == {"a-p-2"}
    # the same alarm as a new record (a restart restored it): encoded from the new record
    records[0] = msgspec.structs.replace(records[0], text="SpO2 84 % below 90 %")
    assert [a["text"] for a in _snapshot_alarms(board)] == ["SpO2 84 % below 90 %"]
