"""A nurse's manual observations through the running service's API: bounds, roles, audit, history, NEWS2.

The service runs in-process (``run``) with a real mosquitto and the real engine; patients are admitted
through the registry and observations entered and read through ``/api/v1/patients/{patient}/...``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from tests.alerting.serving import (
    FAST_PAGING,
    NO_SPO2_DELAY,
    WARD,
    Running,
    running,
    service_config,
    webhook_ward,
)

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.engine.news2 import NurseObservation
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.observations.records import MAX_AGE_MS
from wardwatch.alerting.rules import load_rules
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import News2Score, decode
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import SCORE, score_topic, ward_filter
from wardwatch.core.waiting import wait_for

TIMEOUT = 15.0
FULL_SET = {
    "respiration": 22,
    "spo2": 93,
    "supplemental_o2": False,
    "systolic": 105,
    "pulse": 115,
    "consciousness": "A",
    "temperature": 38.5,
}  # 2 + 2 + 0 + 1 + 2 + 0 + 1 = NEWS2 8


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def config_for(tmp_path: Path, receiver: WebhookReceiver, mosquitto: Mosquitto, rules: str = "") -> AlertingConfig:
    ward = webhook_ward(receiver)
    return service_config(tmp_path, mosquitto, ward, rules=rules or NO_SPO2_DELAY, paging=FAST_PAGING)


async def admit(api: Running) -> str:
    patient: str = (await api.ok("charge", "POST", "/api/v1/registry/patients", {"reason": "referred"}))["patient"]
    return patient


async def test_a_full_set_of_observations_is_stored_audited_scored_and_pages(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit(api)
        taken = now_ms() - 60_000
        body = {"taken_at": taken, **FULL_SET, "note": "after the video call"}
        stored = await api.ok("nurse", "POST", f"/api/v1/patients/{patient}/observations", body)
        assert stored["recorded_by"] == "nurse"
        assert (stored["respiration"], stored["consciousness"], stored["spo2_scale"]) == (22, "A", 1)
        # the engine scored a full NEWS2 of 8: an emergency, paged to the nurse
        score = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/news2")
        assert (score["score"], score["full"], score["missing"]) == (8, True, [])
        assert score["parameters"]["respiration"] == {"points": 2, "value": 22, "t": taken, "source": "nurse"}
        await wait_for(lambda: bool(receiver.unique("/nurse")), TIMEOUT, what="the NEWS2 page")
        paged = [r.body for r in receiver.unique("/nurse") if r.body["patient"] == patient]
        assert paged[0]["text"].startswith("NEWS2 8: ")
        alarms = (await api.ok("viewer", "GET", f"/api/v1/alarms?patient={patient}"))["alarms"]
        assert [a["rule"] for a in alarms] == ["news2_emergency"]
        # history, newest first, and the audit entry with the values
        later = {"taken_at": taken + 30_000, "respiration": 18}
        await api.ok("nurse", "POST", f"/api/v1/patients/{patient}/observations", later)
        history = (await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/observations"))["observations"]
        assert [h["taken_at"] for h in history] == [taken + 30_000, taken]
        assert history[1]["note"] == "after the video call"
        audit = (await api.ok("charge", "GET", f"/api/v1/audit?patient={patient}"))["entries"]
        recorded = [e for e in audit if e["action"] == "observation_recorded"]
        assert [e["details"]["respiration"] for e in recorded] == [22, 18]
        assert recorded[0]["actor"] == "nurse"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"respiration": 81}, "respiration"),
        ({"spo2": 49}, "spo2"),
        ({"systolic": 301}, "systolic"),
        ({"pulse": 19}, "pulse"),
        ({"temperature": 45.5}, "temperature"),
        ({"consciousness": "X"}, "consciousness"),
        ({"heart": 70}, "heart"),
    ],
)
async def test_values_out_of_bounds_are_refused_with_422_naming_the_field(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver, change: dict[str, Any], problem: str
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit(api)
        body = {"taken_at": now_ms(), **FULL_SET, **change}
        status, answer = await api.call("nurse", "POST", f"/api/v1/patients/{patient}/observations", body)
        assert status == 422
        assert problem in answer["error"]
        history = (await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/observations"))["observations"]
        assert history == []


async def test_times_roles_and_patients_are_checked(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit(api)
        path = f"/api/v1/patients/{patient}/observations"
        status, answer = await api.call("nurse", "POST", path, {"taken_at": now_ms() + 10 * 60_000, "pulse": 80})
        assert (status, "future" in answer["error"]) == (422, True)
        status, answer = await api.call(
            "nurse", "POST", path, {"taken_at": now_ms() - MAX_AGE_MS - 60_000, "pulse": 80}
        )
        assert (status, "too old" in answer["error"]) == (422, True)
        status, answer = await api.call("nurse", "POST", path, {"taken_at": now_ms()})
        assert (status, "at least one" in answer["error"]) == (422, True)
        # clinical roles only: neither a viewer nor an admin enters observations
        for user in ("viewer", "root"):
            status, _ = await api.call(user, "POST", path, {"taken_at": now_ms(), "pulse": 80})
            assert status == 403
        # a patient the registry never admitted, and a discharged one
        status, answer = await api.call(
            "nurse", "POST", "/api/v1/patients/p-nobody/observations", {"taken_at": now_ms(), "pulse": 80}
        )
        assert (status, "admit" in answer["error"]) == (404, True)
        await api.ok("charge", "POST", f"/api/v1/registry/patients/{patient}/discharge", {"reason": "recovered"})
        status, answer = await api.call("nurse", "POST", path, {"taken_at": now_ms(), "pulse": 80})
        assert (status, "discharged" in answer["error"]) == (409, True)


async def test_scale_2_patients_are_recorded_and_scored_on_scale_2(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    async with running(config_for(tmp_path, receiver, mosquitto)) as api:
        patient = await admit(api)
        await api.ok(
            "charge",
            "PUT",
            f"/api/v1/patients/{patient}/thresholds",
            {"overrides": {"news2_scale": 2}, "reason": "COPD, target 88-92 %"},
        )
        body = {
            "taken_at": now_ms(),
            **FULL_SET,
            "spo2": 90,
            "respiration": 16,
            "pulse": 80,
            "systolic": 120,
            "temperature": 37.0,
        }
        stored = await api.ok("nurse", "POST", f"/api/v1/patients/{patient}/observations", body)
        assert stored["spo2_scale"] == 2
        score = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/news2")
        # 90 % is in the scale 2 target range (0 points); on scale 1 it would score 3
        assert (score["spo2_scale"], score["parameters"]["spo2"]["points"], score["score"]) == (2, 0, 0)


async def test_observations_survive_a_restart_into_the_engine(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config) as api:
        patient = await admit(api)
        body = {
            "taken_at": now_ms(),
            **FULL_SET,
            "respiration": 16,
            "spo2": 97,
            "pulse": 80,
            "systolic": 120,
            "temperature": 37.0,
        }
        await api.ok("nurse", "POST", f"/api/v1/patients/{patient}/observations", body)
    async with running(config, with_users=False) as api:
        score = await api.ok("viewer", "GET", f"/api/v1/patients/{patient}/news2")
        assert (score["full"], score["score"]) == (True, 0)


async def test_the_full_score_is_published_on_the_score_stream(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "test-score-reader", clean_start=True) as reader:
        await reader.wait_connected(TIMEOUT)
        await reader.subscribe(ward_filter(SCORE, WARD))
        async with running(config_for(tmp_path, receiver, mosquitto)) as api:
            patient = await admit(api)
            body = {"taken_at": now_ms(), **FULL_SET}
            await api.ok("nurse", "POST", f"/api/v1/patients/{patient}/observations", body)
            while True:
                message = await asyncio.wait_for(reader.get_message(), TIMEOUT)
                score = decode(message.payload)
                assert isinstance(score, News2Score)
                if score.patient == patient:
                    break
            assert message.topic == score_topic(WARD, patient)
            assert (score.news2.score, score.news2.full, score.news2.respiration) == (8, True, 2)


class ScoringFails(Engine):
    """An engine with a bug in NEWS2 scoring of observations."""

    def on_observation(
        self, patient: str, ward: str, obs: NurseObservation, now_ms: int | None = None
    ) -> list[ConditionChange]:
        raise ZeroDivisionError("a bug in scoring")


async def test_an_engine_failing_on_observations_keeps_them_and_raises_monitoring_impaired(
    tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver
) -> None:
    config = config_for(tmp_path, receiver, mosquitto)
    async with running(config, source=ScoringFails(load_rules(config.rules))) as api:
        patient = await admit(api)
        path = f"/api/v1/patients/{patient}/observations"
        for minute in range(config.guard.failures_before_impaired):
            await api.ok("nurse", "POST", path, {"taken_at": now_ms() - minute * 60_000, "respiration": 16})
        history = (await api.ok("viewer", "GET", path))["observations"]
        assert len(history) == config.guard.failures_before_impaired
        alarms = (await api.ok("viewer", "GET", f"/api/v1/alarms?patient={patient}"))["alarms"]
        assert [(a["rule"], a["priority"]) for a in alarms] == [("monitoring_impaired", "high")]
