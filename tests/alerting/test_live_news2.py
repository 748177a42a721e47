"""Each patient's NEWS2 on the console's live board: partial with the missing parameters, full at once after a
nurse's observations, partial again when they are no longer recent; watchers hear only of changes."""

from __future__ import annotations

import itertools
import json

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.engine.news2 import News2Score, NurseObservation
from wardwatch.alerting.live import LiveBoard, Subscription
from wardwatch.alerting.observations.live import LiveScores, news2_band
from wardwatch.alerting.observations.stream import ScorePublisher
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import Sample, Signal, Vitals

T0 = 1_767_225_600_000
WARD = "ward-a"
_seq = itertools.count(1)


def oximeter(engine: Engine, start: int, seconds: int, spo2: float, pulse: float) -> None:
    for i in range(seconds):
        for signal, value in ((Signal.SPO2, spo2), (Signal.PULSE_RATE, pulse)):
            samples = (Sample(t=start + i * 1000, v=value),)
            vitals = Vitals(
                v=1, patient="p-1", device="plx-1", gateway="gw-1", signal=signal, seq=next(_seq), samples=samples
            )
            engine.on_vitals(vitals, WARD)


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload))


async def events(subscription: Subscription) -> list[tuple[str, dict[str, object]]]:
    out = []
    for chunk in await subscription.next_batch(1.0):
        name, data = chunk.decode().strip().split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_bands_follow_rcp_2017() -> None:
    assert [news2_band(s, False) for s in (0, 4, 5, 6, 7, 12)] == ["low", "low", "medium", "medium", "high", "high"]
    assert news2_band(3, True) == "low-medium"  # a 3 in one parameter
    assert news2_band(5, True) == "medium"


async def test_the_board_shows_partial_then_full_news2_and_sends_only_changes() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    now = [T0 + 180_000]
    board = LiveBoard([WARD], list, now_ms=lambda: now[0], flush_s=0.01)
    scores = LiveScores(board, engine.patient_wards, engine.score_now, lambda: now[0])
    oximeter(engine, T0, 180, 93, 115)  # SpO2 2 + pulse 2 on air
    scores.refresh(now[0])
    (patient,) = board.snapshot(WARD)["patients"]
    news2 = patient["news2"]
    assert (news2["score"], news2["full"], news2["band"]) == (4, False, "low")
    assert set(news2["missing"]) == {"respiration", "supplemental_o2", "systolic", "consciousness", "temperature"}
    assert news2["points"] == {"spo2": 2, "pulse": 2}

    subscription = board.subscribe(WARD)
    assert [name for name, _ in await events(subscription)] == ["snapshot"]
    scores.refresh(now[0] + 5_000)  # nothing changed: nothing sent
    assert await events(subscription) == []

    # the nurse's observations: RR 22 (2), SBP 105 (1), 38.5 °C (1), alert, air -> full NEWS2 8, high
    obs = NurseObservation(
        t=now[0], respiration=22, systolic=105, temperature=38.5, consciousness="A", supplemental_o2=False
    )
    engine.on_observation("p-1", WARD, obs, now[0])
    assert scores.observed("p-1", WARD, obs) == ()
    ((name, data),) = await events(subscription)
    assert name == "values"
    sent = data["patients"][0]["news2"]  # type: ignore[index]
    assert (sent["score"], sent["full"], sent["band"], sent["missing"]) == (8, True, "high", [])

    # four hours later nothing is recent: partial again, without any new message
    now[0] += 4 * 3600_000 + 60_000
    scores.refresh(now[0])
    ((name, data),) = await events(subscription)
    later = data["patients"][0]["news2"]  # type: ignore[index]
    assert later["full"] is False
    assert "respiration" in later["missing"]
    assert "pulse" in later["missing"]


async def test_a_failing_score_is_contained_by_the_board() -> None:
    board = LiveBoard([WARD], list)

    def broken(patient: str, now: int) -> None:
        raise RuntimeError("engine bug")

    scores = LiveScores(board, lambda: [("p-1", WARD)], broken, lambda: T0)
    scores.refresh(T0)
    assert scores.observed("p-1", WARD, NurseObservation(t=T0, respiration=12)) == ()
    assert board.failures._value.get() == 2


async def test_the_score_streams_check_feeds_the_board_with_the_scores_it_computed_once() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    now = T0 + 180_000
    oximeter(engine, T0, 180, 93, 115)
    board = LiveBoard([WARD], list)
    computed: list[str] = []

    def score(patient: str, t: int) -> News2Score | None:
        computed.append(patient)
        return engine.score_now(patient, t)

    scores = LiveScores(board, engine.patient_wards, score, lambda: now)
    publisher = ScorePublisher(Broker(), engine.patient_wards, score)
    publisher.watchers.append(scores.scored)

    def broken(patient: str, ward: str, scored: News2Score) -> None:
        raise RuntimeError("a broken watcher")

    publisher.watchers.append(broken)  # stops neither the stream nor the board
    assert await publisher.publish_due(now) == 1
    assert computed == ["p-1"]  # scored once for the stream and the board
    news2 = board.snapshot(WARD)["patients"][0]["news2"]
    assert (news2["score"], news2["full"]) == (4, False)
