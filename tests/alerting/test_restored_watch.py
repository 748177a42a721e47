"""A watch restored after a restart re-alarms only if the engine re-reports its condition.

A manual resolve while the condition lasts is watched (test_resolve_reraise.py). The watch is persisted;
before this, a reloaded watch assumed the condition still present and fired at its due time, even when
the condition had cleared while the service was down. Pure manager tests, then the real service and
engine over MQTT across a restart: SpO2 still low after the restart pages again, recovered does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from wardwatch.alerting.app import run
from wardwatch.alerting.manager import AlarmManager
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver, admit_with_kit
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import SCHEMA_VERSION, Priority, Sample, Signal, Vitals, encode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for

from .test_resolve_reraise import (
    HOLD_MS,
    T0,
    change,
    manager,
    opened,
    resolve_while_present,
    service_change,
    service_config,
)

DUE = T0 + 1000 + HOLD_MS  # resolve_while_present resolves at T0 + 1 s


def restarted_with_watch() -> tuple[AlarmManager, str]:
    """A manager restored from the records of one that resolved the desaturation while it lasted."""
    before = manager()
    first = resolve_while_present(before)
    restarted = manager()
    restarted.restore(before.take_dirty())
    return restarted, first


def test_a_restored_watch_not_rereported_does_not_realarm_and_is_dropped_one_hold_later() -> None:
    m, first = restarted_with_watch()
    (watch,) = m.watched()
    assert not m.is_confirmed(watch)
    assert m.tick(DUE) == []  # due, but the engine has not seen the condition since the start
    assert m.open_alarms() == []
    assert m.next_due() == DUE + HOLD_MS
    assert m.tick(DUE + HOLD_MS) == []
    assert m.watched() == []
    assert [(w.alarm_id, reason) for w, reason in m.take_dropped()] == [(first, "not_rereported")]
    (saved,) = [r for r in m.take_dirty() if r.alarm_id == first]
    assert saved.recheck_at is None
    # a later onset is a new alarm as usual: nothing goes silent
    assert len(opened(m.on_condition(change(True, DUE + 2 * HOLD_MS), DUE + 2 * HOLD_MS))) == 1


def test_a_restored_watch_rereported_before_its_due_time_realarms_when_due() -> None:
    m, first = restarted_with_watch()
    assert m.on_condition(change(True, T0 + 60_000), T0 + 60_000) == []
    (watch,) = m.watched()
    assert m.is_confirmed(watch)
    assert m.next_due() == DUE
    (alarm,) = opened(m.tick(DUE))
    assert m.open_alarms()[0].reraised_from == first
    assert [reason for _, reason in m.take_opened()] == ["realarm"]
    assert alarm.alarm_id != first


def test_a_restored_watch_rereported_after_its_due_time_realarms_at_once() -> None:
    m, first = restarted_with_watch()
    assert m.tick(DUE + 1000) == []
    (alarm,) = opened(m.on_condition(change(True, DUE + 2000), DUE + 2000))
    (record,) = m.open_alarms()
    assert (record.alarm_id, record.reraised_from) == (alarm.alarm_id, first)


def test_a_restored_watch_reported_cleared_or_discharged_is_dropped() -> None:
    m, first = restarted_with_watch()
    assert m.on_condition(change(False, T0 + 60_000, value=96.0), T0 + 60_000) == []
    assert m.watched() == []
    assert [(w.alarm_id, reason) for w, reason in m.take_dropped()] == [(first, "cleared")]
    discharged, first = restarted_with_watch()
    discharged.end_watches("p-1", T0 + 60_000)
    assert discharged.watched() == []
    assert [reason for _, reason in discharged.take_dropped()] == ["discharged"]
    assert discharged.tick(DUE + 2 * HOLD_MS) == []
    assert discharged.next_due() is None


def test_a_live_watch_ends_at_discharge() -> None:
    """Before: a watch outlived the patient's discharge and re-alarmed for a patient no longer monitored."""
    m = manager()
    resolve_while_present(m)
    m.end_watches("p-1", T0 + 2000)
    assert m.tick(DUE) == []
    assert m.watched() == []


def test_opened_alarms_say_why() -> None:
    m = manager()
    resolve_while_present(m)
    m.tick(DUE)
    assert [reason for _, reason in m.take_opened()] == ["onset", "realarm"]
    assert m.take_opened() == []
    medium = manager()
    (alarm,) = opened(medium.on_condition(change(True, T0, priority=Priority.MEDIUM), T0))
    medium.resolve(alarm.alarm_id, "nurse-ann", "seen", T0 + 1000)
    medium.on_condition(change(True, T0 + 2000), T0 + 2000)  # deeper: at once
    assert [reason for _, reason in medium.take_opened()] == ["onset", "realarm"]


# -- the real service and engine over MQTT, restarted during the hold ------------------------------------

ENGINE_HOLD_S = 4.0  # long enough to restart the service within it


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


def spo2_pages(receiver: WebhookReceiver, patient: str) -> list[str]:
    """Alarm ids of the first-step pages of ``patient``'s SpO2 alarms, in order."""
    return [
        r.body["alarm_id"]
        for r in receiver.unique()
        if r.body["dedup_key"] == f"ward-a/{patient}/spo2_low" and r.body["step"] == 0
    ]


def realarms_counted(service: AlarmService, rule: str) -> float:
    """``wardwatch_alerting_alarms_raised`` with reason ``realarm`` for ``rule``, over its priorities."""
    (metric,) = service.metrics.alarms_raised.collect()
    return sum(
        s.value
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["reason"] == "realarm" and s.labels["rule"] == rule
    )


