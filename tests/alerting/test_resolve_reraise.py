"""A manual resolve while the condition lasts: a new alarm opens after the ward's recheck hold.

The engine reports a condition once per onset; an alarm resolved while its condition was still present
used to stay quiet for as long as the condition lasted (a desaturation resolved at 71 % paged nobody
again). Pure manager tests (time passed in), then the service with its store, real timers and a real
webhook receiver, across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wardwatch.alerting.app import run
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import Action, AlarmManager, AlarmRecord, PublishAlarm, SendPage, resolve_notice
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, WardConfig, config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver, admit_with_kit
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import SCHEMA_VERSION, AlarmCategory, AlarmState, Priority, Sample, Signal, Vitals, encode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for

T0 = 1_700_000_000_000
HOLD_S = 600.0
HOLD_MS = 600_000

DESTINATIONS = {"primary-nurse": {"channels": [{"type": "mqtt"}]}, "failsafe-desk": {"channels": [{"type": "mqtt"}]}}


def ward(**extra: Any) -> WardConfig:
    return msgspec.convert(
        {
            "destinations": DESTINATIONS,
            "escalation": {"high": {"steps": [{"destination": "primary-nurse", "timeout_s": 60}]}},
            "failsafe": "failsafe-desk",
            "reopen_window_s": 30,
            **extra,
        },
        WardConfig,
    )


def manager(**extra: Any) -> AlarmManager:
    return AlarmManager({"ward-a": ward_policy("ward-a", ward(resolved_recheck_s=HOLD_S, **extra))})


def change(active: bool, t: int, *, priority: Priority = Priority.HIGH, value: float = 71.0) -> ConditionChange:
    return ConditionChange(
        patient="p-1",
        ward="ward-a",
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=priority,
        active=active,
        t=t,
        value=value,
        text=f"SpO2 {value:g} % below 90 %",
    )


def opened(actions: list[Action]) -> list[AlarmRecord | Any]:
    return [a.alarm for a in actions if isinstance(a, PublishAlarm) and a.alarm.state is AlarmState.ACTIVE]


def pages(actions: list[Action]) -> list[tuple[str, str, int]]:
    return [(a.page.alarm_id, a.page.destination, a.page.step) for a in actions if isinstance(a, SendPage)]


def resolve_while_present(m: AlarmManager) -> str:
    """Open the desaturation at T0 and resolve it by hand at T0 + 1 s while it lasts; its alarm id."""
    (alarm,) = opened(m.on_condition(change(True, T0), T0))
    m.resolve(alarm.alarm_id, "nurse-ann", "called the patient, feels fine", T0 + 1000)
    return str(alarm.alarm_id)


# -- the manager -----------------------------------------------------------------------------------


def test_resolved_while_present_opens_a_new_paged_alarm_after_the_hold() -> None:
    m = manager()
    first = resolve_while_present(m)
    assert m.open_alarms() == []
    (watch,) = m.watched()
    assert (watch.alarm_id, watch.state, watch.recheck_at) == (first, AlarmState.RESOLVED, T0 + 1000 + HOLD_MS)
    assert m.next_due() == T0 + 1000 + HOLD_MS
    assert m.tick(T0 + HOLD_MS) == []  # not yet
    actions = m.tick(T0 + 1000 + HOLD_MS)
    (alarm,) = opened(actions)
    assert alarm.alarm_id != first
    assert "re-alarmed" in alarm.text
    assert "manual resolve" in alarm.text
    assert "SpO2 71 %" in alarm.text
    assert pages(actions) == [(alarm.alarm_id, "primary-nurse", 0)]  # paged as a new onset, from step 0
    (record,) = m.open_alarms()
    assert (record.reraised_from, record.state, record.condition_active) == (first, AlarmState.ACTIVE, True)
    saved = {r.alarm_id: r for r in m.take_dirty()}
    assert (saved[first].reraised_as, saved[first].recheck_at) == (alarm.alarm_id, None)
    assert m.watched() == []


def test_condition_clearing_within_the_hold_opens_nothing() -> None:
    m = manager()
    first = resolve_while_present(m)
    assert m.on_condition(change(False, T0 + 120_000, value=95.0), T0 + 120_000) == []
    assert m.watched() == []
    assert m.next_due() is None
    assert m.tick(T0 + 10 * HOLD_MS) == []
    (saved,) = [r for r in m.take_dirty() if r.alarm_id == first]
    assert (saved.state, saved.condition_active, saved.cleared_at, saved.recheck_at) == (
        AlarmState.RESOLVED,
        False,
        T0 + 120_000,
        None,
    )
    # a later onset is a new alarm, as before
    assert len(opened(m.on_condition(change(True, T0 + 11 * HOLD_MS), T0 + 11 * HOLD_MS))) == 1


def test_an_onset_reported_during_the_hold_waits_for_it_and_a_deeper_priority_alarms_at_once() -> None:
    m = manager()
    resolve_while_present(m)
    # e.g. a fresh engine after a restart reports the condition again: the hold stands
    assert m.on_condition(change(True, T0 + 5000, value=70.0), T0 + 5000) == []
    assert m.open_alarms() == []
    (watch,) = m.watched()
    assert watch.value == 70.0
    # a priority deeper than the one the clinician resolved is news: a new alarm now
    medium = manager()
    (alarm,) = opened(medium.on_condition(change(True, T0, priority=Priority.MEDIUM), T0))
    medium.resolve(alarm.alarm_id, "nurse-ann", "seen", T0 + 1000)
    actions = medium.on_condition(change(True, T0 + 2000, value=65.0), T0 + 2000)
    (again,) = opened(actions)
    assert (again.priority, len(pages(actions))) == (Priority.HIGH, 1)


def test_a_latched_alarm_whose_condition_cleared_resolves_as_before() -> None:
    m = manager()
    (alarm,) = opened(m.on_condition(change(True, T0), T0))
    m.on_condition(change(False, T0 + 5000, value=95.0), T0 + 5000)  # high, unacknowledged: latched
    m.resolve(alarm.alarm_id, "nurse-ann", "seen", T0 + 60_000)
    assert m.watched() == []
    assert m.tick(T0 + 10 * HOLD_MS) == []


def test_resolve_without_recheck_is_not_watched() -> None:
    m = manager()
    (alarm,) = opened(m.on_condition(change(True, T0), T0))
    m.resolve(alarm.alarm_id, "system", "discharged", T0 + 1000, recheck=False)
    assert m.watched() == []
    assert m.tick(T0 + 10 * HOLD_MS) == []


def test_the_watch_survives_a_restart_of_the_manager() -> None:
    m = manager()
    first = resolve_while_present(m)
    saved = m.take_dirty()
    restarted = manager()
    restarted.restore(saved)
    assert [w.alarm_id for w in restarted.watched()] == [first]
    # the fresh engine re-reports the condition still present: the watch is confirmed, and fires when due
    assert restarted.on_condition(change(True, T0 + 5000), T0 + 5000) == []
    assert restarted.next_due() == T0 + 1000 + HOLD_MS
    (alarm,) = opened(restarted.tick(T0 + 1000 + HOLD_MS))
    assert alarm.alarm_id != first


def test_the_hold_defaults_to_max_silence_and_may_not_exceed_it() -> None:
    assert ward_policy("ward-a", ward(max_silence_s=900)).recheck_ms == 900_000
    assert ward_policy("ward-a", ward(max_silence_s=900, resolved_recheck_s=300)).recheck_ms == 300_000
    with pytest.raises(msgspec.ValidationError, match=r"resolved_recheck_s .* at most max_silence_s"):
        ward(max_silence_s=900, resolved_recheck_s=901)


def test_resolve_notice_says_when_it_realarms() -> None:
    m = manager()
    (alarm,) = opened(m.on_condition(change(True, T0), T0))
    record = m.get(alarm.alarm_id)
    assert record is not None
    m.resolve(alarm.alarm_id, "nurse-ann", "seen", T0 + 1000)
    notice = resolve_notice(record)
    assert notice["condition_still_present"] is True
    assert notice["realarm_at"] == T0 + 1000 + HOLD_MS
    assert "10 min" in str(notice["notice"])


# -- the service: store, timers, pages, restart --------------------------------------------------------

SERVICE_HOLD_S = 0.6


def service_config(tmp_path: Path, receiver: WebhookReceiver) -> AlertingConfig:
    destinations = ("primary-nurse", "failsafe-desk")
    return config_from_mapping(
        {
            "database": str(tmp_path / "alerting.db"),
            "api": {"enabled": False},
            "paging": {"attempts_per_channel": 2, "backoff_min_s": 0.01, "backoff_max_s": 0.05},
            "wards": {
                "ward-a": {
                    "destinations": {
                        d: {"channels": [{"type": "webhook", "url": receiver.url(f"/{d}")}]} for d in destinations
                    },
                    "escalation": {"high": {"steps": [{"destination": "primary-nurse", "timeout_s": 60}]}},
                    "failsafe": "failsafe-desk",
                    "reopen_window_s": 5,
                    "resolved_recheck_s": SERVICE_HOLD_S,
                }
            },
        }
    )


def service_change(patient: str, active: bool) -> ConditionChange:
    return ConditionChange(
        patient=patient,
        ward="ward-a",
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=Priority.HIGH,
        active=active,
        t=T0,
        value=71.0 if active else 95.0,
        text="SpO2 71 % below 90 %" if active else "",
    )


def paged_alarms(receiver: WebhookReceiver, patient: str) -> list[str]:
    """Alarm ids of the first-step pages ``patient``'s alarms sent, in order."""
    return [r.body["alarm_id"] for r in receiver.unique() if r.body["patient"] == patient and r.body["step"] == 0]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


