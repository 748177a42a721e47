"""Each patient's current NEWS2 on the console's live board (:class:`~wardwatch.alerting.live.LiveBoard`).

:class:`LiveScores` takes every patient's score at each check of the score stream (the
:class:`~wardwatch.alerting.observations.stream.ScorePublisher` computes it once for both; parameters
go stale with time, so a full score turns partial without any new message), scores a patient at once
after a nurse's observation, and gives the board a compact form (:func:`board_json`: total, band,
full/partial, the missing parameters, the sub-scores) that changes only when the score does, so the
board's watchers get an update only then. A failure here is counted by the board and never reaches
the engine or the score stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from wardwatch.alerting.engine.news2 import News2Score, NurseObservation

if TYPE_CHECKING:
    from wardwatch.alerting.events import ConditionChange
    from wardwatch.alerting.live import LiveBoard

__all__ = ["BANDS", "LiveScores", "board_json", "news2_band"]

BANDS: Final = ("low", "low-medium", "medium", "high")
"""The RCP 2017 clinical risk bands, in rising order."""


def news2_band(score: int, any_three: bool) -> str:
    """The RCP risk band: high (7+), medium (5-6), low-medium (a 3 in one parameter), else low (0-4)."""
    if score >= 7:
        return "high"
    if score >= 5:
        return "medium"
    return "low-medium" if any_three else "low"


def board_json(score: News2Score) -> dict[str, Any]:
    """The compact NEWS2 the board shows; equal for equal scores (no time stamps, no raw values)."""
    return {
        "score": score.score,
        "full": score.full,
        "band": news2_band(score.score, score.any_three),
        "tier": score.tier,
        "label": score.label,
        "spo2_scale": score.spo2_scale,
        "missing": [p.value for p in score.missing],
        "points": {p.value: points for p, points in score.points.items()},
    }


class LiveScores:
    """Keeps the board's NEWS2 of every patient current (see the module)."""

    def __init__(
        self,
        live: LiveBoard,
        patients: Callable[[], Iterable[tuple[str, str]]],
        score: Callable[[str, int], News2Score | None],
        now_ms: Callable[[], int],
    ) -> None:
        self._live = live
        self._patients = patients  # (patient, ward) pairs with engine state
        self._score = score
        self._now_ms = now_ms

    def _show(self, patient: str, ward: str, now: int) -> None:
        scored = self._score(patient, now)
        self._live.on_news2(ward, patient, None if scored is None else board_json(scored))

    def scored(self, patient: str, ward: str, score: News2Score) -> None:
        """A score-stream watcher: the patient's score of this check (the board sends it only if it changed)."""
        self._live.guard(lambda: self._live.on_news2(ward, patient, board_json(score)))

    def refresh(self, now: int) -> None:
        """Score every patient as of ``now`` (the board sends only the scores that changed)."""
        for patient, ward in self._patients():
            self._live.guard(lambda patient=patient, ward=ward: self._show(patient, ward, now))  # type: ignore[misc]

    def observed(self, patient: str, ward: str, _obs: NurseObservation) -> Sequence[ConditionChange]:
        """An observation hook: the patient's new score on the board at once (no condition changes)."""
        self._live.guard(lambda: self._show(patient, ward, self._now_ms()))
        return ()
