"""A ward's handover: what happened in the last hours and what needs attention now.

:func:`handover` gathers, for one ward and a window of ``hours``: the alarms open in or since the window
with how each ended from the audit log (acknowledged by whom, silenced by whom, resolved by whom with
which note - by a resolve, or by acknowledging a latched alarm whose condition had cleared - or cleared
by itself; ``re-alarmed``: resolved by hand while present, then re-alarmed after the hold as
``reraised_as`` at ``realarmed_at``; a watch still pending shows ``realarm_at``); the patients whose
NEWS2 rose (first vs last score, from :mod:`.scores` and the engine's score now); the admitted patients
stale or disconnected now (the live board); the review notes written in the window. Every list is
bounded (``truncated`` says when a limit was hit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from wardwatch.alerting.manager import AlarmRecord

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

SCHEMA: Final = """
CREATE INDEX IF NOT EXISTS handover_alarms_ward_updated ON alarms (ward, updated);
"""
"""An index on the store's alarms for the handover's "changed in the window" (created with the other tables)."""
MAX_ALARMS: Final = 500
"""Alarms listed in one handover (newest first)."""
MAX_NOTES: Final = 500
"""Review notes listed in one handover (newest first)."""
STALE_AFTER_MS: Final = 60_000
"""A patient whose newest reading is older than this is stale (the console's default ``stale_after_s``)."""
_CLINICIAN_ACTIONS: Final = ("acknowledge", "silence", "resolve")
_records: Final = msgspec.json.Decoder(AlarmRecord)
_details: Final = msgspec.json.Decoder(dict[str, Any])


def _alarms(service: AlarmService, ward: str, since: int) -> tuple[list[dict[str, Any]], bool]:
    db = service.store.connection
    rows = db.execute(  # two index searches (changed in the window; open), not a scan of every alarm ever
        "SELECT record FROM alarms WHERE (ward = ? AND updated >= ?)"
        " OR (state IN ('active', 'acknowledged', 'silenced') AND ward = ?) ORDER BY started DESC LIMIT ?",
        (ward, since, ward, MAX_ALARMS + 1),
    ).fetchall()
    records = [_records.decode(row[0]) for row in rows[:MAX_ALARMS]]
    actions: dict[str, list[dict[str, Any]]] = {r.alarm_id: [] for r in records}
    if records:
        marks = ", ".join("?" * len(records))
        found = db.execute(
            f"SELECT alarm_id, t, actor, action, reason, details FROM audit WHERE alarm_id IN ({marks})"  # noqa: S608 - placeholders only
            f" AND action IN ({', '.join('?' * len(_CLINICIAN_ACTIONS))}) ORDER BY seq",
            [*actions, *_CLINICIAN_ACTIONS],
        ).fetchall()
        for alarm_id, t, actor, action, reason, details in found:
            entry = {"action": action, "actor": actor, "t": t, "note": reason}
            if action == "acknowledge" and _details.decode(details).get("state") == "resolved":
                entry["resolved"] = True  # acknowledging a latched alarm whose condition had cleared ends it
            actions[alarm_id].append(entry)
    return [_alarm(record, actions[record.alarm_id]) for record in records], len(rows) > MAX_ALARMS


def _alarm(record: AlarmRecord, actions: list[dict[str, Any]]) -> dict[str, Any]:
    acknowledged = next((a for a in actions if a["action"] == "acknowledge"), None)
    resolved = next((a for a in reversed(actions) if a["action"] == "resolve" or a.get("resolved")), None)
    silenced = next((a for a in reversed(actions) if a["action"] == "silence"), None)
    if record.state != "resolved":
        outcome = f"open ({record.state})"
    elif record.reraised_as is not None:
        outcome = "re-alarmed"  # resolved by hand while present; the condition outlasted the hold
    elif resolved is not None:
        outcome = "resolved"
    else:
        outcome = "cleared"  # the condition ended and the alarm resolved itself
    return {
        "alarm_id": record.alarm_id,
        "patient": record.patient,
        "rule": record.rule,
        "category": record.category,
        "priority": record.priority,
        "state": record.state,
        "text": record.text,
        "started": record.started,
        "resolved_at": record.resolved_at,
        "outcome": outcome,
        "acknowledged_by": acknowledged["actor"] if acknowledged else None,
        "acknowledged_at": acknowledged["t"] if acknowledged else None,
        "resolved_by": resolved["actor"] if resolved else None,
        "resolution_note": resolved["note"] if resolved else None,
        "silenced_by": silenced["actor"] if silenced else None,
        "realarm_at": record.recheck_at,  # resolved by hand while present: a new alarm then unless it clears
        "reraised_as": record.reraised_as,  # the new alarm opened when the condition outlasted the hold
        "realarmed_at": record.updated if record.reraised_as is not None else None,
        "actions": actions,
    }


def _news2_rose(service: AlarmService, ward: str, since: int, now: int) -> list[dict[str, Any]]:
    admitted = service.registry.patients(ward, "admitted")
    logged = service.handover.scores.window([p.patient for p in admitted], since)
    source = service.observations.score_source
    rose: list[dict[str, Any]] = []
    for patient in admitted:
        summary = logged.get(patient.patient)
        if summary is None:
            continue
        first, last, highest = summary["first"], summary["last"], summary["highest"]
        current = source(patient.patient, now) if source is not None else None
        if current is not None:
            last = {"t": now, "score": current.score, "full": current.full}
            highest = max(highest, current.score)
        if last["score"] > first["score"]:
            rose.append({"patient": patient.patient, "first": first, "last": last, "highest": highest})
    rose.sort(key=lambda r: (r["last"]["score"] - r["first"]["score"], r["last"]["score"]), reverse=True)
    return rose


def _attention(service: AlarmService, ward: str, now: int) -> list[dict[str, Any]]:
    board = service.live.snapshot(ward)
    live = {p["patient"]: p for p in board["patients"]}
    offline = {g["gateway"] for g in board["gateways"] if g.get("online") is False}
    found: list[dict[str, Any]] = []
    for patient in service.registry.patients(ward, "admitted"):
        entry = live.get(patient.patient)
        readings = [v["t"] for v in entry["vitals"].values() if not v.get("absent")] if entry else []
        newest = max(readings, default=None)
        stale = newest is None or now - newest > STALE_AFTER_MS
        devices = entry["devices"].values() if entry else ()
        disconnected = sorted(d["device"] for d in devices if d.get("connected") is False)
        gateway = entry["gateway"] if entry else None
        gateway_offline = gateway in offline
        if stale or disconnected or gateway_offline:
            found.append(
                {
                    "patient": patient.patient,
                    "stale": stale,
                    "newest_reading": newest,
                    "disconnected": disconnected,
                    "gateway": gateway,
                    "gateway_offline": gateway_offline,
                }
            )
    return found


def handover(service: AlarmService, ward: str, hours: int) -> dict[str, Any]:
    """The handover of ``ward`` for the last ``hours`` (see the module)."""
    now = service.clock.now_ms()
    since = now - hours * 3_600_000
    alarms, alarms_truncated = _alarms(service, ward, since)
    notes = service.handover.notes.of_ward(ward, since, MAX_NOTES + 1)
    return {
        "ward": ward,
        "hours": hours,
        "since": since,
        "until": now,
        "alarms": alarms,
        "news2_rose": _news2_rose(service, ward, since, now),
        "attention": _attention(service, ward, now),
        "notes": [n.as_json() for n in notes[:MAX_NOTES]],
        "truncated": {"alarms": alarms_truncated, "notes": len(notes) > MAX_NOTES},
    }
