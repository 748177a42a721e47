"""Each patient's current NEWS2 as a stream: ``News2Score`` on ``wardwatch/v1/score/{ward}/{patient}``.

:class:`ScorePublisher` asks the engine for every patient's score every ``check_s`` and publishes it
(QoS 1, not retained) when it changed (total, a sub-score, full/partial or the missing parameters)
and at least every ``refresh_ms`` otherwise, so a consumer sees a still-current score and can tell a
silent publisher from an unchanged score. A publish that fails is counted and retried at the next check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Final

from wardwatch.alerting.engine.news2 import News2Score as EngineScore
from wardwatch.alerting.engine.news2 import to_wire
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.protocols import Publisher
from wardwatch.core.schema import News2, News2Score, encode
from wardwatch.core.topics import score_topic

_log = logging.getLogger(__name__)

CHECK_S: Final = 5.0
"""How often scores are recomputed and compared."""
REFRESH_MS: Final = 5 * 60 * 1000
"""An unchanged score is published again after this long (the stream's heartbeat)."""


class ScorePublisher:
    """Publishes each patient's NEWS2 when it changes and every ``refresh_ms``."""

    def __init__(
        self,
        publisher: Publisher,
        patients: Callable[[], Iterable[tuple[str, str]]],
        score: Callable[[str, int], EngineScore | None],
        *,
        refresh_ms: int = REFRESH_MS,
    ) -> None:
        self._publisher = publisher
        self._patients = patients  # (patient, ward) pairs with engine state
        self._score = score
        self._refresh_ms = refresh_ms
        self._last: dict[str, tuple[News2, int]] = {}  # patient -> (what was published, when)
        self.published = 0
        self.failed = 0
        # given every patient's score at each check (the console's live board), so it is computed once
        self.watchers: list[Callable[[str, str, EngineScore], None]] = []

    def due(self, now: int) -> list[News2Score]:
        """The messages to publish now (changed or stale), without marking them published."""
        out: list[News2Score] = []
        for patient, ward in self._patients():
            try:
                scored = self._score(patient, now)
            except Exception:  # one patient's failure never stops the others' scores
                self.failed += 1
                _log.exception("scoring the NEWS2 of %s for the score stream failed", patient)
                continue
            if scored is None:
                continue
            for watcher in self.watchers:
                try:
                    watcher(patient, ward, scored)
                except Exception:  # a watcher's fault never stops the score stream
                    _log.exception("a NEWS2 score watcher failed for %s", patient)
            wire = to_wire(scored)
            last = self._last.get(patient)
            if last is None or last[0] != wire or now - last[1] >= self._refresh_ms:
                out.append(News2Score(patient=patient, ward=ward, t=now, news2=wire))
        return out

    async def publish_due(self, now: int) -> int:
        """Publish what is due; returns how many were published."""
        sent = 0
        for message in self.due(now):
            try:
                await self._publisher.publish(score_topic(message.ward, message.patient), encode(message), qos=1)
            except Exception as exc:  # the next check tries again: _last is not updated
                self.failed += 1
                _log.warning("publishing the NEWS2 of %s failed (retried at the next check): %r", message.patient, exc)
                continue
            self._last[message.patient] = (message.news2, now)
            sent += 1
        self.published += sent
        return sent

    def forget(self, patient: str, _t: int = 0) -> list[ConditionChange]:
        """A discharged patient: no more scores (a registry discharge hook: no condition changes)."""
        self._last.pop(patient, None)
        return []

    async def run(self, now: Callable[[], int], check_s: float = CHECK_S) -> None:
        """Check and publish every ``check_s`` until cancelled."""
        while True:
            try:
                await self.publish_due(now())
            except Exception:  # a bug in scoring: logged, the next check runs
                _log.exception("scoring NEWS2 for the score stream failed")
            await asyncio.sleep(check_s)
