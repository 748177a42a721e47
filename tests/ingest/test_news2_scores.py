"""ingest stores alerting's NEWS2 score stream (measurement ``news2``): real mosquitto and influxd."""

from __future__ import annotations

import asyncio
import time

import pytest

from wardwatch.core.errors import SchemaError
from wardwatch.core.schema import News2, News2Score, encode
from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.testing import wait_exactly
from wardwatch.core.topics import score_topic
from wardwatch.ingest.points import NEWS2_MEASUREMENT, PointEncoder
from wardwatch.ingest.testing import DATABASE, count, ingest_config, publish_all, running_ingest

NOW_MS = time.time_ns() // 1_000_000
PARTIAL = News2(score=3, o2=0, spo2=2, pulse=1, missing=["respiration", "supplemental_o2", "consciousness"])
FULL = News2(score=8, o2=0, spo2=2, pulse=2, respiration=2, systolic=1, consciousness=0, temperature=1, full=True)


def message(t: int, news2: News2, patient: str = "p-1") -> tuple[str, bytes]:
    score = News2Score(patient=patient, ward="ward-a", t=t, news2=news2)
    return score_topic("ward-a", patient), encode(score)


def test_a_score_becomes_one_point_with_its_sub_scores_and_missing_parameters() -> None:
    topic, payload = message(NOW_MS, PARTIAL)
    (point,) = PointEncoder().points(topic, payload)
    assert point.measurement == NEWS2_MEASUREMENT
    assert dict(point.tags) == {"ward": "ward-a", "patient": "p-1"}
    assert point.fields == {
        "score": 3,
        "full": False,
        "o2": 0,
        "spo2_scale": 1,
        "spo2": 2,
        "pulse": 1,
        "missing": "respiration,supplemental_o2,consciousness",
    }
    assert point.time == NOW_MS


def test_a_score_whose_patient_is_not_its_topics_is_refused() -> None:
    _, payload = message(NOW_MS, PARTIAL, patient="p-1")
    with pytest.raises(SchemaError, match="do not match"):
        PointEncoder().points(score_topic("ward-a", "p-2"), payload)


async def test_scores_are_stored_once_however_often_they_arrive(mosquitto: Mosquitto, influxd: Influxd) -> None:
    scores = [message(NOW_MS - 60_000, PARTIAL), message(NOW_MS, FULL)]
    async with running_ingest(ingest_config(mosquitto, influxd)):
        await asyncio.to_thread(publish_all, mosquitto, scores + scores)  # redelivered: same series and time
        await wait_exactly(lambda: count(influxd, "score", NEWS2_MEASUREMENT), 2, 30.0, "news2 points")
    result = await influxd.query(
        'SELECT "score", "full", "respiration", "missing" FROM "raw"."news2" ORDER BY time', db=DATABASE
    )
    rows = result["results"][0]["series"][0]["values"]
    assert [row[1:] for row in rows] == [
        [3, False, None, "respiration,supplemental_o2,consciousness"],
        [8, True, 2, None],
    ]
