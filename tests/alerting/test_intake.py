"""Overload announces itself (issue #17): the intake's lag, "monitoring delayed", and replayed backlogs.

The service tests run the whole service in-process against a real mosquitto; a deliberately slowed
engine stands in for an overloaded instance.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from wardwatch.alerting.app import default_source
from wardwatch.alerting.capacity import MONITORING_DELAYED
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.intake import STALE_SHARE, HeldConditions, Intake, LagMonitor
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.rules import load_rules
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, load_alerting_config
from wardwatch.alerting.testing import DelegatingSource, WebhookReceiver, admit_with_kit, running_service
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import Message, MqttClient
from wardwatch.core.schema import (
    AlarmCategory,
    Priority,
    Sample,
    Signal,
    Vitals,
    encode,
)
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for

TIMEOUT = 20.0
WARD = "ward-a"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def spo2(patient: str, seq: int, first_t: int, values: Sequence[float]) -> Vitals:
    return Vitals(
        patient=patient,
        device=f"ox-{patient}",
        gateway="gw-01",
        signal=Signal.SPO2,
        seq=seq,
        samples=tuple(Sample(t=first_t + 1000 * i, v=v) for i, v in enumerate(values)),
    )


async def admit(service: AlarmService, *patients: str) -> None:
    """Admit each patient with its oximeter ``ox-{patient}`` through gw-01 (the registry's provenance check)."""
    for patient in patients:
        await admit_with_kit(service.registry, patient, "gw-01", {f"ox-{patient}": "pulse_oximeter"})


def topic_of(vitals: Vitals) -> str:
    return vitals_topic(WARD, vitals.gateway, vitals.patient, vitals.device, "spo2")


def message(vitals: Vitals) -> Message:
    return Message(topic_of(vitals), encode(vitals), 1, False, 1)


# -- the intake's parts, without a broker ---------------------------------------------------------------


async def test_live_messages_go_first_and_a_backlog_still_drains_in_patient_order() -> None:
    clock = [1_000.0]
    intake = Intake(stale_after_s=10.0, clock=lambda: clock[0])
    now = round(clock[0] * 1000)
    backlog = [spo2("p-r1", seq, now - 600_000 + seq * 30_000, [97.0] * 30) for seq in range(1, 21)]
    for vitals in backlog:
        intake.put(message(vitals))
    live_of_backlogged = spo2("p-r1", 21, now - 1000, [97.0])
    intake.put(message(live_of_backlogged))  # live, but behind its patient's backlog
    for n in range(64):
        intake.put(message(spo2(f"p-{n}", 1, now - 500, [97.0])))
    assert len(intake.live) == 64
    assert len(intake.stale) == 21

    batch = await intake.take(64)
    # live ones first; a backlog is never starved: at least 64 // STALE_SHARE samples, here one 30-sample message
    assert [entry.stale for entry in batch] == [False] * (64 - 64 // STALE_SHARE) + [True]
    rest = await intake.take(1000)
    order = [entry.vitals.seq for entry in [*batch, *rest] if entry.vitals and entry.vitals.patient == "p-r1"]
    assert order == list(range(1, 22))  # the patient's own order is kept across the lanes
    assert not any(entry.stale for entry in rest if entry.vitals and entry.vitals.seq == 21)
    assert intake.backlogged == {}


def change(active: bool, patient: str = "p-r1", rule: str = "spo2_low") -> ConditionChange:
    return ConditionChange(patient, WARD, rule, AlarmCategory.PHYSIOLOGICAL, Priority.HIGH, active, 0)


def test_a_condition_that_ended_within_the_backlog_is_dropped_one_still_true_is_released() -> None:
    clock = [0.0]
    held = HeldConditions(quiet_s=1.0, clock=lambda: clock[0])
    held.hold(change(True))
    held.hold(change(False))
    held.hold(change(True, rule="hr_high"))
    assert held.dropped == 1
    assert held.release("p-r1") == [change(True, rule="hr_high")]
    held.hold(change(True, patient="p-r2"))
    assert held.overdue({}) == []  # its backlog may still be arriving
    clock[0] = 1.5
    assert held.overdue({"p-r2": 3}) == []  # its backlog has not drained
    assert held.overdue({}) == [change(True, patient="p-r2")]


def test_lag_monitor_raises_past_the_bound_and_clears_below_half() -> None:
    lag = LagMonitor(max_lag_s=10.0)
    lag.observe(0.2, 0.5)
    assert lag.close_window(0.0) == (0.2, 0.5, None)
    assert lag.close_window(12.0)[2] is True  # the oldest waiting message counts even if nothing was handled
    lag.observe(7.0, 7.5)
    assert lag.close_window(0.0)[2] is None  # still above half the bound
    lag.observe(1.0, 1.2)
    assert lag.close_window(0.0)[2] is False


# -- the whole service on a real broker -------------------------------------------------------------------


class SlowSource(DelegatingSource):
    """The real engine, slowed down on every vitals message while ``delay_s`` is set (an overloaded instance)."""

    def __init__(self, engine: ConditionSource) -> None:
        super().__init__(engine)
        self.delay_s = 0.0
        self.slow_prefix = ""  # only patients whose id starts so
        self.handled = 0

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        if self.delay_s and msg.patient.startswith(self.slow_prefix):
            time.sleep(self.delay_s)  # CPU-bound work holds the event loop like this
        self.handled += 1
        return self.engine.on_vitals(msg, ward)


def service_config(tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto) -> AlertingConfig:
    """One ward; physiological alarms page /nurse, the instance's own state pages the operator at /ops."""
    (tmp_path / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\n")
    path = tmp_path / "alerting.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            database = "{tmp_path / "alerting.db"}"
            rules = "{tmp_path / "rules.toml"}"
            tick_s = 0.2
            [guard]
            max_lag_s = 1.0
            stale_after_s = 10.0
            [mqtt]
            host = "{mosquitto.host}"
            port = {mosquitto.port}
            tls = false
            [api]
            port = 0
            [paging]
            backoff_min_s = 0.01
            backoff_max_s = 0.05
            round_backoff_max_s = 0.1
            [wards.{WARD}]
            failsafe = "desk"
            operator = "ops"
            [wards.{WARD}.destinations.nurse]
            channels = [{{ type = "webhook", url = "{receiver.url("/nurse")}" }}]
            [wards.{WARD}.destinations.desk]
            channels = [{{ type = "webhook", url = "{receiver.url("/desk")}" }}]
            [wards.{WARD}.destinations.ops]
            channels = [{{ type = "webhook", url = "{receiver.url("/ops")}" }}]
            [wards.{WARD}.escalation.high]
            steps = [{{ destination = "nurse", timeout_s = 60 }}]
            """
        )
    )
    return load_alerting_config(path)


@pytest.fixture
async def client(mosquitto: Mosquitto) -> AsyncIterator[MqttClient]:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "test-publisher", clean_start=True, max_inflight=1000) as mqtt:
        await mqtt.wait_connected(TIMEOUT)
        yield mqtt


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rpartition(" ")[2])
    return 0.0


def publish_from_a_thread(broker: Mosquitto, messages: Sequence[Vitals]) -> None:
    """Publish (QoS 1, every PUBACK awaited) from a thread of its own: not held up by the service's event loop."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic_of(v), encode(v), qos=1) for v in messages]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


def delayed_active(service: AlarmService) -> bool:
    return any(r.rule == MONITORING_DELAYED and r.condition_active for r in service.manager.open_alarms())


async def test_a_slowed_instance_raises_monitoring_delayed_and_clears_it_after_catching_up(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    config = service_config(tmp_path, receiver, mosquitto)
    source = SlowSource(default_source(load_rules(config.rules)))
    async with running_service(config, source) as (service, port):
        await admit(service, "p-1")
        assert (await healthz(port))[0] == 200
        source.delay_s = 0.03  # 150 messages: about 4.5 s of work arriving at once, the bound is 1 s
        first = now_ms()
        burst = [spo2("p-1", s, first + s, [97.0]) for s in range(1, 151)]
        await asyncio.to_thread(publish_from_a_thread, mosquitto, burst)
        await wait_for(lambda: delayed_active(service), TIMEOUT, what="monitoring delayed raised")
        await wait_for(lambda: bool(receiver.unique("/ops")), TIMEOUT, what="the operator paged")
        page = receiver.unique("/ops")[0].body
        assert page["patient"] == config.service_id
        assert "monitoring delayed" in page["text"]
        assert not receiver.unique("/nurse")  # an instance's own state is not the nurses' page
        status, body = await healthz(port)
        assert status == 503
        assert body["status"] == "degraded"
        assert any("monitoring delayed" in problem for problem in body["problems"])
        assert await metric(port, "wardwatch_alerting_intake_lag_seconds") > 1.0

        source.delay_s = 0.0  # the instance catches up
        await wait_for(lambda: source.handled >= 150, TIMEOUT, what="the backlog handled")
        await client.publish(topic_of(v := spo2("p-1", 200, now_ms(), [97.0])), encode(v))
        await wait_for(lambda: not delayed_active(service), TIMEOUT, what="monitoring delayed cleared")
        assert (await healthz(port))[0] == 200
        assert await metric(port, "wardwatch_alerting_intake_lag_seconds") < 0.5


async def test_a_replayed_backlog_pages_no_ended_condition_and_one_still_true(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Ten minutes of backlog (30 samples a message): a desaturation that ended minutes ago pages nobody;
    one still going on when the backlog ends pages once the patient is live; a live patient pages meanwhile;
    the engine's ticks while the backlog is worked through page no "no data" for the replaying devices."""
    config = service_config(tmp_path, receiver, mosquitto)
    source = SlowSource(default_source(load_rules(config.rules)))
    source.delay_s, source.slow_prefix = 0.05, "p-r"  # the backlog takes 2 s: engine ticks (0.2 s) run meanwhile
    async with running_service(config, source) as (service, port):
        await admit(service, "p-r1", "p-r2", "p-live")
        now = now_ms()
        start = now - 615_000  # ten minutes ending 15 s ago: stale on arrival
        ended = [84.0 if 120 <= s < 180 else 97.0 for s in range(600)]
        ongoing = [84.0 if s >= 420 else 97.0 for s in range(600)]
        published = []
        for patient, values in (("p-r1", ended), ("p-r2", ongoing)):
            for seq, first in enumerate(range(0, 600, 30), start=1):
                published.append(spo2(patient, seq, start + first * 1000, values[first : first + 30]))
        published.append(spo2("p-live", 1, now - 12_000, [97.0] * 4 + [84.0] * 8))
        await asyncio.gather(*(client.publish(topic_of(v), encode(v)) for v in published))
        await wait_for(lambda: source.handled >= len(published), TIMEOUT, what="everything handled")
        await wait_for(lambda: bool(receiver.unique("/nurse")), TIMEOUT, what="the live patient paged")
        assert await metric(port, "wardwatch_alerting_stale_messages_total") == 40
        # the patients are live again: r-2 still desaturated, r-1 normal
        now = now_ms()
        live = [spo2("p-r1", 100, now - 2000, [97.0, 97.0]), spo2("p-r2", 100, now - 2000, [84.0, 84.0])]
        await asyncio.gather(*(client.publish(topic_of(v), encode(v)) for v in live))
        await wait_for(lambda: "p-r2" in paged(receiver), TIMEOUT, what="the ongoing condition paged")
        await wait_for(
            lambda: _metric_at_least(port, "wardwatch_alerting_stale_conditions_dropped_total", 1),
            TIMEOUT,
            what="the ended condition dropped",
        )
        assert paged(receiver) == {"p-live", "p-r2"}  # never r-1: its desaturation ended eight minutes ago


def paged(receiver: WebhookReceiver) -> set[str]:
    return {str(r.body["patient"]) for r in receiver.unique("/nurse")}


async def _metric_at_least(port: int, name: str, value: float) -> bool:
    return await metric(port, name) >= value


def test_a_deadman_of_the_tick_during_a_backlog_waits_for_the_flap_window_and_its_end_cancels_it() -> None:
    """Seen in the benchmark: a replaying strap paged "no data" because the engine's "sending again" comes
    only after its 30 s flap window, later than the patient's backlog drained."""
    clock = [0.0]
    held = HeldConditions(quiet_s=1.0, tick_quiet_s=35.0, clock=lambda: clock[0])
    rule = "device_silent.heart_rate_strap"
    held.touch("p-r1")
    held.hold_tick(change(True, rule=rule))
    assert held.release("p-r1") == []  # a live message of the patient does not release it
    clock[0] = 10.0
    assert held.overdue({}) == []
    assert held.cancels(change(False, rule=rule))  # "sending again": the device sent all along
    assert held.dropped == 1
    clock[0] = 100.0
    assert held.overdue({}) == []
    # a device that really fell silent after its backlog: paged, tick_quiet_s after the backlog's last message
    held.touch("r-3")
    held.hold_tick(change(True, patient="r-3", rule=rule))
    clock[0] = 120.0
    assert held.overdue({}) == []
    clock[0] = 136.0
    assert held.overdue({}) == [change(True, patient="r-3", rule=rule)]