async def feed_spo2(client: MqttClient, patient: str, value: float) -> None:
    """Live SpO2 samples at ``value`` until cancelled."""
    for seq in itertools.count(1):
        sample = Sample(t=int(time.time() * 1000), v=value)
        vitals = Vitals(
            v=SCHEMA_VERSION, patient=patient, device="ox-5", gateway="gw-01", signal=Signal.SPO2, seq=seq,
            samples=(sample,),
        )  # fmt: skip
        await client.publish(vitals_topic("ward-a", "gw-01", patient, "ox-5", "spo2"), encode(vitals))
        await asyncio.sleep(0.2)  # the device's sample rate, not a wait for a condition


@contextlib.asynccontextmanager
async def running(config: object) -> AsyncIterator[AlarmService]:
    """The alerting service (app.run: engine, MQTT, registry) until the block ends."""
    ready = asyncio.Event()
    started: list[AlarmService] = []

    def on_ready(service: AlarmService, port: int | None) -> None:
        started.append(service)
        ready.set()

    task = asyncio.create_task(run(config, ready=on_ready))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(ready.wait(), 10.0)
        yield started[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def restart_during_the_hold(
    tmp_path: Path,
    receiver: WebhookReceiver,
    mosquitto: Mosquitto,
    after_restart: Callable[[AlarmService, MqttClient], Awaitable[None]],
) -> str:
    """Desaturate p-5 to 71 %, resolve by hand, stop the service within the hold, start it again and
    run ``after_restart``; the resolved alarm's id."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[defaults]\nspo2_delay_s = 0.0\n")
    config = service_config(tmp_path, receiver)
    config.wards["ward-a"].resolved_recheck_s = ENGINE_HOLD_S
    config.mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    config.rules = rules
    async with MqttClient(config.mqtt, "test-client", clean_start=True) as client:
        await client.wait_connected(10.0)
        async with running(config) as service:
            await admit_with_kit(service.registry, "p-5", "gw-01", {"ox-5": "pulse_oximeter"})
            feeding = asyncio.create_task(feed_spo2(client, "p-5", 71.0))
            try:
                await wait_for(lambda: len(spo2_pages(receiver, "p-5")) == 1, 10.0, what="the desaturation paged")
                (first,) = spo2_pages(receiver, "p-5")
                assert service.resolve(first, "nurse-ann", "called the patient").recheck_at is not None
            finally:
                feeding.cancel()
        async with running(config) as service:
            assert [w.alarm_id for w in service.manager.watched()] == [first]
            await after_restart(service, client)
    return first


async def test_restart_during_the_hold_with_spo2_still_low_pages_again(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    async def still_low(service: AlarmService, client: MqttClient) -> None:
        feeding = asyncio.create_task(feed_spo2(client, "p-5", 71.0))
        try:
            await wait_for(lambda: len(spo2_pages(receiver, "p-5")) == 2, 20.0, what="a re-alarm after restart")
        finally:
            feeding.cancel()
        again = spo2_pages(receiver, "p-5")[1]
        reopened = service.manager.get(again)
        assert reopened is not None
        assert reopened.reraised_from is not None
        assert realarms_counted(service, "spo2_low") == 1

    first = await restart_during_the_hold(tmp_path, receiver, mosquitto, still_low)
    assert spo2_pages(receiver, "p-5")[0] == first


async def test_restart_during_the_hold_with_spo2_recovered_pages_nobody(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    async def recovered(service: AlarmService, client: MqttClient) -> None:
        feeding = asyncio.create_task(feed_spo2(client, "p-5", 97.0))
        try:  # the watch ends one hold after its due time, the engine never having re-reported it
            await wait_for(lambda: service.manager.watched() == [], 30.0, what="the watch dropped")
        finally:
            feeding.cancel()
        dropped = service.metrics.watches_dropped.labels(reason="not_rereported")
        assert dropped._value.get() == 1
        assert service.manager.open_alarms() == []

    first = await restart_during_the_hold(tmp_path, receiver, mosquitto, recovered)
    assert spo2_pages(receiver, "p-5") == [first]


async def test_a_discharge_during_the_hold_ends_the_watch_for_good(tmp_path: Path, receiver: WebhookReceiver) -> None:
    """Before: the watch outlived the discharge and re-alarmed (and paged) for a patient no longer monitored."""
    config = service_config(tmp_path, receiver)
    config.wards["ward-a"].resolved_recheck_s = ENGINE_HOLD_S
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            row = await service.registry.admit("ward-a", "cat", "referral")
            service.on_conditions([service_change(row.patient, True)])
            (record,) = service.manager.open_alarms()
            assert service.resolve(record.alarm_id, "nurse-ann", "seen").recheck_at is not None
            await service.registry.discharge(row.patient, "cat", "recovered")
            assert service.manager.watched() == []
            assert service.metrics.watches_dropped.labels(reason="discharged")._value.get() == 1
        assert store.watched_alarms() == []  # persisted: a restart does not bring it back


async def test_a_watch_of_a_patient_discharged_before_a_restart_ends_at_start(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """A crash between a discharge and the end of its watches: the start (publish_all) ends them."""
    config = service_config(tmp_path, receiver)
    config.wards["ward-a"].resolved_recheck_s = ENGINE_HOLD_S
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            row = await service.registry.admit("ward-a", "cat", "referral")
            service.on_conditions([service_change(row.patient, True)])
            (record,) = service.manager.open_alarms()
            service.resolve(record.alarm_id, "nurse-ann", "seen")
        with store.connection:  # the discharge was written, its watch not yet ended
            store.connection.execute("UPDATE reg_patients SET status = 'discharged' WHERE patient = ?", (row.patient,))
        async with AlarmService(config, store) as service:
            assert [w.alarm_id for w in service.manager.watched()] == [record.alarm_id]
            await service.registry.publish_all()
            assert service.manager.watched() == []
        assert store.watched_alarms() == []
