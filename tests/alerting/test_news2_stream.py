"""The NEWS2 score stream: published when it changes and every refresh interval; failures retried."""

from __future__ import annotations

from collections.abc import Callable

from wardwatch.alerting.engine.news2 import PARAMS, News2Score, Observed, Param, score_news2
from wardwatch.alerting.observations.stream import ScorePublisher
from wardwatch.core.schema import News2Score as WireScore
from wardwatch.core.schema import decode
from wardwatch.core.topics import parse_topic

T0 = 1_800_000_000_000
FRESH = dict.fromkeys(PARAMS, 3_600_000)


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.down = False

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.sent.append((topic, payload))


def scorer(pulse: dict[str, float]) -> Callable[[str, int], News2Score | None]:
    def score(patient: str, now: int) -> News2Score | None:
        observed: dict[Param, Observed | None] = {Param.PULSE: Observed(pulse[patient], now, "device")}
        return score_news2(observed, now, FRESH)

    return score


async def test_a_score_is_published_when_it_changes_and_again_after_the_refresh_interval() -> None:
    broker = Broker()
    pulse = {"p-1": 80.0}
    publisher = ScorePublisher(broker, lambda: [("p-1", "ward-a")], scorer(pulse), refresh_ms=300_000)
    assert await publisher.publish_due(T0) == 1
    assert await publisher.publish_due(T0 + 5_000) == 0  # unchanged
    pulse["p-1"] = 135.0  # 3 points
    assert await publisher.publish_due(T0 + 10_000) == 1
    assert await publisher.publish_due(T0 + 10_000 + 299_999) == 0
    assert await publisher.publish_due(T0 + 10_000 + 300_000) == 1  # the heartbeat
    topic, payload = broker.sent[1]
    parts = parse_topic(topic)
    assert (parts.kind, parts.ward, parts.patient) == ("score", "ward-a", "p-1")
    message = decode(payload)
    assert isinstance(message, WireScore)
    assert (message.news2.score, message.news2.pulse, message.news2.full) == (3, 3, False)
    assert "respiration" in message.news2.missing


async def test_a_failed_publish_is_retried_at_the_next_check() -> None:
    broker = Broker()
    publisher = ScorePublisher(broker, lambda: [("p-1", "ward-a")], scorer({"p-1": 80.0}))
    broker.down = True
    assert await publisher.publish_due(T0) == 0
    assert publisher.failed == 1
    broker.down = False
    assert await publisher.publish_due(T0 + 5_000) == 1


async def test_a_discharged_patient_is_forgotten() -> None:
    broker = Broker()
    patients = [("p-1", "ward-a")]
    publisher = ScorePublisher(broker, lambda: patients, scorer({"p-1": 80.0}))
    await publisher.publish_due(T0)
    assert publisher.forget("p-1", T0) == []
    patients.clear()
    assert await publisher.publish_due(T0 + 400_000) == 0
