"""Issue 11: the alarm path never stops silently. Each test reproduces a finding against the real service.

Real mosquitto, real engine, real webhook receiver, the service in-process (``run``) or as a child
process (``wardwatch alerting run``) where a second process must write the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from wardwatch.alerting.app import default_source, open_store
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.rules import RuleSet, load_rules
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, load_alerting_config
from wardwatch.alerting.testing import (
    FIXTURE_ACTOR,
    DelegatingSource,
    Kit,
    WebhookReceiver,
    enrol_in_database,
    running_service,
)
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import (
    Sample,
    Signal,
    Vitals,
    encode,
)
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import vitals_topic
from wardwatch.core.waiting import wait_for

TIMEOUT = 15.0
PASSWORD = "correct horse battery"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_config(tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, api_port: int) -> Path:
    """A one-ward service: every priority pages the nurse at once; no SpO2 delay; fast ticks."""
    (tmp_path / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\n")
    path = tmp_path / "alerting.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            database = "{tmp_path / "alerting.db"}"
            rules = "{tmp_path / "rules.toml"}"
            tick_s = 0.2
            [mqtt]
            host = "{mosquitto.host}"
            port = {mosquitto.port}
            tls = false
            [api]
            port = {api_port}
            argon2_time_cost = 1
            argon2_memory_kib = 1024
            [paging]
            backoff_min_s = 0.01
            backoff_max_s = 0.05
            round_backoff_max_s = 0.1
            [wards.ward-a]
            failsafe = "desk"
            [wards.ward-a.destinations.nurse]
            channels = [{{ type = "webhook", url = "{receiver.url("/nurse")}" }}]
            [wards.ward-a.destinations.desk]
            channels = [{{ type = "webhook", url = "{receiver.url("/desk")}" }}]
            [wards.ward-a.escalation.high]
            steps = [{{ destination = "nurse", timeout_s = 60 }}]
            [wards.ward-a.escalation.low]
            steps = [{{ destination = "nurse", timeout_s = 60 }}]
            """
        )
    )
    return path


def desaturation(patient: str, device: str | None = None, seq: int = 1, t0: int | None = None) -> Vitals:
    """Eight normal SpO2 samples then eight at 84 % from ``device`` (default ``ox-{patient}``), ending 4 s ago."""
    start = (now_ms() - 20_000) if t0 is None else t0
    values = [97.0] * 8 + [84.0] * 8
    return Vitals(
        patient=patient,
        device=device or f"ox-{patient}",
        gateway="gw-01",
        signal=Signal.SPO2,
        seq=seq,
        samples=tuple(Sample(t=start + 1000 * i, v=v) for i, v in enumerate(values)),
    )


def topic_of(vitals: Vitals) -> str:
    return vitals_topic("ward-a", vitals.gateway, vitals.patient, vitals.device, "spo2")


def rules_paged(receiver: WebhookReceiver, patient: str) -> set[str]:
    """Rules of the pages the receiver got for ``patient`` (from each page's dedup key)."""
    return {r.body["dedup_key"].rsplit("/", 1)[1] for r in receiver.unique() if r.body["patient"] == patient}


@pytest.fixture
async def client(mosquitto: Mosquitto) -> AsyncIterator[MqttClient]:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "test-publisher", clean_start=True) as mqtt:
        await mqtt.wait_connected(TIMEOUT)
        yield mqtt


def oximeters(*patients: str, extra: dict[str, list[str]] | None = None) -> dict[str, Kit]:
    """Kits for the registry: each patient wears ``ox-{patient}`` (and the ``extra`` devices) through gw-01."""
    return {
        patient: ("gw-01", dict.fromkeys([f"ox-{patient}", *(extra or {}).get(patient, [])], "pulse_oximeter"))
        for patient in patients
    }


