"""Clinical review notes on a patient: author, role, time and text; append-only, each write audited.

The ``review_notes`` table of the alerting store refuses updates and deletes (triggers, like the audit
log); a note is written in one transaction with its ``note_written`` audit entry, whose reason holds
the text, so the audit log shows what was written even if the table were replaced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.errors import RefusedRequestError
from wardwatch.alerting.registry.lookup import ward_of_patient

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS review_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient TEXT NOT NULL,
    ward TEXT NOT NULL,
    t INTEGER NOT NULL,
    author TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS review_notes_patient ON review_notes (patient, t);
CREATE INDEX IF NOT EXISTS review_notes_ward ON review_notes (ward, t);
CREATE TRIGGER IF NOT EXISTS review_notes_no_update BEFORE UPDATE ON review_notes
    BEGIN SELECT RAISE(ABORT, 'review notes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS review_notes_no_delete BEFORE DELETE ON review_notes
    BEGIN SELECT RAISE(ABORT, 'review notes are append-only'); END;
"""
MAX_NOTE_LENGTH: Final = 2000
"""Characters in one note: a review, not a document (write another note to say more)."""


class NoteError(RefusedRequestError):
    """A note that cannot be written or read; ``status`` is the HTTP status that says why."""


@dataclass(frozen=True, slots=True)
class ReviewNote:
    """One stored note."""

    id: int
    patient: str
    ward: str
    t: int
    author: str
    role: str
    text: str

    def as_json(self) -> dict[str, Any]:
        """As the API returns it."""
        return dataclasses.asdict(self)


_SELECT: Final = "SELECT id, patient, ward, t, author, role, text FROM review_notes"


class ReviewNotes:
    """The review notes of the service's patients."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        service.store.add_schema(SCHEMA)

    def ward_of(self, patient: str, *, writing: bool) -> str:
        """The ward of a registered patient of this service (404 otherwise; 409 writing for a discharged one)."""
        return ward_of_patient(self._service, patient, NoteError, admitted_for="review notes" if writing else None)

    def write(self, patient: str, text: str, author: str, role: str) -> ReviewNote:
        """Store one note with its audit entry (one transaction)."""
        ward = self.ward_of(patient, writing=True)
        now = self._service.clock.now_ms()
        with self._service.store.transaction() as (db, audit):
            cursor = db.execute(
                "INSERT INTO review_notes (patient, ward, t, author, role, text) VALUES (?, ?, ?, ?, ?, ?)",
                (patient, ward, now, author, role, text),
            )
            note_id = cursor.lastrowid
            assert note_id is not None  # an INSERT into an AUTOINCREMENT table always has one
            audit.append(
                AuditEntry(
                    t=now,
                    actor=author,
                    action="note_written",
                    patient=patient,
                    ward=ward,
                    reason=text,
                    details={"note_id": note_id, "role": role},
                )
            )
        return ReviewNote(note_id, patient, ward, now, author, role, text)

    def of_patient(self, patient: str, limit: int) -> list[ReviewNote]:
        """The patient's notes, newest first."""
        rows = self._service.store.connection.execute(
            _SELECT + " WHERE patient = ? ORDER BY t DESC, id DESC LIMIT ?", (patient, limit)
        ).fetchall()
        return [ReviewNote(*row) for row in rows]

    def of_ward(self, ward: str, since: int, limit: int) -> list[ReviewNote]:
        """The ward's notes written at or after ``since``, newest first."""
        rows = self._service.store.connection.execute(
            _SELECT + " WHERE ward = ? AND t >= ? ORDER BY t DESC, id DESC LIMIT ?", (ward, since, limit)
        ).fetchall()
        return [ReviewNote(*row) for row in rows]
