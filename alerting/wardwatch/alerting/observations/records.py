"""Manual observations (respiratory rate, ACVPU, oxygen, BP, temperature, SpO2, pulse) in the alerting store.

:class:`Observations` checks, stores and audits an entry in one transaction, then hands it to every
hook in :attr:`Observations.hooks` (the engine's ``on_observation``), whose condition changes go to
the service like the engine's others. An entry is refused unless its patient is admitted to one of
this service's wards (the registry), its time is neither in the future (beyond ``FUTURE_SLACK_MS``
of clock skew) nor older than ``MAX_AGE_MS``, and it holds at least one parameter. A hook that
fails never loses the entry: it is stored, the failure is counted, logged and reported unhealthy.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.engine.news2 import News2Score, NurseObservation
from wardwatch.alerting.errors import RefusedRequestError
from wardwatch.alerting.registry.lookup import ward_of_patient

if TYPE_CHECKING:
    from wardwatch.alerting.events import ConditionChange
    from wardwatch.alerting.service import AlarmService

_log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient TEXT NOT NULL,
    ward TEXT NOT NULL,
    taken_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    respiration REAL,
    spo2 REAL,
    spo2_scale INTEGER NOT NULL,
    supplemental_o2 INTEGER,
    systolic REAL,
    pulse REAL,
    consciousness TEXT,
    temperature REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS observations_patient ON observations (patient, taken_at);
"""
MAX_AGE_MS: Final = 24 * 3600 * 1000
"""An observation taken longer ago than this is refused: too old to enter (and to count in NEWS2)."""
FUTURE_SLACK_MS: Final = 2 * 60 * 1000
"""Clock skew tolerated between the nurse's device and the service."""
PARAMETERS: Final = (
    "respiration",
    "spo2",
    "supplemental_o2",
    "systolic",
    "pulse",
    "consciousness",
    "temperature",
)

ObservationHook = Callable[[str, str, NurseObservation], "Sequence[ConditionChange]"]
ScoreSource = Callable[[str, int], "News2Score | None"]


class ObservationError(RefusedRequestError):
    """An entry that cannot be accepted; ``status`` is the HTTP status that says why."""


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    """One stored entry."""

    id: int
    patient: str
    ward: str
    taken_at: int
    recorded_at: int
    actor: str
    spo2_scale: int
    note: str
    values: dict[str, float | str | bool]

    def as_json(self) -> dict[str, Any]:
        """As the API returns it."""
        return {
            "id": self.id,
            "patient": self.patient,
            "ward": self.ward,
            "taken_at": self.taken_at,
            "recorded_at": self.recorded_at,
            "recorded_by": self.actor,
            "spo2_scale": self.spo2_scale,
            "note": self.note,
            **self.values,
        }

    def observation(self) -> NurseObservation:
        """As the engine takes it."""
        return NurseObservation(t=self.taken_at, **self.values)  # type: ignore[arg-type]


_SELECT: Final = (
    "SELECT id, patient, ward, taken_at, recorded_at, actor, spo2_scale, note,"
    " respiration, spo2, supplemental_o2, systolic, pulse, consciousness, temperature FROM observations"
)


def _record(row: sqlite3.Row | tuple[Any, ...]) -> ObservationRecord:
    obs_id, patient, ward, taken_at, recorded_at, actor, scale, note, *values = tuple(row)
    found: dict[str, float | str | bool] = {}
    for name, value in zip(PARAMETERS, values, strict=True):
        if value is None:
            continue
        found[name] = bool(value) if name == "supplemental_o2" else value
    return ObservationRecord(obs_id, patient, ward, taken_at, recorded_at, actor, scale, note, found)


class Observations:
    """Manual observations of the service's patients (the ``observations`` table of the alerting store)."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        self.hooks: list[ObservationHook] = []
        self.restore_hooks: list[Callable[[str, str, NurseObservation], None]] = []  # state only, no rules
        self.score_source: ScoreSource | None = None  # the engine's score_now, when it has one
        service.store.add_schema(SCHEMA)

    def record(
        self, patient: str, taken_at: int, values: dict[str, float | str | bool], note: str, actor: str
    ) -> ObservationRecord:
        """Check, store and audit one entry (one transaction), then give it to the hooks (the engine)."""
        service = self._service
        now = service.clock.now_ms()
        values = {name: value for name, value in values.items() if value is not None}
        if not values:
            raise ObservationError(422, f"no observation given: enter at least one of {', '.join(PARAMETERS)}")
        if taken_at > now + FUTURE_SLACK_MS:
            raise ObservationError(422, "taken_at is in the future: enter the time the observation was taken")
        if taken_at < now - MAX_AGE_MS:
            hours = MAX_AGE_MS // 3_600_000
            raise ObservationError(422, f"taken_at is more than {hours} h ago: too old to enter as an observation")
        ward = ward_of_patient(service, patient, ObservationError, admitted_for="observations")
        scale = service.rules.resolve(ward, patient).news2_scale
        with service.store.transaction() as (db, audit):
            cursor = db.execute(
                "INSERT INTO observations (patient, ward, taken_at, recorded_at, actor, spo2_scale, note,"
                " respiration, spo2, supplemental_o2, systolic, pulse, consciousness, temperature)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (patient, ward, taken_at, now, actor, scale, note, *(values.get(name) for name in PARAMETERS)),
            )
            obs_id = cursor.lastrowid
            assert obs_id is not None  # an INSERT into an AUTOINCREMENT table always has one
            details: dict[str, Any] = {"observation_id": obs_id, "taken_at": taken_at, "spo2_scale": scale, **values}
            audit.append(
                AuditEntry(
                    t=now,
                    actor=actor,
                    action="observation_recorded",
                    patient=patient,
                    ward=ward,
                    reason=note,
                    details=details,
                )
            )
        record = ObservationRecord(obs_id, patient, ward, taken_at, now, actor, scale, note, values)
        self._feed(record)
        return record

    def _feed(self, record: ObservationRecord) -> None:
        service = self._service
        for hook in self.hooks:
            try:
                changes = hook(record.patient, record.ward, record.observation())
            except Exception as exc:  # stored and audited already: say loudly that it was not scored
                service.metrics.failures.labels(stage="observations").inc()
                _log.exception("the engine could not score observation %d of %s", record.id, record.patient)
                service.set_problem("observations", f"a manual observation was stored but not scored: {exc!r}")
                continue
            if changes:
                service.on_conditions(changes)

    def history(self, patient: str, limit: int = 100, before: int | None = None) -> list[ObservationRecord]:
        """The patient's entries, newest (time taken) first."""
        rows = self._service.store.connection.execute(
            _SELECT + " WHERE patient = ? AND taken_at < ? ORDER BY taken_at DESC, id DESC LIMIT ?",
            (patient, before if before is not None else 2**62, limit),
        ).fetchall()
        return [_record(row) for row in rows]

    def restore(self) -> int:
        """Give the restore hooks every entry of the last ``MAX_AGE_MS`` (start-up: the engine's memory is
        empty; no rule runs on them, the next scoring uses them); returns how many."""
        since = self._service.clock.now_ms() - MAX_AGE_MS
        rows = self._service.store.connection.execute(
            _SELECT + " WHERE taken_at >= ? ORDER BY taken_at, id", (since,)
        ).fetchall()
        for record in map(_record, rows):
            for hook in self.restore_hooks:
                hook(record.patient, record.ward, record.observation())
        return len(rows)
