"""Issue 12's broker findings against a real mosquitto and the real services: retained vitals, dead letters.

* A retained SpO2 message must not raise anything: not when alerting (re)subscribes, not when it is
  published live with the retain flag (refused, counted, dead-lettered), not after a restart.
* The ``operator`` principal receives the dead letters of ingest and of alerting, each published where
  that service's ACL lets it.

"Nothing happened" is shown without sleeping: after the retained message a normal heart-rate message (a
fence) is published; the broker delivers in order, so once the engine has counted the fence it has been
handed anything that came before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from wardwatch.alerting.app import run
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, config_from_mapping
from wardwatch.alerting.testing import WebhookReceiver, enrol_in_database
from wardwatch.core.broker import Site, write_site
from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.mqtt import Message, MqttClient
from wardwatch.core.schema import DeadLetter, Sample, Signal, Vitals, decode, encode
from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for
from wardwatch.ingest.testing import count, ingest_config, running_ingest

TIMEOUT = 15.0
WARD, GATEWAY, PATIENT = "ward-a", "gw-01", "p-a1"


def spo2(values: list[float], t0: int, seq: int = 1) -> tuple[str, bytes]:
    device = "ox-a1"
    message = Vitals(
        patient=PATIENT,
        device=device,
        gateway=GATEWAY,
        signal=Signal.SPO2,
        seq=seq,
        samples=tuple(Sample(t=t0 + 1000 * i, v=v) for i, v in enumerate(values)),
    )
    return vitals_topic(WARD, GATEWAY, PATIENT, device, "spo2"), encode(message)


def heart_rate(t: int, seq: int) -> tuple[str, bytes]:
    message = Vitals(
        patient="p-fence",
        device="hr-fence",
        gateway=GATEWAY,
        signal=Signal.HEART_RATE,
        seq=seq,
        samples=(Sample(t=t, v=72.0),),
    )
    return vitals_topic(WARD, GATEWAY, "p-fence", "hr-fence", "heart_rate"), encode(message)


def alerting_config(
    tmp_path: Path, broker: Mosquitto, receiver: WebhookReceiver, mqtt: dict[str, Any]
) -> AlertingConfig:
    rules = tmp_path / "rules.toml"
    rules.write_text("[defaults]\nspo2_delay_s = 0.0\n")
    return config_from_mapping(
        {
            "service_id": "alerting-1",
            "database": str(tmp_path / "alerting.db"),
            "rules": str(rules),
            "tick_s": 0.2,
            "mqtt": {"host": broker.host, "port": broker.port, "tls": False, **mqtt},
            "api": {"enabled": False},
            "paging": {"backoff_min_s": 0.01, "backoff_max_s": 0.05, "round_backoff_max_s": 0.1},
            "wards": {
                WARD: {
                    "destinations": {
                        d: {"channels": [{"type": "webhook", "url": receiver.url(f"/{d}")}]}
                        for d in ("primary-nurse", "charge-desk")
                    },
                    "escalation": {"high": {"steps": [{"destination": "primary-nurse", "timeout_s": 60}]}},
                    "failsafe": "charge-desk",
                }
            },
        }
    )


@contextlib.asynccontextmanager
async def running_alerting(config: AlertingConfig) -> AsyncIterator[AlarmService]:
    """The whole alerting service (``run``) until the block ends."""
    started: asyncio.Future[AlarmService] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, ready=lambda service, _port: started.set_result(service)))
    try:
        waiting: set[asyncio.Future[Any]] = {started, task}
        done, _ = await asyncio.wait(waiting, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert started in done, f"alerting not ready within {TIMEOUT} s"
        yield started.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def counted(service: AlarmService, name: str, **labels: str) -> float:
    return service.metrics.registry.get_sample_value(f"wardwatch_alerting_{name}_total", labels) or 0.0


async def test_a_retained_spo2_message_raises_nothing_even_after_a_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    t0 = time.time_ns() // 1_000_000 - 20_000
    desaturation = [70.0] * 16  # 16 s at 70 %: a HIGH page at once if the engine ever saw it
    async with WebhookReceiver() as receiver, MqttClient(mqtt, "gateway", clean_start=True) as gateway:
        await gateway.wait_connected(TIMEOUT)
        config = alerting_config(tmp_path, mosquitto, receiver, {})
        # admitted, so that only the retain flag can keep their messages from the engine
        kits = {PATIENT: (GATEWAY, {"ox-a1": "pulse_oximeter"}), "p-fence": (GATEWAY, {"hr-fence": "heart_rate_strap"})}
        await enrol_in_database(config, kits)
        # stored before alerting subscribes: the situation of every restart
        await gateway.publish(*spo2(desaturation, t0), retain=True)
        for run_number in (1, 2):
            async with running_alerting(config) as service:
                await gateway.publish(*heart_rate(t0 + 16_000, seq=run_number))
                await wait_for(
                    lambda: counted(service, "messages", kind="vitals") == 1, TIMEOUT, what="the fence counted"
                )
                if run_number == 1:  # a live publish with the retain flag is refused, counted, dead-lettered
                    await gateway.publish(*spo2(desaturation, t0, seq=2), retain=True)
                    await gateway.publish(*heart_rate(t0 + 17_000, seq=3))
                    await wait_for(
                        lambda: counted(service, "messages", kind="vitals") == 2, TIMEOUT, what="second fence counted"
                    )
                    assert counted(service, "rejected", reason="retained") == 1
                assert service.manager.open_alarms() == []
                assert receiver.requests == []
        # the broker itself still stores the gateway's retained vitals (mosquitto 2.0 cannot refuse the
        # retain flag per topic): a subscriber asking for retained messages gets it
        async with MqttClient(mqtt, "curious", clean_start=True) as curious:
            await curious.wait_connected(TIMEOUT)
            await curious.subscribe(spo2([], t0)[0])
            retained = await asyncio.wait_for(curious.get_message(), TIMEOUT)
        assert retained.retain


async def test_the_operator_receives_dead_letters_of_ingest_and_alerting(tmp_path: Path, influxd: Influxd) -> None:
    site = Site(gateways={GATEWAY: WARD})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with (
        Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker,
        WebhookReceiver() as receiver,
    ):

        def as_user(user: str) -> MqttSettings:
            return MqttSettings(
                host=broker.host, port=broker.port, tls=False, username=user, password=Secret(users[user])
            )

        alerting = alerting_config(tmp_path, broker, receiver, {"username": "alerting", "password": users["alerting"]})
        async with (
            MqttClient(as_user("operator"), "operator", clean_start=True) as operator,
            MqttClient(as_user(GATEWAY), GATEWAY, clean_start=True) as gateway,
            running_ingest(ingest_config(broker, influxd, user="ingest")),
            running_alerting(alerting),
        ):
            await operator.wait_connected(TIMEOUT)
            await operator.subscribe("wardwatch/v1/deadletter/#")
            await gateway.wait_connected(TIMEOUT)
            topic, _ = spo2([97.0], time.time_ns() // 1_000_000)
            await gateway.publish(topic, b"{not json")
            letters: dict[str, Message] = {}

            async def both() -> bool:
                while (message := operator.get_message_nowait()) is not None:
                    letters[message.topic] = message
                return len(letters) == 2

            await wait_for(both, TIMEOUT, what="dead letters from ingest and alerting")
    assert sorted(letters) == ["wardwatch/v1/deadletter/alerting/alerting-1", "wardwatch/v1/deadletter/ingest"]
    for message in letters.values():
        letter = decode(message.payload)
        assert isinstance(letter, DeadLetter)
        assert (letter.topic, letter.payload) == (topic, b"{not json")


def vitals_as(topic_patient: str, payload_patient: str, device: str, values: list[float], t0: int, seq: int) -> Any:
    """SpO2 vitals published by GATEWAY under ``topic_patient``'s topic, naming ``payload_patient`` inside."""
    message = Vitals(
        patient=payload_patient,
        device=device,
        gateway=GATEWAY,
        signal=Signal.SPO2,
        seq=seq,
        samples=tuple(Sample(t=t0 + 1000 * i, v=v) for i, v in enumerate(values)),
    )
    return vitals_topic(WARD, GATEWAY, topic_patient, device, "spo2"), encode(message)