@contextlib.asynccontextmanager
async def running(
    config: AlertingConfig, source: ConditionSource | None = None, kits: dict[str, Kit] | None = None
) -> AsyncIterator[tuple[AlarmService, int]]:
    """The whole service in-process (``run``) until the block ends; yields the service and its API port.

    ``kits``: patients admitted with their devices before it starts (the registry refuses others' vitals).
    """
    if kits:
        await enrol_in_database(config, kits)
    async with running_service(config, source) as started:
        yield started


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def metrics_text(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()


class FaultySource(DelegatingSource):
    """The real engine, with faults injected: raises on ``bad_patient``'s vitals, or on every tick."""

    def __init__(self, engine: ConditionSource, bad_patient: str | None = None, failing_tick: bool = False) -> None:
        super().__init__(engine)
        self.bad_patient = bad_patient
        self.failing_tick = failing_tick

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        if msg.patient == self.bad_patient:
            raise OverflowError("cannot convert float infinity to integer")
        return self.engine.on_vitals(msg, ward)

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        if self.failing_tick:
            raise RuntimeError("tick exploded")
        return self.engine.tick(now_ms)


def in_process_config(tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto) -> AlertingConfig:
    config = load_alerting_config(write_config(tmp_path, receiver, mosquitto, 0))
    config.api.port = 0
    return config


# -- finding 1: contained failure --------------------------------------------------------------------


async def test_engine_failing_for_one_patient_raises_monitoring_impaired(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 2's aftermath: 7,347 tracebacks, no page, no technical alarm, /healthz "ok". Now: loud."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    source = FaultySource(default_source(load_rules(config.rules)), bad_patient="p-d05")
    async with running(config, source, oximeters("p-d05", "p-ok")) as (_, port):
        assert (await healthz(port))[0] == 200
        for seq in range(1, 4):
            await client.publish(topic_of(desaturation("p-d05", seq=seq)), encode(desaturation("p-d05", seq=seq)))
        await wait_for(
            lambda: "monitoring_impaired" in rules_paged(receiver, "p-d05"), TIMEOUT, what="monitoring-impaired page"
        )
        page = next(r.body for r in receiver.unique() if r.body["patient"] == "p-d05")
        assert page["priority"] == "high"
        assert "monitoring of p-d05 impaired" in page["text"]
        status, body = await healthz(port)
        assert status == 503
        assert body["status"] == "unhealthy"
        assert any("p-d05" in p and "OverflowError" in p for p in body["problems"])
        text = await metrics_text(port)
        assert "wardwatch_alerting_patients_impaired 1.0" in text
        assert 'wardwatch_alerting_failures_total{stage="engine"} 3.0' in text
        # every other patient is still watched
        await client.publish(topic_of(desaturation("p-ok")), encode(desaturation("p-ok")))
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-ok"), TIMEOUT, what="the other patient paged")


async def test_failing_engine_tick_raises_monitoring_impaired_for_the_ward(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """Finding 1: the engine tick raised and the process exited. Now the service stays up and says so."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    source = FaultySource(default_source(load_rules(config.rules)), failing_tick=True)
    async with running(config, source) as (_, port):
        await wait_for(
            lambda: "monitoring_impaired" in rules_paged(receiver, "all-patients"), TIMEOUT, what="ward-wide page"
        )
        status, body = await healthz(port)
        assert status == 503
        assert any("all-patients" in p and "RuntimeError" in p for p in body["problems"])
        source.failing_tick = False
        await wait_for(lambda: _status_is(port, 200), TIMEOUT, what="healthy again once the tick works (10 good ticks)")


async def _status_is(port: int, expected: int) -> bool:
    return (await healthz(port))[0] == expected


async def test_store_failure_keeps_the_alarm_and_pages_when_it_recovers(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """Finding 1: a failed commit lost the alarm ("skipped"). Now it is kept, retried, and reported meanwhile."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    config.guard.retry_s = 0.1
    async with running(config) as (service, port):
        real_commit = service.store.commit
        broken = True
        failures = 0

        def failing_commit(*args: Any, **kwargs: Any) -> Any:
            nonlocal failures
            if broken:
                failures += 1
                raise OSError("disk I/O error")
            return real_commit(*args, **kwargs)

        service.store.commit = failing_commit  # type: ignore[method-assign]
        service.on_conditions([_spo2_change("p-s1")])
        status, body = await healthz(port)
        assert status == 503
        assert any("alarm store fails" in p for p in body["problems"])
        await wait_for(lambda: failures >= 3, TIMEOUT, what="retries while the store fails")
        assert rules_paged(receiver, "p-s1") == set()
        broken = False
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-s1"), TIMEOUT, what="page after the retry")
        assert (await healthz(port))[0] == 200
        assert [e.action for e in service.store.audit_entries(patient="p-s1")].count("alarm_active") == 1


def _spo2_change(patient: str) -> ConditionChange:
    from wardwatch.core.schema import AlarmCategory, Priority

    return ConditionChange(
        patient=patient,
        ward="ward-a",
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=Priority.HIGH,
        active=True,
        t=now_ms(),
        value=84.0,
        text="SpO2 84 %",
    )


# -- finding 2: stored thresholds at load ------------------------------------------------------------


async def test_stored_override_that_no_longer_validates_is_rejected_at_load(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Before: one invalid stored override stopped the whole service at start. Now: ward default + alarm."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    with open_store(config) as store:
        from wardwatch.alerting.audit import AuditEntry

        entry = AuditEntry(t=now_ms(), actor="doc", action="thresholds_set", patient="p-x")
        store.set_thresholds("p-x", {"spo2_low": 20.0}, "doc", now_ms(), entry)
    async with running(config, kits=oximeters("p-x")) as (service, _):
        await wait_for(
            lambda: "thresholds_rejected" in rules_paged(receiver, "p-x"), TIMEOUT, what="thresholds-rejected page"
        )
        assert service.rules.patient_overrides("p-x") == {}
        await client.publish(topic_of(desaturation("p-x")), encode(desaturation("p-x")))
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-x"), TIMEOUT, what="page at the ward default")
        assert service.metrics.thresholds_rejected._value.get() == 1


async def test_stored_threshold_the_engine_cannot_use_is_never_silent(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 2: ``sensor_off_s = 1e306`` was saved; after a restart every message of p-d05 failed, silently.

    Whichever layer catches it (rejected at load once the rules bound it, or the engine failing on
    the patient's input), the patient gets a technical alarm.
    """
    config = in_process_config(tmp_path, receiver, mosquitto)
    with open_store(config) as store:
        store.set_thresholds("p-d05", {"sensor_off_s": 1e306}, "doc", now_ms(), _thresholds_entry("p-d05"))
    async with running(config):
        for seq in range(1, 4):
            await client.publish(topic_of(desaturation("p-d05", seq=seq)), encode(desaturation("p-d05", seq=seq)))
        await wait_for(
            lambda: bool(rules_paged(receiver, "p-d05") & {"monitoring_impaired", "thresholds_rejected"}),
            TIMEOUT,
            what="a technical alarm for p-d05",
        )


def _thresholds_entry(patient: str) -> Any:
    from wardwatch.alerting.audit import AuditEntry

    return AuditEntry(t=now_ms(), actor="doc", action="thresholds_set", patient=patient)


# -- finding 3: impossible times ----------------------------------------------------------------------


async def test_a_future_sample_neither_blinds_the_engine_nor_stays_silent(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 3: one sample stamped 100 years ahead, then SpO2 84 %: no page for minutes. Now: both paged."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    async with running(config, kits=oximeters("p-f", extra={"p-f": ["ox-1"]})):
        century = now_ms() + 100 * 365 * 86_400_000
        future = Vitals(
            patient="p-f",
            device="ox-1",
            gateway="gw-01",
            signal=Signal.SPO2,
            seq=1,
            samples=(Sample(t=century, v=97.0),),
        )
        await client.publish(topic_of(future), encode(future))
        await wait_for(lambda: "device_clock_wrong" in rules_paged(receiver, "p-f"), TIMEOUT, what="clock alarm")
        clock_page = next(r.body for r in receiver.unique() if r.body["patient"] == "p-f")
        assert "device clock wrong: ox-1" in clock_page["text"]
        await client.publish(topic_of(desaturation("p-f", seq=2)), encode(desaturation("p-f", seq=2)))
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-f"), TIMEOUT, what="desaturation page")


async def test_a_sample_a_few_minutes_ahead_does_not_hide_the_samples_after_it(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Within the 5-minute margin, but ahead of the server clock: still kept from the engine."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    async with running(config, kits=oximeters("p-a")) as (service, _):
        ahead = desaturation("p-a", seq=1, t0=now_ms() + 200_000)
        await client.publish(topic_of(ahead), encode(ahead))
        await wait_for(lambda: "device_clock_wrong" in rules_paged(receiver, "p-a"), TIMEOUT, what="clock alarm")
        await client.publish(topic_of(desaturation("p-a", seq=2)), encode(desaturation("p-a", seq=2)))
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-a"), TIMEOUT, what="desaturation page")
        # the sane message cleared the clock alarm's condition
        clock = [r for r in service.manager.open_alarms() if r.rule == "device_clock_wrong"]
        assert all(not r.condition_active for r in clock)


async def test_a_sample_at_t0_creates_no_phantom_device(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 3: ``t = 0`` created a device that paged "no data" with a 1970 start. Now: never reaches the engine."""
    config = in_process_config(tmp_path, receiver, mosquitto)
    engine = default_source(load_rules(config.rules))
    async with running(config, engine, oximeters("p-g", extra={"p-g": ["ox-ghost"]})):
        zero = Vitals(
            patient="p-g",
            device="ox-ghost",
            gateway="gw-01",
            signal=Signal.SPO2,
            seq=1,
            samples=(Sample(t=0, v=97.0),),
        )
        await client.publish(topic_of(zero), encode(zero))
        await wait_for(lambda: "device_clock_wrong" in rules_paged(receiver, "p-g"), TIMEOUT, what="clock alarm")
        page = next(r.body for r in receiver.unique() if r.body["patient"] == "p-g")
        assert "before 2020" in page["text"]
        from wardwatch.alerting.engine import Engine

        assert isinstance(engine, Engine)
        assert "p-g" not in engine.patients()
        assert "device_silent" not in rules_paged(receiver, "p-g")


# -- finding 1: several writers -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service_process(config: Path, port: int, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``wardwatch alerting run`` as a child process, ready once subscribed; killed at exit."""
    with log.open("ab") as out:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wardwatch.alerting.cli", "run", "--config", str(config), stdout=out, stderr=out
        )

    async def subscribed() -> bool:
        try:
            status, body = await healthz(port)
        except aiohttp.ClientError:
            return False
        return status == 200 and bool(body["inputs_ready"])

    try:
        await wait_for(subscribed, 30, what="alerting service subscribed")
        yield child
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def test_admin_user_add_while_the_service_runs_then_login_and_page(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 1: ``user add`` beside a running service, then a login: 500 (UNIQUE constraint failed: audit.seq)."""
    port = free_port()
    config = write_config(tmp_path, receiver, mosquitto, port)
    await enrol_in_database(load_alerting_config(config), oximeters("p-1"))
    async with service_process(config, port, tmp_path / "service.log") as child:
        added = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wardwatch.alerting.cli",
            "user",
            "add",
            "ann",
            "--role",
            "admin",
            "--config",
            str(config),
            env={**os.environ, "WW_ALERTING_PASSWORD": PASSWORD},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await added.communicate()
        assert added.returncode == 0, err
        async with aiohttp.ClientSession() as http:
            login = {"name": "ann", "password": PASSWORD}
            async with http.post(f"http://127.0.0.1:{port}/api/v1/login", json=login) as response:
                assert response.status == 200, await response.text()
        await client.publish(topic_of(desaturation("p-1")), encode(desaturation("p-1")))
        await wait_for(lambda: "spo2_low" in rules_paged(receiver, "p-1"), TIMEOUT, what="desaturation page")
        assert child.returncode is None
    with open_store(load_alerting_config(config)) as store:
        actions = [e.action for e in store.audit_entries() if e.actor != FIXTURE_ACTOR]  # admission: before start
        assert actions[:2] == ["user_added", "login"]
        assert store.check_audit().intact


WRITER = """
import sys, time
from pathlib import Path
from wardwatch.alerting.app import open_store
from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.settings import load_alerting_config

config = load_alerting_config(sys.argv[1])
actor, count, flag = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
with open_store(config) as store:
    for i in range(count):
        if i == count // 2:
            while not flag.exists():  # the second half once the test has alarms flowing
                time.sleep(0.005)
        store.audit(AuditEntry(t=i, actor=actor, action="admin_step", details={"i": i}))
"""


async def test_two_processes_append_1000_audit_entries_each_while_alarms_flow(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Finding 1: the store cached the chain's head. Now: chain intact, no error, no lost alarm."""
    port = free_port()
    config = write_config(tmp_path, receiver, mosquitto, port)
    patients = [f"p-{i:02d}" for i in range(20)]
    flag = tmp_path / "alarms-flowing"
    await enrol_in_database(load_alerting_config(config), oximeters(*patients))
    async with service_process(config, port, tmp_path / "service.log") as child:
        writers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                str(config),
                name,
                "1000",
                str(flag),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for name in ("admin-1", "admin-2")
        ]

        def admin_entries() -> int:
            with contextlib.closing(sqlite3.connect(tmp_path / "alerting.db")) as db:
                return int(db.execute("SELECT COUNT(*) FROM audit WHERE actor LIKE 'admin-%'").fetchone()[0])

        await wait_for(lambda: admin_entries() > 0, 30, what="the writers writing")
        for patient in patients[:10]:  # while both write their first halves
            await client.publish(topic_of(desaturation(patient)), encode(desaturation(patient)))
        await wait_for(lambda: admin_entries() == 1000, 30, what="both writers half way")
        await wait_for(lambda: any("spo2_low" in rules_paged(receiver, p) for p in patients), TIMEOUT, what="a page")
        flag.touch()  # second halves, while the other ten alarms are raised and paged
        for patient in patients[10:]:
            await client.publish(topic_of(desaturation(patient)), encode(desaturation(patient)))
        results = [await w.communicate() for w in writers]
        assert [w.returncode for w in writers] == [0, 0], [err.decode()[-2000:] for _, err in results]
        await wait_for(
            lambda: all("spo2_low" in rules_paged(receiver, p) for p in patients), TIMEOUT, what="every alarm paged"
        )
        assert child.returncode is None
        status, body = await healthz(port)
        assert status == 200, body
    with open_store(load_alerting_config(config)) as store:
        entries = []
        after = 0
        while batch := store.audit_entries(after_seq=after, limit=5000):
            entries += batch
            after = batch[-1].seq
        actors = [e.actor for e in entries]
        assert actors.count("admin-1") == 1000
        assert actors.count("admin-2") == 1000
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        raised = {e.patient for e in entries if e.action == "alarm_active"}
        assert raised >= set(patients)
        admin = [e.seq for e in entries if e.actor.startswith("admin-")]
        service_writes = [e.seq for e in entries if e.actor == "system" and admin[0] < e.seq < admin[-1]]
        assert service_writes, "the service wrote nothing while the two writers ran: no concurrency tested"
        check = store.check_audit()
        assert check.intact, check.problem


async def test_a_crash_while_recording_a_delivery_does_not_end_the_page(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Before: a store error while recording a delivery attempt ended that page's delivery until a restart."""
    from wardwatch.alerting.metrics import AlertingMetrics
    from wardwatch.alerting.paging import Pager, build_channel
    from wardwatch.alerting.settings import PagingConfig
    from wardwatch.alerting.store import Store
    from wardwatch.core.schema import Page, Priority

    fast = PagingConfig(attempts_per_channel=1, backoff_min_s=0.01, backoff_max_s=0.05, round_backoff_max_s=0.1)
    page = Page(
        page_id="a-1.r0.s0",
        alarm_id="a-1",
        dedup_key="ward-a/p-1/spo2_low",
        patient="p-1",
        ward="ward-a",
        priority=Priority.HIGH,
        destination="nurse",
        step=0,
        t=now_ms(),
        text="SpO2 84 %",
    )
    metrics = AlertingMetrics()
    receiver.fail_status = 503
    with Store(tmp_path / "alerting.db") as store:
        real_mark_attempt = store.mark_attempt

        def locked(page_id: str, attempts: int, error: str) -> None:
            receiver.fail_status = None  # the next try gets through
            raise OSError("database is locked")

        store.mark_attempt = locked  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as session:
            from wardwatch.alerting.settings import WebhookChannelConfig

            channel = build_channel(
                0, WebhookChannelConfig(url=receiver.url("/nurse")), session=session, publisher=None
            )
            async with Pager(store, {("ward-a", "nurse"): [channel]}, fast, metrics=metrics) as pager:
                store.commit(pages=[page])
                pager.submit([page])
                await wait_for(lambda: [e.status for e in store.outbox()] == ["delivered"], TIMEOUT, what="delivered")
        store.mark_attempt = real_mark_attempt  # type: ignore[method-assign]
    assert [r.path for r in receiver.unique()] == ["/nurse"]
    assert metrics.failures.labels(stage="paging")._value.get() == 1


async def test_thresholds_the_engine_cannot_apply_are_neither_saved_nor_audited(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """Finding 2: the PUT returned 500 but was saved (and broke the patient after a restart). Tried first now."""
    from wardwatch.alerting.store import Store
    from wardwatch.core.errors import ConfigError

    config = in_process_config(tmp_path, receiver, mosquitto)
    engine = default_source(load_rules(config.rules))
    applied: list[RuleSet] = []

    def engine_refusing_p9(rules: RuleSet) -> None:
        if rules.patient_overrides("p-9"):
            raise OverflowError("cannot convert float infinity to integer")
        applied.append(rules)
        engine.set_rules(rules)

    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            service.rules_hooks.append(engine_refusing_p9)
            with pytest.raises(ConfigError, match="engine cannot apply"):
                # In range (bounds are checked first), but this engine refuses it.
                service.set_thresholds("p-9", {"sensor_off_s": 120}, "doc", "test")
            assert store.thresholds("p-9") is None
            assert [e.action for e in store.audit_entries()] == []
            assert service.rules.patient_overrides("p-9") == {}
            assert applied[-1].patient_overrides("p-9") == {}  # the engine got the old rules back
            service.set_thresholds("p-1", {"spo2_low": 88}, "doc", "target 88-92 %")
            assert store.thresholds("p-1") == {"spo2_low": 88}
            assert [e.action for e in store.audit_entries()] == ["thresholds_set"]


async def test_an_engine_failing_for_everyone_raises_a_few_alarms_not_a_flood(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """Five patients get an alarm of their own; the rest are counted in one alarm for the ward."""
    from wardwatch.alerting.guard import FailureTracker
    from wardwatch.alerting.store import Store

    config = in_process_config(tmp_path, receiver, mosquitto)
    with Store(config.database) as store:
        async with AlarmService(config, store) as service:
            tracker = FailureTracker(service)
            patients = [f"p-{i}" for i in range(8)]
            for _ in range(config.guard.failures_before_impaired):
                for patient in patients:
                    tracker.failed("ward-a", patient, "engine", OverflowError("boom"))
            impaired = {r.patient for r in service.manager.open_alarms() if r.rule == "monitoring_impaired"}
            assert impaired == {*patients[:5], "impaired-patients"}
            assert len(tracker.impaired) == 8
            assert "monitoring impaired for 8 patient(s)" in service.health()[0]
            for _ in range(config.guard.successes_before_recovered):
                for patient in patients:
                    tracker.succeeded("ward-a", patient)
            assert service.health() == []
            still = [r for r in service.manager.open_alarms() if r.rule == "monitoring_impaired"]
            assert all(not r.condition_active for r in still)


async def test_monitoring_impaired_raised_before_a_restart_clears_when_input_works_again(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    config = in_process_config(tmp_path, receiver, mosquitto)
    faulty = FaultySource(default_source(load_rules(config.rules)), bad_patient="p-r")
    async with running(config, faulty, oximeters("p-r")) as (service, port):
        for seq in range(1, 4):
            await client.publish(topic_of(desaturation("p-r", seq=seq)), encode(desaturation("p-r", seq=seq)))
        await wait_for(lambda: "monitoring_impaired" in rules_paged(receiver, "p-r"), TIMEOUT, what="impaired page")
    async with running(config) as (service, port):  # fixed (e.g. a new version), restarted
        assert (await healthz(port))[0] == 503  # still impaired until its input is seen to work
        for seq in range(10, 10 + config.guard.successes_before_recovered):
            normal = desaturation("p-r", seq=seq, t0=now_ms() - 60_000 + 1000 * seq)
            normal = msgspec.structs.replace(normal, samples=normal.samples[:8])  # the 97 % part only
            await client.publish(topic_of(normal), encode(normal))

        def cleared() -> bool:
            open_ = [r for r in service.manager.open_alarms() if r.rule == "monitoring_impaired"]
            return all(not r.condition_active for r in open_)

        await wait_for(cleared, TIMEOUT, what="monitoring-impaired condition cleared")
        assert (await healthz(port))[0] == 200
