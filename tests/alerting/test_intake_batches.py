"""Vitals batches at alerting's intake: one entry per series, on the series' own topic, in the right lane."""

from __future__ import annotations

from wardwatch.alerting.intake import Intake
from wardwatch.core.mqtt import Message
from wardwatch.core.schema import Sample, Series, Signal, VitalsBatch, encode
from wardwatch.core.topics import vitals_batch_topic, vitals_topic

WARD = "ward-a"
NOW_S = 1_800_000_000.0
NOW_MS = round(NOW_S * 1000)


def batch(patient: str, first_t: int, seq: int = 0) -> VitalsBatch:
    return VitalsBatch(
        patient=patient,
        device="ox-1",
        gateway="gw-01",
        series=(
            Series(signal=Signal.SPO2, seq=seq, samples=(Sample(first_t, 97.0), Sample(first_t + 1000, 96.0))),
            Series(signal=Signal.PULSE_RATE, seq=seq + 1, samples=(Sample(first_t, 70.0),)),
        ),
    )


def message(topic: str, payload: bytes) -> Message:
    return Message(topic, payload, 1, False, 1)


async def test_a_batch_becomes_one_entry_per_series_on_its_own_topic() -> None:
    intake = Intake(stale_after_s=10.0, clock=lambda: NOW_S)
    sent = batch("p-1", NOW_MS - 2000)
    intake.put(message(vitals_batch_topic(WARD, "gw-01", "p-1", "ox-1"), encode(sent)))
    entries = await intake.take(100)
    assert [(e.message.topic, e.vitals, e.stale) for e in entries] == [
        (vitals_topic(WARD, "gw-01", "p-1", "ox-1", str(v.signal)), v, False) for v in sent.vitals()
    ]
    assert all(e.message.payload == encode(sent) for e in entries)  # a dead letter keeps the whole batch


async def test_an_old_batch_goes_to_the_stale_lane_and_its_patient_s_later_ones_follow() -> None:
    intake = Intake(stale_after_s=10.0, clock=lambda: NOW_S)
    topic = vitals_batch_topic(WARD, "gw-01", "p-1", "ox-1")
    intake.put(message(topic, encode(batch("p-1", NOW_MS - 600_000))))  # a replayed backlog
    intake.put(message(topic, encode(batch("p-1", NOW_MS - 1000, seq=2))))  # live, but behind its backlog
    assert len(intake.stale) == 4
    assert not intake.live
    assert intake.backlogged == {"p-1": 4}


async def test_a_batch_naming_another_source_waits_in_order_to_be_refused_whole() -> None:
    intake = Intake(stale_after_s=10.0, clock=lambda: NOW_S)
    topic = vitals_batch_topic(WARD, "gw-01", "p-2", "ox-1")  # the payload names p-1
    intake.put(message(topic, encode(batch("p-1", NOW_MS - 2000))))
    intake.put(message(topic, b"{not json"))
    entries = await intake.take(100)
    assert [(e.message.topic, e.vitals) for e in entries] == [(topic, None), (topic, None)]  # handled: dead-lettered