@contextlib.asynccontextmanager
async def site_with_services(
    tmp_path: Path, influxd: Influxd, receiver: WebhookReceiver
) -> AsyncIterator[tuple[MqttClient, AlarmService]]:
    """The site's broker (its ACL), alerting (the registry: PATIENT on GATEWAY, p-d03 on gw-03) and ingest,
    and a client holding GATEWAY's own credentials, as an attacker with one home gateway's would."""
    site = Site(gateways={GATEWAY: WARD, "gw-03": WARD})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:
        gateway_login = MqttSettings(
            host=broker.host, port=broker.port, tls=False, username=GATEWAY, password=Secret(users[GATEWAY])
        )
        config = alerting_config(tmp_path, broker, receiver, {"username": "alerting", "password": users["alerting"]})
        kits = {PATIENT: (GATEWAY, {"ox-a1": "pulse_oximeter"}), "p-d03": ("gw-03", {"ox-d03": "pulse_oximeter"})}
        await enrol_in_database(config, kits)
        async with (
            running_alerting(config) as service,  # publishes the kits ingest judges by
            running_ingest(ingest_config(broker, influxd, user="ingest")),
            MqttClient(gateway_login, GATEWAY, clean_start=True) as gateway,
        ):
            await gateway.wait_connected(TIMEOUT)
            yield gateway, service