async def open_and_resolve(service: AlarmService, receiver: WebhookReceiver, patient: str) -> str:
    service.on_conditions([service_change(patient, True)])
    await wait_for(lambda: len(paged_alarms(receiver, patient)) == 1, 10.0, what=f"{patient} paged")
    (alarm_id,) = paged_alarms(receiver, patient)
    record = service.resolve(alarm_id, "nurse-ann", "called the patient, feels fine")
    assert record.state is AlarmState.RESOLVED
    assert record.recheck_at is not None
    return alarm_id


async def test_service_realarms_with_pages_and_a_clear_within_the_hold_does_not(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    config = service_config(tmp_path, receiver)
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            cleared = await open_and_resolve(service, receiver, "p-cleared")
            lasting = await open_and_resolve(service, receiver, "p-lasting")
            service.on_conditions([service_change("p-cleared", False)])  # within the hold
            await wait_for(lambda: len(paged_alarms(receiver, "p-lasting")) == 2, 10.0, what="re-alarm paged")
            new_id = paged_alarms(receiver, "p-lasting")[1]
            assert new_id != lasting
            # p-cleared was resolved first, so its hold ended before p-lasting's: nothing opened for it
            assert paged_alarms(receiver, "p-cleared") == [cleared]
            (record,) = service.manager.open_alarms()
            assert (record.alarm_id, record.reraised_from) == (new_id, lasting)
            assert "re-alarmed" in record.text
        old = store.alarm(lasting)
        assert old is not None
        assert (old.reraised_as, old.recheck_at) == (new_id, None)
        assert store.watched_alarms() == []
        resolve_entry = next(e for e in store.audit_entries(alarm_id=lasting) if e.action == "resolve")
        assert old.resolved_at is not None
        assert resolve_entry.details["realarm_at"] == old.resolved_at + round(SERVICE_HOLD_S * 1000)
        assert any(e.action == "alarm_active" for e in store.audit_entries(alarm_id=new_id))


async def test_service_restart_during_the_hold_still_realarms(tmp_path: Path, receiver: WebhookReceiver) -> None:
    config = service_config(tmp_path, receiver)
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            first = await open_and_resolve(service, receiver, "p-1")
        assert [r.alarm_id for r in store.watched_alarms()] == [first]  # persisted with the alarm records
    assert paged_alarms(receiver, "p-1") == [first]
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            assert [w.alarm_id for w in service.manager.watched()] == [first]
            service.on_conditions([service_change("p-1", True)])  # the fresh engine: still present
            await wait_for(lambda: len(paged_alarms(receiver, "p-1")) == 2, 10.0, what="re-alarm after restart")
            (record,) = service.manager.open_alarms()
            assert record.reraised_from == first
            assert record.alarm_id == paged_alarms(receiver, "p-1")[1]


async def test_with_the_real_engine_a_desaturation_resolved_at_71_percent_pages_again(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """The browser finding end to end: SpO2 stays at 71 % over MQTT, the nurse resolves, the engine is
    silent (one report per onset), and the manager opens a new paged alarm after the hold."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[defaults]\nspo2_delay_s = 0.0\n")
    config = service_config(tmp_path, receiver)
    config.mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    config.rules = rules
    ready = asyncio.Event()
    started: list[AlarmService] = []

    def on_ready(service: AlarmService, port: int | None) -> None:
        started.append(service)
        ready.set()

    async def desaturated(client: MqttClient) -> None:
        for seq in itertools.count(1):  # live samples at 71 % until cancelled
            sample = Sample(t=int(time.time() * 1000), v=71.0)
            vitals = Vitals(
                v=SCHEMA_VERSION, patient="p-5", device="ox-5", gateway="gw-01", signal=Signal.SPO2, seq=seq,
                samples=(sample,),
            )  # fmt: skip
            await client.publish(vitals_topic("ward-a", "gw-01", "p-5", "ox-5", "spo2"), encode(vitals))
            await asyncio.sleep(0.2)  # the device's sample rate, not a wait for a condition

    async with MqttClient(config.mqtt, "test-client", clean_start=True) as client:
        await client.wait_connected(10.0)
        task = asyncio.create_task(run(config, ready=on_ready))
        feeding: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(ready.wait(), 10.0)
            service = started[0]
            await admit_with_kit(service.registry, "p-5", "gw-01", {"ox-5": "pulse_oximeter"})
            feeding = asyncio.create_task(desaturated(client))
            await wait_for(lambda: len(spo2_alarms(receiver, "p-5")) == 1, 10.0, what="the desaturation paged")
            (first,) = spo2_alarms(receiver, "p-5")
            record = service.resolve(first, "nurse-ann", "called the patient, feels fine")
            assert record.recheck_at is not None
            await wait_for(lambda: len(spo2_alarms(receiver, "p-5")) == 2, 10.0, what="a new alarm paged")
            again = spo2_alarms(receiver, "p-5")[1]
            assert again != first
            reopened = service.manager.get(again)
            assert reopened is not None
            assert reopened.reraised_from == first
            assert "re-alarmed" in reopened.text
        finally:
            if feeding is not None:
                feeding.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def spo2_alarms(receiver: WebhookReceiver, patient: str) -> list[str]:
    """Alarm ids of the first-step pages of ``patient``'s SpO2 alarms, in order."""
    return [
        r.body["alarm_id"]
        for r in receiver.unique()
        if r.body["dedup_key"] == f"ward-a/{patient}/spo2_low" and r.body["step"] == 0
    ]


def test_a_realarm_at_the_same_millisecond_gets_its_own_alarm_id() -> None:
    """Found by the property test (a clock that does not move): the new alarm overwrote the resolved one."""
    m = manager()
    (alarm,) = opened(m.on_condition(change(True, T0, priority=Priority.MEDIUM), T0))
    m.resolve(alarm.alarm_id, "nurse-ann", "seen", T0)
    (again,) = opened(m.on_condition(change(True, T0, priority=Priority.HIGH), T0))
    assert again.alarm_id != alarm.alarm_id
    saved = {r.alarm_id: r.state for r in m.take_dirty()}
    assert saved == {alarm.alarm_id: AlarmState.RESOLVED, again.alarm_id: AlarmState.ACTIVE}
