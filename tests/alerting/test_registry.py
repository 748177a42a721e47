"""The registry in the running alerting service: real broker, real engine, driven through the HTTP API only.

Each test starts ``run`` in-process with a real mosquitto and a webhook receiver per destination;
patients are admitted, kits assigned, devices swapped and patients discharged through
``/api/v1/registry``. Spoofed vitals (issue #12's three spoofed pages) must page nobody, be
dead-lettered, counted by reason, and raise one operator notice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.alerting.serving import FAST_PAGING, WARD, Running, running, service_config, webhook_ward

from wardwatch.alerting.app import open_store
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.registry.identity import (
    Identity,
    IdentityCipher,
    IdentityKeyError,
    create_key_file,
)
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.testing import WebhookReceiver, admit_with_kit
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.registry import GatewayKit, WardManifest, decode_document, kit_topic, manifest_topic
from wardwatch.core.schema import (
    AlarmCategory,
    DataGap,
    DeadLetter,
    DeviceLink,
    DeviceRole,
    GatewayStatus,
    Priority,
    Sample,
    Series,
    Signal,
    Vitals,
    VitalsBatch,
    decode,
    encode,
)
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import (
    AVAILABILITY_OFFLINE,
    availability_topic,
    deadletter_topic,
    gap_topic,
    gateway_status_topic,
    vitals_batch_topic,
    vitals_topic,
)
from wardwatch.core.waiting import wait_for

TIMEOUT = 15.0
NAME = "Marjorie Quintessa Hollowbrook"  # a name nothing else in the database could contain by chance


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def spo2(patient: str, device: str, gateway: str, values: list[float], t0: int | None = None, seq: int = 1) -> Vitals:
    """SpO2 samples at 1 Hz from ``t0`` (default: ending now)."""
    start = now_ms() - 1000 * len(values) if t0 is None else t0
    return Vitals(
        patient=patient,
        device=device,
        gateway=gateway,
        signal=Signal.SPO2,
        seq=seq,
        samples=tuple(Sample(t=start + 1000 * i, v=v) for i, v in enumerate(values)),
    )


LOW = [84.0] * 4  # what the engine pages at once (spo2_delay_s = 0); starts at a binding's start: 3 s ahead at most


def config_for(tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto) -> AlertingConfig:
    ward = webhook_ward(receiver, ("nurse", "operator", "desk"), failsafe="desk", operator="operator")
    return service_config(tmp_path, mosquitto, ward, paging=FAST_PAGING)


@pytest.fixture
async def client(mosquitto: Mosquitto) -> AsyncIterator[MqttClient]:
    """A gateway-like publisher that also reads the service's dead letters."""
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "test-gateway", clean_start=True) as mqtt:
        await mqtt.wait_connected(TIMEOUT)
        await mqtt.subscribe(deadletter_topic("alerting", "alerting-1"))
        yield mqtt


def pages(receiver: WebhookReceiver, patient: str, destination: str = "/nurse") -> list[dict[str, Any]]:
    return [r.body for r in receiver.unique(destination) if r.body["patient"] == patient]


async def publish(client: MqttClient, vitals: Vitals, *, topic_patient: str | None = None) -> None:
    topic = vitals_topic(WARD, vitals.gateway, topic_patient or vitals.patient, vitals.device, "spo2")
    await client.publish(topic, encode(vitals))


async def dead_letters(client: MqttClient, count: int) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    while len(letters) < count:
        message = await asyncio.wait_for(client.get_message(), TIMEOUT)
        letter = decode(message.payload)
        assert isinstance(letter, DeadLetter)
        letters.append(letter)
    return letters


async def setup_ward(api: Running) -> tuple[str, str, int]:
    """gw-01 and gw-02 registered; patient A wears ox-a on gw-01, B wears ox-b on gw-02: (A, B, A's kit start)."""
    for gateway in ("gw-01", "gw-02"):
        body = {"gateway": gateway, "capacity": 4, "home": f"home of {gateway}", "reason": "new home gateway"}
        await api.ok("charge", "POST", "/api/v1/registry/gateways", body)
    a = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
    b = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
    since = {}
    for patient, gateway, device in ((a, "gw-01", "ox-a"), (b, "gw-02", "ox-b")):
        kit = {"gateway": gateway, "devices": [{"id": device, "role": "pulse_oximeter"}], "reason": "kit delivered"}
        answer = await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/kit", kit)
        since[patient] = answer["bindings"][0]["since"]
    return a, b, since[a]


