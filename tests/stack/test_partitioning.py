"""Alerting partitioned by ward on one machine: two instances, one real mosquitto, no cross-talk.

Instance A owns ward-a, instance B owns ward-b (``docs/scaling.md``, "Alerting"). Each has its own
service id (so its own persistent MQTT session), its own SQLite state and its own webhook receiver,
and runs the real engine with ``spo2_delay_s = 0``. One desaturation is published per ward; each
instance must page exactly once, for its own ward's patient only.

How "nothing else arrives" is shown without sleeping: after the two desaturations a normal heart-rate
message (a fence) is published for each ward. The broker hands each subscriber its messages in the
order they were published, so once an instance's engine has seen its own fence it has also been handed
anything published before it: had it received the other ward's desaturation, its engine would have
seen it too. (The service also drops any message of a ward it does not own before the engine, so
this shows the outcome — engine input and pages — rather than the subscription filters alone.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wardwatch.alerting.app import default_source, run
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.rules import load_rules
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import DelegatingSource, WebhookReceiver, enrol_in_database
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import Sample, Signal, Vitals, encode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for

TIMEOUT = 15.0
WARDS = ("ward-a", "ward-b")
PATIENT = {"ward-a": "p-a1", "ward-b": "p-b1"}
FENCE_PATIENT = {"ward-a": "p-a-fence", "ward-b": "p-b-fence"}


class RecordingSource(DelegatingSource):
    """The real engine, recording the (ward, patient) of every vitals message it is fed."""

    def __init__(self, engine: ConditionSource) -> None:
        super().__init__(engine)
        self.seen: list[tuple[str, str]] = []

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Record, then feed the engine."""
        self.seen.append((ward, msg.patient))
        return self.engine.on_vitals(msg, ward)


@dataclass
class Instance:
    """One running alerting instance and what it was given."""

    ward: str
    config: AlertingConfig
    receiver: WebhookReceiver
    source: RecordingSource
    service: AlarmService | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def pages(self) -> list[dict[str, Any]]:
        """Unique pages this instance's receiver accepted."""
        return [r.body for r in self.receiver.unique()]


def instance_config(tmp_path: Path, ward: str, receiver: WebhookReceiver, broker: Mosquitto) -> AlertingConfig:
    """One ward, one escalation step (60 s: only the first page falls within the test), webhooks."""
    rules = tmp_path / "rules.toml"
    if not rules.exists():
        rules.write_text("[defaults]\nspo2_delay_s = 0.0\n")
    destinations = ("primary-nurse", "charge-desk")
    return config_from_mapping(
        {
            "service_id": f"alerting-{ward}",
            "database": str(tmp_path / f"alerting-{ward}.db"),
            "rules": str(rules),
            "tick_s": 0.2,
            "mqtt": {"host": broker.host, "port": broker.port, "tls": False},
            "api": {"enabled": False},
            "paging": {"backoff_min_s": 0.01, "backoff_max_s": 0.05, "round_backoff_max_s": 0.1},
            "wards": {
                ward: {
                    "destinations": {
                        d: {"channels": [{"type": "webhook", "url": receiver.url(f"/{ward}/{d}")}]}
                        for d in destinations
                    },
                    "escalation": {"high": {"steps": [{"destination": "primary-nurse", "timeout_s": 60}]}},
                    "failsafe": "charge-desk",
                }
            },
        }
    )


