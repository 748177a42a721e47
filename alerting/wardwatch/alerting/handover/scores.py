"""The NEWS2 log: each admitted patient's NEWS2, stored when it changes, for the handover's "NEWS2 rose".

The engine keeps only each patient's current score. :class:`News2Log` asks it (through
``service.observations.score_source``, the engine's ``score_now``) every :data:`SAMPLE_S` and stores a
row in ``news2_log`` when the total or full/partial changed since the last row: at most one row per
patient per sample; once an hour, rows older than :data:`KEEP_MS` are dropped (but each patient's
newest). A failure is counted and logged; the next sample runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from wardwatch.core.logs import RateLimitedLog

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

_log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS news2_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient TEXT NOT NULL,
    ward TEXT NOT NULL,
    t INTEGER NOT NULL,
    score INTEGER NOT NULL,
    full INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS news2_log_patient_t ON news2_log (patient, t, score);
CREATE INDEX IF NOT EXISTS news2_log_t ON news2_log (t);
"""
SAMPLE_S: Final = 60.0
"""How often every admitted patient's NEWS2 is looked at."""
KEEP_MS: Final = 7 * 86_400_000
"""Rows older than this are dropped (a handover looks back at most 48 hours)."""
PRUNE_MS: Final = 3_600_000
"""How often old rows are dropped."""


_ROW: Final = "SELECT t, score, full FROM news2_log WHERE patient = ?"


def _score_row(row: tuple[int, int, int]) -> dict[str, Any]:
    t, score, full = row
    return {"t": t, "score": score, "full": bool(full)}


class News2Log:
    """NEWS2 changes per patient (see the module)."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        self._last: dict[str, tuple[int, bool]] = {}
        self._pruned_at = 0
        self._warn = RateLimitedLog(_log, interval_s=300.0)
        service.store.add_schema(SCHEMA)

    def sample(self, now: int) -> int:
        """Store the scores that changed since the last row of their patient; returns how many."""
        service = self._service
        source = service.observations.score_source
        if source is None:
            return 0
        rows: list[tuple[str, str, int, int, int]] = []
        for ward in service.config.wards:
            for patient in service.registry.patients(ward, "admitted"):
                score = source(patient.patient, now)
                if score is None:
                    continue
                key = (score.score, score.full)
                if self._stored(patient.patient) == key:
                    continue
                rows.append((patient.patient, ward, now, score.score, int(score.full)))
                self._last[patient.patient] = key
        prune = now - self._pruned_at >= PRUNE_MS
        if not rows and not prune:
            return 0
        with service.store.transaction() as (db, _):
            db.executemany("INSERT INTO news2_log (patient, ward, t, score, full) VALUES (?, ?, ?, ?, ?)", rows)
            if prune:  # each patient's newest row stays: a score unchanged for a week is still its score
                db.execute(
                    "DELETE FROM news2_log WHERE t < ? AND id NOT IN (SELECT MAX(id) FROM news2_log GROUP BY patient)",
                    (now - KEEP_MS,),
                )
        if prune:
            self._pruned_at = now
        return len(rows)

    def _stored(self, patient: str) -> tuple[int, bool] | None:
        if patient in self._last:
            return self._last[patient]
        row = self._service.store.connection.execute(
            "SELECT score, full FROM news2_log WHERE patient = ? ORDER BY t DESC, id DESC LIMIT 1", (patient,)
        ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def window(self, patients: Iterable[str], since: int) -> dict[str, dict[str, Any]]:
        """Per patient with a score logged: ``first`` (the last row before ``since``, else the first since), ``last``
        (the newest row) and ``highest`` (the highest since ``since``, else ``first``'s). Index seeks per patient."""
        db = self._service.store.connection
        summary: dict[str, dict[str, Any]] = {}
        for patient in patients:
            before = db.execute(_ROW + " AND t < ? ORDER BY t DESC LIMIT 1", (patient, since)).fetchone()
            first_inside = db.execute(_ROW + " AND t >= ? ORDER BY t LIMIT 1", (patient, since)).fetchone()
            if before is None and first_inside is None:
                continue
            first = _score_row(before if before is not None else first_inside)
            if first_inside is None:
                summary[patient] = {"first": first, "last": first, "highest": first["score"]}
                continue
            newest = db.execute(_ROW + " ORDER BY t DESC LIMIT 1", (patient,)).fetchone()
            (highest,) = db.execute(
                "SELECT MAX(score) FROM news2_log WHERE patient = ? AND t >= ?", (patient, since)
            ).fetchone()
            summary[patient] = {"first": first, "last": _score_row(newest), "highest": highest}
        return summary

    async def run(self, sample_s: float = SAMPLE_S) -> None:
        """Sample every ``sample_s`` until cancelled."""
        while True:
            try:
                self.sample(self._service.clock.now_ms())
            except Exception as exc:  # the log only: the engine and its alarms are unaffected
                self._service.metrics.failures.labels(stage="news2_log").inc()
                self._warn.warning("news2-log", "logging NEWS2 scores failed: %r", exc)
            await asyncio.sleep(sample_s)