async def test_spoofed_vitals_page_nobody_and_are_dead_lettered_counted_and_noticed_once(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Issue #12: gw-01's credentials paged for (a) nobody's patient, (b) gw-02's, (c) one named in the payload."""
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        a, b, since = await setup_ward(api)
        low = [70.0] * 8
        await publish(client, spo2("p-nobody", "ox-a", "gw-01", low))  # (a) a patient the registry never issued
        await publish(client, spo2(b, "ox-b", "gw-01", low))  # (b) another gateway's patient and device
        await publish(client, spo2(b, "ox-a", "gw-01", low), topic_patient=a)  # (c) the payload names B, topic A
        letters = await dead_letters(client, 3)
        assert [letter.reason.split(")")[0] for letter in letters] == [
            "provenance refused (unknown_patient",
            "provenance refused (unknown_device",
            "provenance refused (topic_mismatch",
        ]
        # the same gateway's real patient still pages: the path works, and every spoof before it was handled
        await publish(client, spo2(a, "ox-a", "gw-01", LOW, t0=since + 1, seq=2))
        await wait_for(lambda: bool(pages(receiver, a)), TIMEOUT, what="the real patient's page")
        assert pages(receiver, "p-nobody") == []
        assert pages(receiver, b) == []
        assert [p["text"] for p in pages(receiver, a)] == [pages(receiver, a)[0]["text"]]  # one page, for 84 %
        assert "84" in pages(receiver, a)[0]["text"]
        metrics = await api.metrics()
        for reason in ("unknown_patient", "unknown_device", "topic_mismatch"):
            assert f'wardwatch_alerting_provenance_refused_total{{reason="{reason}"}} 1.0' in metrics
        notices = [r for r in api.service.store.alarms(ward=WARD) if r.rule == "provenance_refused"]
        assert [(r.patient, str(r.category)) for r in notices] == [("gw-01", "technical")]  # one, about the gateway
        await wait_for(lambda: bool(pages(receiver, "gw-01", "/operator")), TIMEOUT, what="the operator notice")
        assert pages(receiver, "gw-01", "/nurse") == []  # never a clinical page


async def test_admit_assign_page_swap_and_discharge_through_the_api_alone(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        gateway = {"gateway": "gw-07", "capacity": 2, "reason": "installed at the patient's home"}
        await api.ok("charge", "POST", "/api/v1/registry/gateways", gateway)
        admitted = await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "virtual ward referral"})
        patient = admitted["patient"]
        assert admitted["status"] == "admitted"
        kit = {"gateway": "gw-07", "devices": [{"id": "ox-1", "role": "pulse_oximeter"}], "reason": "kit delivered"}
        since = (await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/kit", kit))["bindings"][0][
            "since"
        ]
        await publish(client, spo2(patient, "ox-1", "gw-07", LOW, t0=since + 1))
        await wait_for(lambda: bool(pages(receiver, patient)), TIMEOUT, what="the desaturation page")
        alarm_id = pages(receiver, patient)[0]["alarm_id"]

        swap = {"old_device": "ox-1", "new": {"id": "ox-2", "role": "pulse_oximeter"}, "reason": "battery failed"}
        swapped = await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/swap", swap)
        by_device = {b["device"]: b for b in swapped["bindings"]}
        assert by_device["ox-1"]["until"] is not None
        assert by_device["ox-2"]["until"] is None
        swap_t = by_device["ox-1"]["until"]
        await publish(client, spo2(patient, "ox-1", "gw-07", [96.0], t0=swap_t, seq=3))  # old device, from the swap
        (refused,) = await dead_letters(client, 1)
        assert "not_bound_at_time" in refused.reason
        await publish(client, spo2(patient, "ox-1", "gw-07", [96.0], t0=swap_t - 1, seq=4))  # late, taken before
        await publish(client, spo2(patient, "ox-2", "gw-07", [95.0], t0=swap_t, seq=1))  # the new device
        barrier = spo2(patient, "ox-1", "gw-07", [96.0], t0=swap_t + 1, seq=5)
        await publish(client, barrier)
        (letter,) = await dead_letters(client, 1)
        assert letter.payload == encode(barrier)  # the two before it were accepted (dead letters come in order)

        discharged = await api.ok(
            "charge", "POST", f"/api/v1/registry/patients/{patient}/discharge", {"reason": "recovered"}
        )
        assert discharged["status"] == "discharged"
        assert api.service.store.alarm(alarm_id) is not None
        assert str(api.service.store.alarm(alarm_id).state) == "resolved"  # type: ignore[union-attr]
        paged = len(pages(receiver, patient))
        await publish(client, spo2(patient, "ox-2", "gw-07", [70.0] * 4, t0=discharged["discharged_at"], seq=2))
        (after,) = await dead_letters(client, 1)
        assert "not_bound_at_time" in after.reason
        assert [r for r in api.service.manager.open_alarms() if r.patient == patient] == []
        assert len(pages(receiver, patient)) == paged
        freed = await api.ok("viewer", "GET", "/api/v1/registry/gateways")
        assert [(g["gateway"], g["bound"]) for g in freed["gateways"]] == [("gw-07", 0)]
        entries = await api.ok("charge", "GET", f"/api/v1/audit?patient={patient}")
        steps = [(e["action"], e["actor"], e["reason"]) for e in entries["entries"] if e["actor"] == "charge"]
        assert steps == [
            ("patient_admitted", "charge", "virtual ward referral"),
            ("kit_assigned", "charge", "kit delivered"),
            ("device_swapped", "charge", "battery failed"),
            ("patient_discharged", "charge", "recovered"),
            ("resolve", "charge", "discharged"),  # its open alarm, right after
        ]


