"""The alarm manager: lifecycle, deduplication, flap suppression and escalation, as pure logic.

Time is passed in (ms since the epoch). The manager turns :class:`ConditionChange` events from the
engine and clinicians' commands into :data:`Action` values (pages to send, alarm state changes to
publish) and keeps one :class:`AlarmRecord` per open alarm. Records changed since the last
:meth:`AlarmManager.take_dirty` are persisted by the caller together with the pages, in one
transaction, so a restart resumes escalation timers exactly (:meth:`AlarmManager.restore`).

Lifecycle::

    ACTIVE --acknowledge--> ACKNOWLEDGED --(ack timeout, condition still present)--> ACTIVE (new round)
    ACTIVE/ACKNOWLEDGED --silence(until)--> SILENCED --(expiry, condition present)--> ACTIVE (new round)
    any open --condition cleared for reopen_window--> RESOLVED (actor None)
    any open --resolve--> RESOLVED (actor)
    RESOLVED by hand, condition present --(still present after the ward's recheck hold)--> new alarm, ACTIVE

Deduplication: one open alarm per ``dedup_key`` (ward/patient/rule); a repeated ``active=True``
updates it. Flap suppression: a condition that clears and returns within the ward's reopen window
stays the same alarm (counted in ``flaps``) and pages nobody again.

A manual resolve while the condition lasts: the engine reports a condition once per onset, so an
alarm resolved while its condition is still present would otherwise never be raised again while it
lasts: a resolve would silence for as long as the patient stays ill, silently. The alarm is resolved
as asked, and its key is watched (``recheck_at`` on the resolved record, persisted with it, so a
restart resumes the watch, :meth:`AlarmManager.restore`): if the condition has not cleared by then
(the ward's ``resolved_recheck_s``, at most and by default its ``max_silence_s``: no longer than a
silence could last), a NEW alarm opens (new id, paged from step 0 as a new onset, its text saying it
re-alarmed after a manual resolve). A clear within the hold ends the watch quietly; a deeper
priority reported within it re-alarms at once. A latched alarm (condition already cleared) resolves as
before, unwatched.

A watch restored after a restart (:meth:`AlarmManager.restore`) is not trusted blindly: the condition
may have cleared while the service was down, and a fresh engine reports only conditions it sees (as new
onsets). So a restored watch re-alarms only once the engine has re-reported its condition since the
start: at its due time, or at once if the report comes later. It is dropped (see :meth:`take_dropped`)
when the engine reports the condition cleared, when the patient is discharged (:meth:`end_watches`),
or when no report came within one more hold after its due time (the condition is taken as cleared
during the downtime; any later onset opens a new alarm as usual, so nothing goes silent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from wardwatch.alerting.alarm_record import (
    Action,
    AlarmNotFoundError,
    AlarmRecord,
    InvalidTransitionError,
    PublishAlarm,
    SendPage,
    alarm_id_for,
    page_id_for,
    resolve_notice,
)
from wardwatch.alerting.errors import AlertingError
from wardwatch.alerting.escalation import Policy, WardPolicy
from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import AlarmState, Page, Priority

__all__ = [
    "Action",
    "AlarmManager",
    "AlarmNotFoundError",
    "AlarmRecord",
    "AlertingError",
    "InvalidTransitionError",
    "PublishAlarm",
    "SendPage",
    "alarm_id_for",
    "resolve_notice",
]


class AlarmManager:
    """Pure alarm lifecycle and escalation for the wards in ``wards``; see the module docstring."""

    def __init__(self, wards: Mapping[str, WardPolicy]) -> None:
        self.wards = dict(wards)
        self._alarms: dict[str, AlarmRecord] = {}  # open alarms by id
        self._by_key: dict[str, str] = {}  # dedup key -> open alarm id
        self._dirty: dict[str, AlarmRecord] = {}
        self._watched: dict[str, AlarmRecord] = {}  # dedup key -> resolved by hand while present
        self._unconfirmed: set[str] = set()  # restored watches the engine has not re-reported since the start
        self._dropped: list[tuple[AlarmRecord, str]] = []  # watches ended without a re-alarm, and why
        self._opened: list[tuple[AlarmRecord, str]] = []  # alarms opened, and why (onset, realarm)

    # -- state ----------------------------------------------------------------------------------

    def restore(self, records: Iterable[AlarmRecord]) -> None:
        """Load open alarms and watched resolved ones persisted before a restart (timers resume as stored).

        A restored watch re-alarms only once the engine has re-reported its condition (a fresh engine
        reports a condition still present as a new onset, which confirms the watch); see the module
        docstring.
        """
        watched: list[AlarmRecord] = []
        for record in records:
            if record.ward not in self.wards:
                continue
            if record.is_open:
                self._alarms[record.alarm_id] = record
                self._by_key[record.dedup_key] = record.alarm_id
            elif record.recheck_at is not None:
                watched.append(record)
        for record in watched:
            current = self._watched.get(record.dedup_key)
            if record.dedup_key not in self._by_key and (current is None or current.updated < record.updated):
                self._watched[record.dedup_key] = record
                self._unconfirmed.add(record.dedup_key)

    def watched(self) -> list[AlarmRecord]:
        """Alarms resolved by hand whose condition is still present (a new alarm opens at ``recheck_at``)."""
        return list(self._watched.values())

    def is_confirmed(self, watch: AlarmRecord) -> bool:
        """Whether the engine has reported ``watch``'s condition since the start (False: restored, awaiting it)."""
        return watch.dedup_key not in self._unconfirmed

    def take_dropped(self) -> list[tuple[AlarmRecord, str]]:
        """Watches ended without a re-alarm since the last call, with the reason (``cleared``,
        ``discharged``, ``not_rereported``), to log and count."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def take_opened(self) -> list[tuple[AlarmRecord, str]]:
        """Alarms opened since the last call, with the reason (``onset``, or ``realarm`` after a manual
        resolve), to count."""
        opened, self._opened = self._opened, []
        return opened

    def end_watches(self, patient: str, now: int) -> None:
        """The patient is discharged: their watches end (monitoring ends; reason ``discharged``)."""
        for watch in [w for w in self._watched.values() if w.patient == patient]:
            self._drop_watch(watch, "discharged", now)

    def _drop_watch(self, watch: AlarmRecord, reason: str, now: int) -> None:
        watch.recheck_at = None
        del self._watched[watch.dedup_key]
        self._unconfirmed.discard(watch.dedup_key)
        self._touch(watch, now)
        self._dropped.append((watch, reason))

    def _watch_due(self, watch: AlarmRecord) -> int | None:
        """When :meth:`tick` acts on ``watch``: re-alarm, or drop a restored one never re-reported."""
        if watch.recheck_at is None:
            return None
        if watch.dedup_key in self._unconfirmed:
            return watch.recheck_at + self.wards[watch.ward].recheck_ms
        return watch.recheck_at

    def take_dirty(self) -> list[AlarmRecord]:
        """Records changed since the last call (to persist), including ones just resolved."""
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return dirty

    def get(self, alarm_id: str) -> AlarmRecord | None:
        """The open alarm with this id, if any."""
        return self._alarms.get(alarm_id)

    def open_alarms(self) -> list[AlarmRecord]:
        """Every open alarm."""
        return list(self._alarms.values())

    def is_page_wanted(self, page: Page) -> bool:
        """Whether a queued page still matters (its alarm is open and not acknowledged or silenced).

        Notices of a state other than ACTIVE (e.g. "resolved") are always wanted.
        """
        if page.state is not AlarmState.ACTIVE:
            return True
        record = self._alarms.get(page.alarm_id)
        return record is not None and record.state is AlarmState.ACTIVE

    def next_due(self) -> int | None:
        """The earliest time :meth:`tick` has something to do, or ``None``."""
        times: list[int] = []
        for record in self._alarms.values():
            due = self._due(record)
            if due is not None:
                times.append(due)
        times += [due for due in map(self._watch_due, self._watched.values()) if due is not None]
        return min(times, default=None)

    @staticmethod
    def _latched(record: AlarmRecord, ward: WardPolicy) -> bool:
        """A high-priority alarm nobody has acknowledged yet: it outlives its condition (IEC 60601-1-8)."""
        return ward.latch_high and record.priority is Priority.HIGH and record.state is AlarmState.ACTIVE

    def _due(self, record: AlarmRecord) -> int | None:
        ward = self.wards[record.ward]
        candidates: list[int] = []
        if not record.condition_active and record.cleared_at is not None and not self._latched(record, ward):
            candidates.append(record.cleared_at + ward.reopen_window_ms)
        if record.state is AlarmState.SILENCED and record.silenced_until is not None:
            candidates.append(record.silenced_until)
        elif record.state is AlarmState.ACKNOWLEDGED and record.renotify_at is not None and record.condition_active:
            candidates.append(record.renotify_at)
        elif (
            record.state is AlarmState.ACTIVE
            and (record.condition_active or self._latched(record, ward))
            and record.next_step_at is not None
        ):
            candidates.append(record.next_step_at)
        return min(candidates, default=None)

    def _touch(self, record: AlarmRecord, now: int) -> None:
        record.updated = now
        self._dirty[record.alarm_id] = record

    # -- engine events --------------------------------------------------------------------------

    def on_condition(self, change: ConditionChange, now: int) -> list[Action]:
        """Open, update, or mark cleared the alarm of a condition change."""
        ward = self.wards.get(change.ward)
        if ward is None:
            return []
        key = change.dedup_key
        alarm_id = self._by_key.get(key)
        record = self._alarms.get(alarm_id) if alarm_id is not None else None
        if record is None and key in self._watched:
            return self._on_watched(self._watched[key], change, now)
        if change.active:
            if record is not None:
                record.value = change.value
                record.text = change.text or record.text
                record.news2 = change.news2 or record.news2
                if record.priority != change.priority and _rank(change.priority) > _rank(record.priority):
                    record.priority = change.priority  # escalate a deepening condition, never downgrade
                if not record.condition_active:
                    record.condition_active = True
                    record.cleared_at = None
                    record.flaps += 1
                self._touch(record, now)
                return []
            return self._open(change, ward, now)
        if record is None:
            return []
        record.condition_active = False
        record.cleared_at = now
        if change.value is not None:
            record.value = change.value
        self._touch(record, now)
        if ward.reopen_window_ms == 0 and not self._latched(record, ward):
            return self._resolve(record, None, now)
        return []

    def _on_watched(self, watch: AlarmRecord, change: ConditionChange, now: int) -> list[Action]:
        """A change of a condition whose alarm was resolved by hand while it lasted."""
        if not change.active:  # cleared within the hold: the clinician's judgement stands, nothing opens
            watch.condition_active = False
            watch.cleared_at = now
            self._drop_watch(watch, "cleared", now)
            return []
        watch.value = change.value
        watch.text = change.text or watch.text
        watch.news2 = change.news2 or watch.news2
        self._touch(watch, now)
        self._unconfirmed.discard(watch.dedup_key)  # re-reported since the start: the condition lasts
        if _rank(change.priority) > _rank(watch.priority):  # deeper than what was resolved: alarm at once
            watch.priority = change.priority
            return self._reraise(watch, now)
        if watch.recheck_at is not None and now >= watch.recheck_at:  # a restored watch re-reported late
            return self._reraise(watch, now)
        return []

    def _reraise(self, watch: AlarmRecord, now: int) -> list[Action]:
        """The condition outlasted the hold after a manual resolve: open a new alarm, paged as a new onset."""
        del self._watched[watch.dedup_key]
        self._unconfirmed.discard(watch.dedup_key)
        ward = self.wards[watch.ward]
        resolved_min = (now - (watch.resolved_at or now)) / 60_000
        text = f"{watch.text or watch.rule} - re-alarmed: still present {resolved_min:.0f} min after a manual resolve"
        started = max(now, watch.started + 1)  # a new alarm id even if the clock has not moved (tests)
        change = ConditionChange(
            watch.patient,
            watch.ward,
            watch.rule,
            watch.category,
            watch.priority,
            True,
            started,
            watch.value,
            text,
            watch.news2,
        )
        actions = self._open(change, ward, now, reason="realarm")
        reopened = self._alarms[self._by_key[watch.dedup_key]]
        reopened.reraised_from = watch.alarm_id
        watch.recheck_at = None
        watch.reraised_as = reopened.alarm_id
        self._touch(watch, now)
        return actions

    def _open(self, change: ConditionChange, ward: WardPolicy, now: int, *, reason: str = "onset") -> list[Action]:
        started = change.t
        alarm_id = alarm_id_for(change.dedup_key, started)
        while alarm_id in self._alarms or alarm_id in self._dirty:  # same key and start: after a manual resolve
            started += 1
            alarm_id = alarm_id_for(change.dedup_key, started)
        record = AlarmRecord(
            alarm_id=alarm_id,
            dedup_key=change.dedup_key,
            patient=change.patient,
            ward=change.ward,
            rule=change.rule,
            category=change.category,
            priority=change.priority,
            state=AlarmState.ACTIVE,
            started=started,
            updated=now,
            value=change.value,
            text=change.text,
            news2=change.news2,
        )
        self._alarms[alarm_id] = record
        self._by_key[change.dedup_key] = alarm_id
        self._touch(record, now)
        self._opened.append((record, reason))
        actions: list[Action] = [PublishAlarm(record.to_alarm(now))]
        actions += self._start_round(record, ward, now, first=True)
        return actions

    # -- escalation -----------------------------------------------------------------------------

    def _start_round(self, record: AlarmRecord, ward: WardPolicy, now: int, *, first: bool) -> list[Action]:
        policy = ward.policy(record.priority, record.rule)
        if policy is None:
            record.next_step_at = None
            return []
        if not first:
            record.round += 1
        record.step = -1
        record.failsafe_paged = False
        return self._page_step(record, policy, 0, now)

    def _page_step(self, record: AlarmRecord, policy: Policy, step: int, now: int) -> list[Action]:
        target = policy.target(step)
        if target is None:
            record.next_step_at = None
            return []
        destination, timeout_ms = target
        record.step = step
        record.next_step_at = now + timeout_ms if timeout_ms is not None else None
        if destination == policy.failsafe:
            if record.failsafe_paged:
                return []
            record.failsafe_paged = True
        self._touch(record, now)
        return [self._page(record, destination, step, now)]

    def _page(self, record: AlarmRecord, destination: str, step: int, now: int) -> SendPage:
        record.pages += 1
        if destination not in record.paged:
            record.paged.append(destination)
        page_id = page_id_for(record.alarm_id, record.round, step)
        return SendPage(self._make_page(record, page_id, destination, step, now, AlarmState.ACTIVE))

    @staticmethod
    def _make_page(record: AlarmRecord, page_id: str, destination: str, step: int, now: int, state: AlarmState) -> Page:
        return Page(
            page_id=page_id,
            alarm_id=record.alarm_id,
            dedup_key=record.dedup_key,
            patient=record.patient,
            ward=record.ward,
            priority=record.priority,
            destination=destination,
            step=step,
            t=now,
            text=record.text or f"{record.rule} ({record.priority} priority)",
            state=state,
        )

    def on_delivery_failed(self, page: Page, now: int) -> list[Action]:
        """A page could not be delivered on any channel: page the ward's failsafe (once per round)."""
        record = self._alarms.get(page.alarm_id)
        if record is None or page.state is not AlarmState.ACTIVE:
            return []
        ward = self.wards[record.ward]
        if page.destination == ward.failsafe or record.failsafe_paged:
            return []
        policy = ward.policy(record.priority, record.rule)
        failsafe_step = len(policy.steps) if policy is not None else 0
        record.failsafe_paged = True
        self._touch(record, now)
        page_id = page_id_for(record.alarm_id, record.round, failsafe_step)
        record.pages += 1
        if ward.failsafe not in record.paged:
            record.paged.append(ward.failsafe)
        return [SendPage(self._make_page(record, page_id, ward.failsafe, failsafe_step, now, AlarmState.ACTIVE))]

    def tick(self, now: int) -> list[Action]:
        """Everything due by ``now``: escalation steps, expired silences, acknowledgement timeouts, resolutions,
        and new alarms of conditions that outlasted the hold after a manual resolve."""
        actions: list[Action] = []
        for watch in list(self._watched.values()):
            due = self._watch_due(watch)
            if due is None or now < due:
                continue
            if watch.dedup_key in self._unconfirmed:  # restored, and the engine never re-reported it
                self._drop_watch(watch, "not_rereported", now)
            else:
                actions += self._reraise(watch, now)
        for record in list(self._alarms.values()):
            ward = self.wards[record.ward]
            if (
                not record.condition_active
                and record.cleared_at is not None
                and now >= record.cleared_at + ward.reopen_window_ms
                and not self._latched(record, ward)
            ):
                actions += self._resolve(record, None, now)
                continue
            if record.state is AlarmState.SILENCED and record.silenced_until is not None:
                if now >= record.silenced_until:
                    actions += self._reactivate(record, ward, now)
            elif record.state is AlarmState.ACKNOWLEDGED and record.renotify_at is not None:
                if record.condition_active and now >= record.renotify_at:
                    actions += self._reactivate(record, ward, now)
            elif (
                record.state is AlarmState.ACTIVE
                and (record.condition_active or self._latched(record, ward))
                and record.next_step_at is not None
                and now >= record.next_step_at
            ):
                policy = ward.policy(record.priority, record.rule)
                if policy is not None:
                    actions += self._page_step(record, policy, record.step + 1, now)
        return actions

    def _reactivate(self, record: AlarmRecord, ward: WardPolicy, now: int) -> list[Action]:
        record.state = AlarmState.ACTIVE
        record.actor = None
        record.silenced_until = None
        record.renotify_at = None
        self._touch(record, now)
        return [PublishAlarm(record.to_alarm(now)), *self._start_round(record, ward, now, first=False)]

    # -- clinicians' commands -------------------------------------------------------------------

    def _open_record(self, alarm_id: str) -> AlarmRecord:
        record = self._alarms.get(alarm_id)
        if record is None:
            raise AlarmNotFoundError(alarm_id)
        return record

    def acknowledge(self, alarm_id: str, actor: str, reason: str, now: int) -> list[Action]:
        """Acknowledge: stop escalation; re-notify if the condition is still present after the ack timeout."""
        record = self._open_record(alarm_id)
        ward = self.wards[record.ward]
        policy = ward.policy(record.priority, record.rule)
        if self._latched(record, ward) and not record.condition_active:
            # a latched alarm whose condition is gone: seeing it is all that was missing
            record.acknowledged_at = now
            if record.first_ack_at is None:
                record.first_ack_at = now
            return self._resolve(record, actor, now)
        record.state = AlarmState.ACKNOWLEDGED
        record.actor = actor
        record.acknowledged_at = now
        if record.first_ack_at is None:
            record.first_ack_at = now
        record.silenced_until = None
        record.next_step_at = None
        record.renotify_at = now + policy.ack_timeout_ms if policy is not None else None
        self._touch(record, now)
        return [PublishAlarm(record.to_alarm(now))]

    def silence(self, alarm_id: str, actor: str, reason: str, until: int, now: int) -> list[Action]:
        """Silence until ``until`` (at most the ward's ``max_silence_s``); no pages meanwhile."""
        record = self._open_record(alarm_id)
        ward = self.wards[record.ward]
        if until <= now:
            raise InvalidTransitionError("a silence must end in the future")
        if until - now > ward.max_silence_ms:
            raise InvalidTransitionError(f"a silence may last at most {ward.max_silence_ms / 60000:g} minutes")
        record.state = AlarmState.SILENCED
        record.actor = actor
        record.silenced_until = until
        record.next_step_at = None
        record.renotify_at = None
        self._touch(record, now)
        return [PublishAlarm(record.to_alarm(now))]

    def resolve(self, alarm_id: str, actor: str, reason: str, now: int, *, recheck: bool = True) -> list[Action]:
        """Resolve by hand (the clinician judged it handled); the next onset opens a new alarm.

        If the condition is still present, a new alarm opens when it outlasts the ward's recheck hold
        (``record.recheck_at``; see the module docstring). ``recheck=False``: not watched (discharge).
        """
        record = self._open_record(alarm_id)
        actions = self._resolve(record, actor, now)
        if recheck and record.condition_active:
            record.recheck_at = now + self.wards[record.ward].recheck_ms
            self._watched[record.dedup_key] = record
            self._unconfirmed.discard(record.dedup_key)
        return actions

    def _resolve(self, record: AlarmRecord, actor: str | None, now: int) -> list[Action]:
        record.state = AlarmState.RESOLVED
        record.actor = actor
        record.resolved_at = now
        record.next_step_at = None
        record.renotify_at = None
        record.silenced_until = None
        self._touch(record, now)
        del self._alarms[record.alarm_id]
        if self._by_key.get(record.dedup_key) == record.alarm_id:
            del self._by_key[record.dedup_key]
        actions: list[Action] = [PublishAlarm(record.to_alarm(now))]
        if self.wards[record.ward].notify_resolved:
            for destination in record.paged:
                page_id = f"{record.alarm_id}.resolved.{destination}"
                actions.append(SendPage(self._make_page(record, page_id, destination, -1, now, AlarmState.RESOLVED)))
        return actions


_RANKS = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2}


def _rank(priority: Priority) -> int:
    return _RANKS[priority]
