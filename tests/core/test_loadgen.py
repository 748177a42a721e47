"""The benchmark load generator: what it offers arrives, and it says when it could not offer the load."""

from __future__ import annotations

import asyncio

from wardwatch.core.config import MqttSettings
from wardwatch.core.loadgen import LoadPlan, LoadReport, WorkerReport, replay_patient_id, run_load
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import Vitals, decode
from wardwatch.core.servers import Mosquitto


async def test_every_planned_message_arrives_in_order_with_its_low_samples_recorded(mosquitto: Mosquitto) -> None:
    plan = LoadPlan(
        host=mosquitto.host,
        port=mosquitto.port,
        ward="ward-a",
        patients=20,
        duration_s=3,
        onset_s=tuple(1.0 for _ in range(20)),
        workers=2,
        replay_gateways=2,
        replay_s=60,
        replay_batch=30,
        replay_at_s=1.0,
    )
    received: list[Vitals] = []
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "load-observer", clean_start=True) as observer:
        await observer.wait_connected(10)
        await observer.subscribe("wardwatch/v1/vitals/#")
        report = await asyncio.to_thread(run_load, plan)
        while len(received) < 20 * 2 * 3 + 2 * 2 * 2:
            message = await asyncio.wait_for(observer.get_message(), 10)
            vitals = decode(message.payload)
            assert isinstance(vitals, Vitals)
            received.append(vitals)
    assert report.problems == []
    summary = report.summary()
    assert summary["messages_published"] == 120
    assert summary["load_offered"] is True
    assert summary["replay"]["samples"] == 2 * 2 * 60
    replaying = {replay_patient_id(g) for g in range(2)}
    live = [v for v in received if v.patient not in replaying]
    for patient in {v.patient for v in live}:
        seqs = [v.seq for v in live if v.patient == patient and v.signal == "spo2"]
        assert seqs == [1, 2, 3]
    low = report.low_samples
    assert sorted(low) == sorted({v.patient for v in live})
    for patient, samples in low.items():  # the samples at or after the onset, each with its publish time
        sent = [s.t for v in live if v.patient == patient and v.signal == "spo2" for s in v.samples if s.v == 85.0]
        assert [t for t, _ in samples] == sent
        assert all(ns > 0 for _, ns in samples)


def test_a_load_not_offered_says_why() -> None:
    plan = LoadPlan(host="127.0.0.1", port=1, ward="ward-a", patients=1000, duration_s=10)
    behind = WorkerReport(worker=0, planned=20_000, published=12_000, acknowledged=11_000, lateness_ms_p99=900.0)
    behind.failed = 3
    behind.failure_reasons = {"publishing stopped: [Errno 32] Broken pipe": 1}
    report = LoadReport(plan, [behind], wall_seconds=12.0)
    problems = report.problems
    assert any("published 12000 of 20000" in p for p in problems)
    assert any("3 publishes failed" in p for p in problems)
    assert any("not acknowledged" in p for p in problems)
    assert any("achieved 1100 msg/s of 2000 offered" in p for p in problems)
    assert any("fell behind their schedule" in p for p in problems)
    assert report.summary()["load_offered"] is False