async def test_identity_is_encrypted_returned_to_clinical_roles_only_and_every_read_audited(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    identity = {"name": NAME, "date_of_birth": "1941-03-09", "hospital_number": "RX4401977", "phone": "01632 960 983"}
    async with running(config) as api:
        admitted = await api.ok(
            "charge", "POST", "/api/v1/registry/patients", {"reason": "referral", "identity": identity}
        )
        patient = admitted["patient"]
        assert admitted["has_identity"] is True
        assert NAME not in str(admitted)
        path = f"/api/v1/registry/patients/{patient}/identity"
        assert (await api.ok("nurse", "GET", path))["identity"] == identity
        for user in ("viewer", "root"):
            status, answer = await api.call(user, "GET", path)
            assert status == 403, answer
        reads = [
            e for e in (await api.ok("charge", "GET", "/api/v1/audit"))["entries"] if e["action"] == "identity_read"
        ]
        assert [(e["actor"], e["patient"]) for e in reads] == [("nurse", patient)]
        assert NAME not in str(await api.ok("charge", "GET", "/api/v1/audit"))
        assert NAME not in await api.metrics()
    stored = database_bytes(tmp_path)
    assert NAME.encode() not in stored
    assert b"RX4401977" not in stored
    assert stored  # the database (and its WAL) was read


def database_bytes(directory: Path) -> bytes:
    """The alerting database and its WAL, as bytes on disk."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("alerting.db*")) if p.is_file())


def test_a_missing_or_wrong_identity_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityKeyError, match="registry-key"):
        IdentityCipher(tmp_path / "absent.key")
    create_key_file(tmp_path / "one.key")
    create_key_file(tmp_path / "other.key")
    sealed = IdentityCipher(tmp_path / "one.key").encrypt("p-1", Identity(name=NAME))
    with pytest.raises(IdentityKeyError, match="wrong key file"):
        IdentityCipher(tmp_path / "other.key").decrypt("p-1", sealed)
    with pytest.raises(IdentityKeyError, match="wrong key file"):  # bound to its patient: no copying rows
        IdentityCipher(tmp_path / "one.key").decrypt("p-2", sealed)
    assert (tmp_path / "one.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(IdentityKeyError, match="exists"):
        create_key_file(tmp_path / "one.key")


async def test_a_kit_over_the_gateways_capacity_is_refused_with_409(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-1", "capacity": 3, "reason": "r"})
        one = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        two = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        pair = [{"id": "hr-1", "role": "heart_rate_strap"}, {"id": "ox-1", "role": "pulse_oximeter"}]
        await api.ok(
            "charge",
            "POST",
            f"/api/v1/registry/patients/{one}/kit",
            {"gateway": "gw-1", "devices": pair, "reason": "r"},
        )
        second = [{"id": "hr-2", "role": "heart_rate_strap"}, {"id": "ox-2", "role": "pulse_oximeter"}]
        status, answer = await api.call(
            "charge",
            "POST",
            f"/api/v1/registry/patients/{two}/kit",
            {"gateway": "gw-1", "devices": second, "reason": "r"},
        )
        assert status == 409
        assert "gw-1 over capacity: 2 continuous device(s) bound + 2 new > 3 connection slots" in answer["error"]
        assert (await api.ok("viewer", "GET", f"/api/v1/registry/patients/{two}"))["bindings"] == []
        kit = await api.ok("viewer", "GET", "/api/v1/registry/gateways/gw-1/kit")
        assert sorted(d["id"] for d in kit["devices"]) == ["hr-1", "ox-1"]
        status, answer = await api.call("nurse", "POST", f"/api/v1/registry/patients/{two}/discharge", {"reason": "r"})
        assert status == 403  # nurses care for patients; admitting and discharging is the charge nurse's


async def test_a_cuff_and_a_thermometer_join_a_kit_through_the_api_without_taking_connection_slots(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    """Every wearable type of the profile table is a kit role (the API once took straps and oximeters only);
    spot-check devices sleep between readings and hold no slot: a full gateway still takes them."""
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-1", "capacity": 1, "reason": "r"})
        patient = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        devices = [
            {"id": "ox-1", "role": "pulse_oximeter"},
            {"id": "bpc-1", "role": "blood_pressure_cuff", "name": "WW-BPC-bpc-1"},
            {"id": "thm-1", "role": "thermometer", "name": "WW-THM-thm-1"},
        ]
        body = {"gateway": "gw-1", "devices": devices, "reason": "kit delivered"}
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/kit", body)
        kit = await api.ok("viewer", "GET", "/api/v1/registry/gateways/gw-1/kit")
        assert {d["id"]: d["role"] for d in kit["devices"]} == {
            "ox-1": "pulse_oximeter",
            "bpc-1": "blood_pressure_cuff",
            "thm-1": "thermometer",
        }
        status, answer = await api.call(
            "charge",
            "POST",
            f"/api/v1/registry/patients/{patient}/kit",
            {"gateway": "gw-1", "devices": [{"id": "x-1", "role": "scales"}], "reason": "r"},
        )
        assert status == 400, answer


async def retained(mosquitto: Mosquitto, topic: str) -> bytes:
    """The retained message on ``topic``, read by a fresh subscriber."""
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, f"reader-{time.monotonic_ns()}", clean_start=True) as reader:
        await reader.wait_connected(TIMEOUT)
        await reader.subscribe(topic)
        message = await asyncio.wait_for(reader.get_message(), TIMEOUT)
        assert message.retain
        return message.payload


async def test_retained_kit_documents_on_the_broker_match_the_registry_after_each_change(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        revisions: list[int] = []

        async def check() -> GatewayKit:
            kit = decode_document(await retained(mosquitto, kit_topic(WARD, "gw-5")))
            manifest = decode_document(await retained(mosquitto, manifest_topic(WARD)))
            assert isinstance(kit, GatewayKit)
            assert isinstance(manifest, WardManifest)
            assert kit == api.service.registry.kit(WARD, "gw-5")
            assert manifest.gateways == {"gw-5": kit.revision}
            assert not revisions or kit.revision > revisions[-1]
            revisions.append(kit.revision)
            return kit

        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-5", "capacity": 2, "reason": "r"})
        assert (await check()).devices == ()
        patient = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        device = {"id": "hr-9", "role": "heart_rate_strap", "name": "Polar H10 9"}
        await api.ok(
            "charge",
            "POST",
            f"/api/v1/registry/patients/{patient}/kit",
            {"gateway": "gw-5", "devices": [device], "reason": "r"},
        )
        kit = await check()
        assert [(d.id, d.patient, d.name, d.until) for d in kit.devices] == [("hr-9", patient, "Polar H10 9", None)]
        swap = {"old_device": "hr-9", "new": {"id": "hr-10", "role": "heart_rate_strap"}, "reason": "r"}
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/swap", swap)
        kit = await check()
        assert [(d.id, d.until is None) for d in kit.devices] == [("hr-10", True), ("hr-9", False)]  # ended kept
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/discharge", {"reason": "r"})
        kit = await check()
        assert kit.current_devices() == ()
        assert len(kit.devices) == 2  # within the retention window: late samples are judged at their time


async def test_alarms_a_crash_left_open_at_discharge_are_resolved_at_the_next_start(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    with open_store(config) as store:
        async with AlarmService(config, store) as service:
            await admit_with_kit(service.registry, "p-c1", "gw-1", {"ox-c1": "pulse_oximeter"})
            low = ConditionChange(
                "p-c1", WARD, "spo2_low", AlarmCategory.PHYSIOLOGICAL, Priority.HIGH, True, 1, 84.0, ""
            )
            service.on_conditions([low])
            with store.transaction() as (db, _):  # the discharge committed; the process died before the alarms
                db.execute("UPDATE reg_patients SET status = 'discharged' WHERE patient = 'p-c1'")
    with open_store(config) as store:
        async with AlarmService(config, store) as service:
            assert [r.patient for r in service.manager.open_alarms()] == ["p-c1"]
            await service.registry.publish_all()  # what the service does at start
            assert service.manager.open_alarms() == []
            resolved = [e for e in store.audit_entries(patient="p-c1") if e.action == "resolve"]
            assert [(e.actor, e.reason) for e in resolved] == [("system", "discharged")]


async def test_a_data_gap_naming_a_patient_nobody_admitted_is_refused(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-01", "capacity": 2, "reason": "r"})
        t = now_ms()
        gap = DataGap(gateway="gw-01", t=t, dropped=60, first_t=t - 60_000, last_t=t - 1000, patient="p-nobody")
        await client.publish(gap_topic(WARD, "gw-01"), encode(gap))
        (letter,) = await dead_letters(client, 1)
        assert "unknown_patient" in letter.reason
        assert [r.rule for r in api.service.manager.open_alarms()] == ["provenance_refused"]  # the operator's only


async def test_bindings_ended_longer_than_the_retention_ago_leave_the_published_kit(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    config.registry.retention_s = 2.0
    async with running(config) as api:
        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-5", "capacity": 2, "reason": "r"})
        patient = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        strap = {"id": "hr-1", "role": "heart_rate_strap"}
        await api.ok(
            "charge",
            "POST",
            f"/api/v1/registry/patients/{patient}/kit",
            {"gateway": "gw-5", "devices": [strap], "reason": "r"},
        )
        swap = {"old_device": "hr-1", "new": {"id": "hr-2", "role": "heart_rate_strap"}, "reason": "r"}
        bindings = (await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/swap", swap))["bindings"]
        ended = next(b["until"] for b in bindings if b["device"] == "hr-1")
        before = decode_document(await retained(mosquitto, kit_topic(WARD, "gw-5")))
        assert isinstance(before, GatewayKit)
        assert sorted(d.id for d in before.devices) == ["hr-1", "hr-2"]
        assert await api.service.registry.expire_ended() == []  # still within the retention
        await wait_for(lambda: now_ms() > ended + 2000, TIMEOUT, what="the retention to pass")
        assert await api.service.registry.expire_ended() == ["gw-5"]
        after = decode_document(await retained(mosquitto, kit_topic(WARD, "gw-5")))
        assert isinstance(after, GatewayKit)
        assert [d.id for d in after.devices] == ["hr-2"]
        assert after.revision > before.revision
        assert await api.service.registry.expire_ended() == []


async def test_a_bound_device_with_a_wrong_clock_is_the_nurses_alarm_not_a_provenance_notice(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """Its samples fall outside the binding's interval; the time gate, not the registry, must speak."""
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        await api.ok("charge", "POST", "/api/v1/registry/gateways", {"gateway": "gw-01", "capacity": 2, "reason": "r"})
        patient = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "r"}))["patient"]
        kit = {"gateway": "gw-01", "devices": [{"id": "ox-1", "role": "pulse_oximeter"}], "reason": "r"}
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/kit", kit)
        await publish(client, spo2(patient, "ox-1", "gw-01", [97.0], t0=1_000))  # a clock never set: 1970
        await wait_for(lambda: bool(pages(receiver, patient)), TIMEOUT, what="the clock alarm")
        (page,) = pages(receiver, patient)
        assert page["dedup_key"] == f"{WARD}/{patient}/device_clock_wrong"
        assert "before 2020" in page["text"]
        assert [r.rule for r in api.service.manager.open_alarms()] == ["device_clock_wrong"]


