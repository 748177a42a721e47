"""The alarm record the manager keeps and persists, the actions it returns, and their ids.

Split from :mod:`wardwatch.alerting.manager` (which re-exports every name here).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from wardwatch.alerting.errors import AlertingError
from wardwatch.core.schema import Alarm, AlarmCategory, AlarmState, News2, Page, Priority

__all__ = [
    "Action",
    "AlarmNotFoundError",
    "AlarmRecord",
    "InvalidTransitionError",
    "PublishAlarm",
    "SendPage",
    "alarm_id_for",
    "page_id_for",
    "resolve_notice",
]


class AlarmNotFoundError(AlertingError, LookupError):
    """No open alarm has this id."""

    def __init__(self, alarm_id: str) -> None:
        self.alarm_id = alarm_id
        super().__init__(f"no open alarm {alarm_id!r} (it may have been resolved)")


class InvalidTransitionError(AlertingError, ValueError):
    """The command does not apply to the alarm in its current state (or its arguments are invalid)."""


class AlarmRecord(msgspec.Struct, kw_only=True):
    """The manager's full state of one alarm (persisted as JSON)."""

    alarm_id: str
    dedup_key: str
    patient: str
    ward: str
    rule: str
    category: AlarmCategory
    priority: Priority
    state: AlarmState
    started: int
    updated: int
    value: float | None = None
    text: str = ""
    news2: News2 | None = None
    actor: str | None = None
    condition_active: bool = True
    cleared_at: int | None = None
    round: int = 0
    step: int = -1  # last step paged in this round (len(steps) = failsafe)
    next_step_at: int | None = None
    failsafe_paged: bool = False
    acknowledged_at: int | None = None
    first_ack_at: int | None = None
    silenced_until: int | None = None
    renotify_at: int | None = None
    resolved_at: int | None = None
    flaps: int = 0
    pages: int = 0
    paged: list[str] = msgspec.field(default_factory=list)  # destinations paged, for "resolved" notices
    recheck_at: int | None = None  # resolved by hand, condition present: re-alarm then unless it clears
    reraised_as: str | None = None  # the new alarm opened when the condition outlasted the recheck hold
    reraised_from: str | None = None  # the alarm resolved by hand whose condition this one continues

    def to_alarm(self, t: int) -> Alarm:
        """The wire message announcing this alarm's current state at ``t``."""
        return Alarm(
            alarm_id=self.alarm_id,
            dedup_key=self.dedup_key,
            patient=self.patient,
            ward=self.ward,
            rule=self.rule,
            category=self.category,
            priority=self.priority,
            state=self.state,
            t=t,
            started=self.started,
            value=self.value,
            text=self.text,
            actor=self.actor,
            news2=self.news2,
        )

    @property
    def is_open(self) -> bool:
        """Not yet resolved."""
        return self.state is not AlarmState.RESOLVED


@dataclass(frozen=True, slots=True)
class PublishAlarm:
    """Publish this alarm state change (MQTT ``alarm_topic``) and audit it."""

    alarm: Alarm


@dataclass(frozen=True, slots=True)
class SendPage:
    """Deliver ``page``; ``page.page_id`` is its idempotency key (alarm, round and step)."""

    page: Page

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts: receivers deduplicate on it."""
        return self.page.page_id


Action = PublishAlarm | SendPage


def resolve_notice(record: AlarmRecord) -> dict[str, object]:
    """What the answer to a manual resolve adds: whether the condition lasts, and when it re-alarms."""
    if record.recheck_at is None:
        return {"condition_still_present": False, "realarm_at": None}
    minutes = (record.recheck_at - (record.resolved_at or record.recheck_at)) / 60_000
    return {
        "condition_still_present": True,
        "realarm_at": record.recheck_at,
        "notice": (
            f"resolved, but the condition is still present: a new alarm opens in {minutes:g} min "
            "unless it clears before then"
        ),
    }


def alarm_id_for(dedup_key: str, started: int) -> str:
    """Deterministic alarm id of the alarm with ``dedup_key`` that started at ``started``."""
    digest = hashlib.sha256(f"{dedup_key}@{started}".encode()).hexdigest()
    return f"a-{digest[:20]}"


def page_id_for(alarm_id: str, round_: int, step: int) -> str:
    """Idempotency key of the page of ``step`` in escalation round ``round_`` of an alarm."""
    return f"{alarm_id}.r{round_}.s{step}"