@contextlib.asynccontextmanager
async def running(instance: Instance) -> AsyncIterator[Instance]:
    """Run the whole alerting service (``run``) for ``instance`` until the block ends."""

    def ready(service: AlarmService, port: int | None) -> None:
        instance.service = service
        instance.ready.set()

    ward = instance.ward
    kits = {
        PATIENT[ward]: (f"gw-{ward}", {f"ox-{PATIENT[ward]}": "pulse_oximeter"}),
        FENCE_PATIENT[ward]: (f"gw-{ward}", {f"hr-{FENCE_PATIENT[ward]}": "heart_rate_strap"}),
    }
    await enrol_in_database(instance.config, kits)  # the ward's own patients, admitted in its own registry
    task = asyncio.create_task(run(instance.config, source=instance.source, ready=ready))
    try:
        ready_wait = asyncio.ensure_future(instance.ready.wait())
        done, _ = await asyncio.wait({ready_wait, task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready_wait.cancel()
            task.result()  # raises what stopped the service
        assert ready_wait in done, f"alerting for {instance.ward} not ready within {TIMEOUT} s"
        yield instance
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def spo2(ward: str, patient: str, values: list[float], t0: int) -> tuple[str, bytes]:
    device = f"ox-{patient}"
    message = Vitals(
        patient=patient,
        device=device,
        gateway=f"gw-{ward}",
        signal=Signal.SPO2,
        seq=1,
        samples=tuple(Sample(t=t0 + 1000 * i, v=v) for i, v in enumerate(values)),
    )
    return vitals_topic(ward, f"gw-{ward}", patient, device, "spo2"), encode(message)


def fence(ward: str, t0: int) -> tuple[str, bytes]:
    patient = FENCE_PATIENT[ward]
    device = f"hr-{patient}"
    message = Vitals(
        patient=patient,
        device=device,
        gateway=f"gw-{ward}",
        signal=Signal.HEART_RATE,
        seq=1,
        samples=(Sample(t=t0, v=72.0),),
    )
    return vitals_topic(ward, f"gw-{ward}", patient, device, "heart_rate"), encode(message)


async def test_two_alerting_instances_page_only_for_their_own_ward(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with WebhookReceiver() as receiver_a, WebhookReceiver() as receiver_b:
        instances = {
            ward: Instance(
                ward,
                instance_config(tmp_path, ward, receiver, mosquitto),
                receiver,
                RecordingSource(default_source(load_rules(tmp_path / "rules.toml"))),
            )
            for ward, receiver in zip(WARDS, (receiver_a, receiver_b), strict=True)
        }
        mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
        async with (
            running(instances["ward-a"]) as a,
            running(instances["ward-b"]) as b,
            MqttClient(mqtt, "test-publisher", clean_start=True) as publisher,
        ):
            await publisher.wait_connected(TIMEOUT)
            t0 = time.time_ns() // 1_000_000 - 20_000
            desaturation = [97.0] * 8 + [84.0] * 8  # 8 s normal, then 8 s at 84 % (limit 90 %, no delay)
            for ward in WARDS:
                await publisher.publish(*spo2(ward, PATIENT[ward], desaturation, t0))
            for ward in WARDS:
                await publisher.publish(*fence(ward, t0 + 16_000))

            for instance in (a, b):
                await settled(instance)

            for instance in (a, b):
                ward = instance.ward
                # the engine was fed only this ward's messages: the desaturation and the fence
                assert instance.source.seen == [(ward, PATIENT[ward]), (ward, FENCE_PATIENT[ward])]
                (page,) = instance.pages()  # exactly one page
                assert (page["ward"], page["patient"], page["destination"], page["step"]) == (
                    ward,
                    PATIENT[ward],
                    "primary-nurse",
                    0,
                )
                assert page["dedup_key"].startswith(f"{ward}/{PATIENT[ward]}/spo2_low")
                assert {r.path for r in instance.receiver.requests} == {f"/{ward}/primary-nurse"}
                assert instance.service is not None
                open_alarms = instance.service.manager.open_alarms()
                assert [(alarm.ward, alarm.patient) for alarm in open_alarms] == [(ward, PATIENT[ward])]

        # each instance's own state file holds its own ward's alarm and nothing of the other ward
        for instance in (a, b):
            with Store(instance.config.database) as store:
                pages = [(e.page.ward, e.page.patient, e.status) for e in store.outbox()]
            assert pages == [(instance.ward, PATIENT[instance.ward], "delivered")]


async def settled(instance: Instance) -> None:
    """Wait until the instance's engine saw its ward's fence, it paged, and the page is recorded as delivered."""
    fence_seen = (instance.ward, FENCE_PATIENT[instance.ward])
    service = instance.service
    assert service is not None
    await wait_for(lambda: fence_seen in instance.source.seen, TIMEOUT, what=f"{instance.ward}: fence seen")
    await wait_for(lambda: bool(instance.pages()), TIMEOUT, what=f"{instance.ward}: paged")
    await wait_for(lambda: not service.store.pending_pages(), TIMEOUT, what=f"{instance.ward}: page recorded")