async def test_a_gateway_status_binds_only_the_devices_the_registry_bound_through_that_gateway(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """A status names patients: gw-01 claiming B (gw-02's) must not move B's gateway alarms to gw-01."""
    config = config_for(tmp_path, receiver, mosquitto)
    (tmp_path / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\ngateway_offline_delay_s = 0.0\n")

    def status(gateway: str, links: list[tuple[str, str]], topic_gateway: str | None = None) -> tuple[str, bytes]:
        devices = tuple(
            DeviceLink(device=d, patient=p, role=DeviceRole.PULSE_OXIMETER, connected=True) for d, p in links
        )
        message = GatewayStatus(gateway=gateway, ward=WARD, t=now_ms(), uptime_s=60.0, devices=devices)
        return gateway_status_topic(WARD, topic_gateway or gateway), encode(message)

    def offline_for(gateway: str, patient: str) -> bool:
        return any(a.rule == "gateway_offline" and a.patient == patient for a in api.service.manager.open_alarms())

    async with running(config) as api:
        a, b, _ = await setup_ward(api)
        await client.publish(*status("gw-02", [("ox-b", b)]))
        await client.publish(*status("gw-01", [("ox-a", a), ("ox-b", b), ("ox-z", "p-nobody")]))
        await client.publish(*status("gw-02", [("ox-a", a)], topic_gateway="gw-01"))  # another gateway's name
        letters = await dead_letters(client, 2)
        assert "gateway status links ox-b of " in letters[0].reason
        assert "ox-z of p-nobody (unknown_patient)" in letters[0].reason
        assert "provenance refused (topic_mismatch)" in letters[1].reason
        await client.publish(availability_topic(WARD, "gw-01"), AVAILABILITY_OFFLINE)
        await wait_for(lambda: offline_for("gw-01", a), TIMEOUT, what="gateway_offline for A")
        assert not offline_for("gw-01", b)  # B is not gw-01's
        await client.publish(availability_topic(WARD, "gw-02"), AVAILABILITY_OFFLINE)
        await wait_for(lambda: offline_for("gw-02", b), TIMEOUT, what="gateway_offline for B, still gw-02's")
        assert not [r for r in api.service.manager.open_alarms() if r.patient == "p-nobody"]


async def test_a_vitals_batch_is_judged_sample_by_sample_and_a_spoofed_one_is_refused_whole(
    tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, client: MqttClient
) -> None:
    """A gateway's vitals_batch: each series is judged like a single message, each sample at its own time."""
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        a, b, since = await setup_ward(api)
        low = spo2(a, "ox-a", "gw-01", LOW, t0=since + 1, seq=2).samples
        before_kit = Sample(t=since - 60_000, v=84.0)  # A's oximeter was not bound yet: refused, the rest kept
        pulse_before_kit = Series(signal=Signal.PULSE_RATE, seq=3, samples=(Sample(t=since - 30_000, v=80.0),))
        batch = VitalsBatch(
            patient=a,
            device="ox-a",
            gateway="gw-01",
            series=(Series(signal=Signal.SPO2, seq=2, samples=(before_kit, *low)), pulse_before_kit),
        )
        spoofed = msgspec.structs.replace(batch, patient=b, series=(Series(signal=Signal.SPO2, seq=4, samples=low),))
        topic = vitals_batch_topic(WARD, "gw-01", a, "ox-a")
        await client.publish(topic, encode(spoofed))  # the payload names B, the topic A: refused whole
        await client.publish(topic, encode(batch))
        letters = await dead_letters(client, 2)
        assert letters[0].topic == topic
        assert "do not match its topic" in letters[0].reason
        assert letters[1].reason.startswith("provenance refused (")  # the pulse-rate series, all before the kit
        assert letters[1].topic == vitals_topic(WARD, "gw-01", a, "ox-a", "pulse_rate")
        await wait_for(lambda: bool(pages(receiver, a)), TIMEOUT, what="A's page from the batch's bound samples")
        assert "84" in pages(receiver, a)[0]["text"]
        assert pages(receiver, b) == []
        metrics = await api.metrics()
        refused = [
            line for line in metrics.splitlines() if line.startswith("wardwatch_alerting_provenance_refused_total{")
        ]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in refused) == 2  # the SpO2 sample and the pulse rate