async def settled_after_fence(influxd: Influxd, service: AlarmService, gateway: MqttClient, published: int) -> None:
    """Publish a normal SpO2 of PATIENT after ``published`` other messages and wait until ingest stored it
    and alerting consumed every message: the broker delivers in order, so both have judged the rest."""
    fence_t = time.time_ns() // 1_000_000
    await gateway.publish(*vitals_as(PATIENT, PATIENT, "ox-a1", [97.0], fence_t, seq=1000))
    await wait_for(
        lambda: counted(service, "messages", kind="vitals") == published + 1, TIMEOUT, what="alerting consumed all"
    )

    async def fence_stored() -> bool:
        return await count(influxd, where=f"patient = '{PATIENT}'") == 1

    await wait_for(fence_stored, 30, what="the fence stored", max_interval=0.2)


async def test_spoofed_vitals_page_nobody_and_store_nothing_in_the_same_run(tmp_path: Path, influxd: Influxd) -> None:
    """Issue 12's three spoofed pages, with alerting and ingest on one broker: no page and no stored point."""
    t0 = time.time_ns() // 1_000_000 - 20_000
    desaturation = [70.0] * 16  # a HIGH page at once (spo2 delay 0) if the engine ever took it
    spoofs = [
        vitals_as("p-nobody", "p-nobody", "ox-x", desaturation, t0, seq=1),  # (a) a patient nobody admitted
        vitals_as("p-d03", "p-d03", "ox-d03", desaturation, t0, seq=2),  # (b) gw-03's patient and her device
        vitals_as(PATIENT, "p-d03", "ox-a1", desaturation, t0, seq=3),  # (c) named only in the payload
    ]
    async with WebhookReceiver() as receiver, site_with_services(tmp_path, influxd, receiver) as (gateway, service):
        for topic, payload in spoofs:
            await gateway.publish(topic, payload)
        await settled_after_fence(influxd, service, gateway, len(spoofs))
        refused = {r: counted(service, "provenance_refused", reason=r) for r in ("unknown_patient", "unknown_device")}
        assert refused == {"unknown_patient": 1, "unknown_device": 1}, refused
        assert counted(service, "provenance_refused", reason="topic_mismatch") == 1
        clinical = [a for a in service.manager.open_alarms() if a.patient in ("p-nobody", "p-d03", PATIENT)]
        assert clinical == []
    assert receiver.requests == []  # no operator destination here: the notice is listed, never paged
    for patient in ("p-nobody", "p-d03"):
        assert await count(influxd, where=f"patient = '{patient}'") == 0
    assert await count(influxd) == 1  # the fence alone


async def test_patient_ids_the_registry_did_not_issue_are_refused(tmp_path: Path, influxd: Influxd) -> None:
    """A name, an NHS number and an MRN as patient ids: refused by alerting and ingest, never in InfluxDB."""
    t0 = time.time_ns() // 1_000_000 - 20_000
    names = ["john.smith", "9434765919", "mrn-00123456"]
    async with WebhookReceiver() as receiver, site_with_services(tmp_path, influxd, receiver) as (gateway, service):
        for seq, name in enumerate(names, start=1):
            await gateway.publish(*vitals_as(name, name, "ox-a1", [70.0] * 16, t0, seq=seq))
        await settled_after_fence(influxd, service, gateway, len(names))
        assert counted(service, "provenance_refused", reason="unknown_patient") == len(names)
        assert not [a for a in service.manager.open_alarms() if a.patient in names]
    assert receiver.requests == []
    tags = await influxd.query('SHOW TAG VALUES FROM "vitals" WITH KEY = "patient"', db="wardwatch")
    stored = {value for series in tags["results"][0].get("series", []) for _, value in series["values"]}
    assert stored == {PATIENT}
