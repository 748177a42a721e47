"""The alarm service: alarm manager, store, pager, alarm publishing and the escalation timer.

:class:`AlarmService` ties the pure :class:`~wardwatch.alerting.manager.AlarmManager` to the store
(alarm state, pages and audit in one transaction before anything is delivered), the pager and the
MQTT alarm publisher, and runs the escalation timer: it sleeps exactly until the manager's next due
time (or until woken by a change), on a :class:`Clock` that tests can replace.

Failure is contained and reported, never silent: an exception in the manager or the store is
caught, counted (``wardwatch_alerting_failures``) and shown by :meth:`AlarmService.health`
(``GET /healthz`` turns unhealthy); alarm state the store could not save is kept and retried, so
no alarm is dropped. Technical alarms about the service itself (``monitoring_impaired``,
``device_clock_wrong``, ``thresholds_rejected``) enter through :meth:`AlarmService.technical`,
straight into the manager: they do not depend on the engine whose failure they report.

Start-up (MQTT subscriptions, the engine, the API) is in :mod:`wardwatch.alerting.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self

import aiohttp

from wardwatch.alerting.audit import SYSTEM_ACTOR, AuditEntry
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.handover.records import HandoverRecords
from wardwatch.alerting.live import LiveBoard
from wardwatch.alerting.manager import Action, AlarmManager, AlarmNotFoundError, AlarmRecord, PublishAlarm, SendPage
from wardwatch.alerting.metrics import AlertingMetrics
from wardwatch.alerting.observations.records import Observations
from wardwatch.alerting.paging import Pager, build_channel
from wardwatch.alerting.protocols import Channel, Publisher
from wardwatch.alerting.registry.live_roster import connect_live_roster
from wardwatch.alerting.registry.registry import Registry
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.store import Store
from wardwatch.core.errors import ConfigError
from wardwatch.core.lifecycle import opening
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.schema import (
    Alarm,
    AlarmCategory,
    Page,
    Priority,
    encode,
)
from wardwatch.core.topics import alarm_topic

_log = logging.getLogger(__name__)

_DAY_MS: Final = 86_400_000

ALL_PATIENTS: Final = "all-patients"
"""The patient id of a technical alarm about a whole ward (e.g. the engine tick failing)."""

MONITORING_IMPAIRED: Final = "monitoring_impaired"
DEVICE_CLOCK_WRONG: Final = "device_clock_wrong"
THRESHOLDS_REJECTED: Final = "thresholds_rejected"
SERVICE_RULES: Final = frozenset({MONITORING_IMPAIRED, DEVICE_CLOCK_WRONG, THRESHOLDS_REJECTED})
"""Technical alarms raised by the service itself, not by the engine."""
ESCALATION_GATHER_S: Final = 0.1
DEGRADED_PROBLEMS: Final = frozenset({"monitoring_delayed"})
"""Problems that make ``/healthz`` say ``degraded`` rather than ``unhealthy`` (still 503: look now)."""
WATCH_END_REASONS: Final = {
    "cleared": "the condition cleared within the hold",
    "discharged": "the patient was discharged",
    "not_rereported": "restored after a restart, never re-reported by the engine: taken as cleared while down",
}
"""Why a watch of an alarm resolved by hand while present ended without a re-alarm (logged)."""


# -- clocks -------------------------------------------------------------------------------------


class Clock(Protocol):
    """Wall time in ms and a way to wait until a time (or until woken)."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        ...

    async def sleep_until(self, t_ms: int, wake: asyncio.Event) -> None:
        """Return at ``t_ms`` or as soon as ``wake`` is set, whichever comes first."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        return time.time_ns() // 1_000_000

    async def sleep_until(self, t_ms: int, wake: asyncio.Event) -> None:
        """Sleep until ``t_ms`` or ``wake``."""
        delay = max(0.0, (t_ms - self.now_ms()) / 1000)
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
        # arrives as the event is set, which would leave this task sleeping through shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()


# -- the engine's side ---------------------------------------------------------------------------


RulesHook = Callable[[RuleSet], None]
"""Called with the new rule set when a clinician changed a patient's thresholds (``Engine.set_rules``)."""


@dataclass
class _Unsaved:
    """Alarm state, pages and audit entries waiting for the store (kept and retried if it fails)."""

    records: dict[str, AlarmRecord] = field(default_factory=dict)
    pages: list[Page] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.pages or self.audit or self.alarms)


# -- the alarm service -------------------------------------------------------------------------


class AlarmService:
    """Manager + store + pager + alarm publishing + escalation timer. An async context manager.

    ``channels`` overrides the channels built from the configuration (tests inject failing ones).
    """

    def __init__(
        self,
        config: AlertingConfig,
        store: Store,
        *,
        clock: Clock | None = None,
        publisher: Publisher | None = None,
        metrics: AlertingMetrics | None = None,
        channels: dict[tuple[str, str], list[Channel]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.publisher = publisher
        self.metrics = metrics or AlertingMetrics()
        self.manager = AlarmManager({ward: ward_policy(ward, wc) for ward, wc in config.wards.items()})
        self._channels_override = channels
        self._wake = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None
        self.pager: Pager | None = None
        self._patient_days: set[tuple[str, int]] = set()
        self.rules = RuleSet()
        self.rules_hooks: list[RulesHook] = []
        self.inputs_ready = False  # subscribed to the wards' inputs (shown by GET /healthz)
        self._unsaved = _Unsaved()
        self._retry_at: int | None = None
        self._problems: dict[str, str] = {}  # what makes the service unhealthy, by kind
        self._warn = RateLimitedLog(_log, interval_s=30.0)
        self.registry = Registry(self)  # patients, gateways, kits (docs/registry.md)
        # latest values and alarm changes for the console's live streams (never blocks the alarm path)
        self.live = LiveBoard(
            config.wards,
            self.manager.open_alarms,
            watched=self.manager.watched,
            registry=self.metrics.registry,
            now_ms=self.clock.now_ms,
        )
        connect_live_roster(self.registry, self.live)  # admissions and discharges reach the board live
        self.observations = Observations(self)  # a nurse's NEWS2 observations (docs/news2.md)
        self.handover = HandoverRecords(self)  # review notes, device history, NEWS2 log (docs/alerting.md)

    # -- health -----------------------------------------------------------------------------------

    def set_problem(self, kind: str, text: str | None) -> None:
        """Report (``text``) or clear (``None``) a reason the service is unhealthy; shown by ``/healthz``."""
        if text is None:
            if self._problems.pop(kind, None) is not None:
                _log.warning("recovered: %s", kind)
        else:
            if kind not in self._problems:
                _log.error("unhealthy: %s", text)
            self._problems[kind] = text
        self.metrics.healthy.set(0 if self._problems else 1)

    def health(self) -> list[str]:
        """Why the service is unhealthy (empty: healthy)."""
        return [self._problems[kind] for kind in sorted(self._problems)]

    def status(self) -> str:
        """``ok``; ``degraded`` if it only runs late (alarms still come); else ``unhealthy``."""
        if not self._problems:
            return "ok"
        return "degraded" if self._problems.keys() <= DEGRADED_PROBLEMS else "unhealthy"

    def technical(
        self,
        ward: str,
        patient: str,
        rule: str,
        priority: Priority,
        active: bool,
        text: str,
        value: float | None = None,
    ) -> None:
        """Raise or clear one of the service's own technical alarms (see :data:`SERVICE_RULES`)."""
        change = ConditionChange(
            patient=patient,
            ward=ward,
            rule=rule,
            category=AlarmCategory.TECHNICAL,
            priority=priority,
            active=active,
            t=self.clock.now_ms(),
            value=value,
            text=text,
        )
        self.on_conditions([change])

    async def __aenter__(self) -> Self:
        async with opening(self._stack) as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            channels = self._channels_override
            if channels is None:
                channels = {
                    (ward, destination): [
                        build_channel(i, c, session=session, publisher=self.publisher)
                        for i, c in enumerate(dc.channels)
                    ]
                    for ward, wc in self.config.wards.items()
                    for destination, dc in wc.destinations.items()
                }
            # and alarms resolved by hand while their condition lasted: a new alarm opens if it outlasts the hold
            self.manager.restore([*self.store.open_alarms(), *self.store.watched_alarms()])
            self.metrics.open_alarms.set(len(self.manager.open_alarms()))
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self.pager = await stack.enter_async_context(
                Pager(
                    self.store,
                    channels,
                    self.config.paging,
                    is_wanted=self.manager.is_page_wanted,
                    on_undeliverable=self._undeliverable,
                    metrics=self.metrics,
                    clock=self.clock.now_ms,
                )
            )
            self._ticker = self._tasks.create_task(self._escalation_timer(), name="escalation-timer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ticker.cancel()
        await self._stack.__aexit__(exc_type, exc, tb)

    # -- applying the manager's decisions -------------------------------------------------------

    def _apply(self, actions: Sequence[Action], audit: Iterable[AuditEntry] = (), *, system_audit: bool = True) -> None:
        unsaved = self._unsaved
        self._count_opened_and_dropped()
        for record in self.manager.take_dirty():
            unsaved.records[record.alarm_id] = record
        unsaved.audit += audit
        if not actions and not unsaved:
            return
        now = self.clock.now_ms()
        for action in actions:
            if isinstance(action, PublishAlarm):
                unsaved.alarms.append(action.alarm)
                if system_audit:
                    unsaved.audit.append(
                        AuditEntry(
                            t=now,
                            actor=action.alarm.actor or SYSTEM_ACTOR,
                            action=f"alarm_{action.alarm.state}",
                            alarm_id=action.alarm.alarm_id,
                            patient=action.alarm.patient,
                            ward=action.alarm.ward,
                            details={"rule": action.alarm.rule, "priority": str(action.alarm.priority)},
                        )
                    )
            elif isinstance(action, SendPage):
                unsaved.pages.append(action.page)
        self._save()

    def _count_opened_and_dropped(self) -> None:
        """Count the alarms the manager opened (onsets and re-alarms) and log and count ended watches."""
        for record, reason in self.manager.take_opened():
            self.metrics.alarms_raised.labels(rule=record.rule, priority=str(record.priority), reason=reason).inc()
        for watch, reason in self.manager.take_dropped():
            self.metrics.watches_dropped.labels(reason=reason).inc()
            _log.info(
                "watch of %s (resolved by %s while present) ended without a re-alarm: %s",
                watch.alarm_id,
                watch.actor,
                WATCH_END_REASONS.get(reason, reason),
            )

    def end_watches(self, patient: str) -> None:
        """The patient is discharged: alarms of theirs resolved by hand while present no longer re-alarm."""
        self.manager.end_watches(patient, self.clock.now_ms())
        self._apply([])

    def _save(self) -> None:
        """Write what is unsaved in one transaction, then deliver; on failure keep it and retry soon."""
        unsaved = self._unsaved
        if not unsaved:
            return
        try:
            queued = self.store.commit(unsaved.records.values(), unsaved.pages, unsaved.audit)
        except Exception as exc:  # the store failing must not lose alarms: keep them, retry, say so
            self.metrics.failures.labels(stage="store").inc()
            retry_s = self.config.guard.retry_s
            self._retry_at = self.clock.now_ms() + round(retry_s * 1000)
            self.set_problem(
                "store",
                f"the alarm store fails ({type(exc).__name__}: {exc}); {len(unsaved.pages)} page(s) and "
                f"{len(unsaved.records)} alarm change(s) wait, retried every {retry_s:g} s",
            )
            self._warn.warning("store", "saving alarm state failed; kept for retry: %r", exc)
            self._wake.set()
            return
        self._retry_at = None
        self.set_problem("store", None)
        alarms = unsaved.alarms
        if unsaved.records:
            self.live.guard(lambda: self.live.on_alarms(unsaved.records.values()))
        self._unsaved = _Unsaved()
        self.metrics.open_alarms.set(len(self.manager.open_alarms()))
        if self.pager is not None and queued:
            self.pager.submit(queued)
        if self.publisher is not None and self._tasks is not None:
            for alarm in alarms:
                publishing = self._publish_alarm(alarm)
                try:
                    self._tasks.create_task(publishing, name=f"publish:{alarm.alarm_id}")
                except RuntimeError:  # shutting down; the state is in the store
                    publishing.close()
        self._wake.set()

    async def _publish_alarm(self, alarm: Alarm) -> None:
        assert self.publisher is not None
        try:
            await self.publisher.publish(alarm_topic(alarm.ward, alarm.patient), encode(alarm), qos=1, retain=False)
        except Exception as exc:  # logged; the alarm's state is in the store and the API
            _log.warning("publishing alarm %s failed: %s", alarm.alarm_id, exc)

    def _undeliverable(self, page: Page) -> None:
        try:
            actions = self.manager.on_delivery_failed(page, self.clock.now_ms())
        except Exception:  # a manager bug must not stop the pager; the failsafe is paged by the next round
            self.metrics.failures.labels(stage="manager").inc()
            _log.exception("handling the undeliverable page %s failed", page.page_id)
            return
        self._apply(actions)

    async def _escalation_timer(self) -> None:
        while True:
            now = self.clock.now_ms()
            try:
                self._apply(self.manager.tick(now))
                self.set_problem("escalation", None)
            except Exception as exc:  # never let the timer die: escalation is what pages people
                self.metrics.failures.labels(stage="manager").inc()
                self.set_problem("escalation", f"the escalation timer fails ({type(exc).__name__}: {exc})")
                self._warn.warning("escalation", "escalation tick failed: %r", exc)
                await asyncio.sleep(self.config.guard.retry_s)
                continue
            due = self.manager.next_due()
            wake_at = due if due is not None else now + 3_600_000
            if self._retry_at is not None:
                wake_at = min(wake_at, self._retry_at)
            self._wake.clear()  # after the work above, which may set it: this loop has seen everything
            await self.clock.sleep_until(wake_at, self._wake)
            await self._gather_changes()

    async def _gather_changes(self) -> None:
        """Woken by a change rather than a due time: let a burst of changes gather before the next scan.

        ``tick`` and ``next_due`` scan every open alarm; woken by every saved change, a burst of onsets
        made that quadratic (18 % of the CPU with 2,500 alarms opening in 20 s, docs/scaling.md). First
        pages never wait for this timer (they are sent as the alarm opens); escalation steps may run
        ``ESCALATION_GATHER_S`` late.
        """
        if self._wake.is_set():
            await asyncio.sleep(ESCALATION_GATHER_S)

    # -- inputs ----------------------------------------------------------------------------------

    def on_conditions(self, changes: Iterable[ConditionChange]) -> None:
        """Condition changes from the engine."""
        now = self.clock.now_ms()
        actions: list[Action] = []
        for change in changes:
            self.metrics.conditions.labels(rule=change.rule, active=str(change.active).lower()).inc()
            try:
                new = self.manager.on_condition(change, now)
            except Exception as exc:  # one bad change must not cost the others their alarms
                self.metrics.failures.labels(stage="manager").inc()
                self.set_problem("manager", f"the alarm manager failed on a condition change ({type(exc).__name__})")
                _log.exception("the alarm manager failed on %s/%s/%s", change.ward, change.patient, change.rule)
                continue
            actions += new
        self._apply(actions)

    def note_patient(self, patient: str, ward: str, t: int) -> None:
        """A patient was monitored at ``t`` (for pages per patient-day)."""
        key = (patient, t // _DAY_MS)
        if key not in self._patient_days:
            try:
                self.store.note_patient_days([(patient, ward, t)])
            except Exception as exc:  # burden statistics only: never at the cost of the alarm path
                self.metrics.failures.labels(stage="store").inc()
                self._warn.warning("patient-days", "recording a patient-day failed: %r", exc)
                return
            self._patient_days.add(key)

    def _command_audit(self, action: str, record: AlarmRecord, actor: str, reason: str, **details: Any) -> AuditEntry:
        return AuditEntry(
            t=self.clock.now_ms(),
            actor=actor,
            action=action,
            alarm_id=record.alarm_id,
            patient=record.patient,
            ward=record.ward,
            reason=reason,
            details={"rule": record.rule, "priority": str(record.priority), **details},
        )

    def _command_record(self, alarm_id: str) -> AlarmRecord:
        """The open alarm a clinician's command is about (the manager changes this same record in place)."""
        record = self.manager.get(alarm_id)
        if record is None:
            raise AlarmNotFoundError(alarm_id)
        return record

    def acknowledge(self, alarm_id: str, actor: str, reason: str) -> AlarmRecord:
        """Acknowledge an open alarm (stops escalation); audited."""
        record = self._command_record(alarm_id)  # before: acknowledging a latched, cleared alarm resolves it
        actions = self.manager.acknowledge(alarm_id, actor, reason, self.clock.now_ms())
        audit = self._command_audit("acknowledge", record, actor, reason, state=str(record.state))
        self._apply(actions, [audit], system_audit=False)
        self.metrics.clinician_actions.labels(action="acknowledge").inc()
        return record

    def silence(self, alarm_id: str, actor: str, reason: str, minutes: float) -> AlarmRecord:
        """Silence an open alarm for ``minutes``; audited."""
        now = self.clock.now_ms()
        record = self._command_record(alarm_id)
        actions = self.manager.silence(alarm_id, actor, reason, now + round(minutes * 60_000), now)
        audit = self._command_audit("silence", record, actor, reason, minutes=minutes, until=record.silenced_until)
        self._apply(actions, [audit], system_audit=False)
        self.metrics.clinician_actions.labels(action="silence").inc()
        return record

    def resolve(self, alarm_id: str, actor: str, reason: str, *, recheck: bool = True) -> AlarmRecord:
        """Resolve an open alarm by hand; audited. A condition still present re-alarms after the ward's
        recheck hold (``record.recheck_at``) unless ``recheck`` is False (discharge: monitoring ends)."""
        record = self._command_record(alarm_id)
        actions = self.manager.resolve(alarm_id, actor, reason, self.clock.now_ms(), recheck=recheck)
        realarm = {} if record.recheck_at is None else {"realarm_at": record.recheck_at}
        audit = self._command_audit("resolve", record, actor, reason, **realarm)
        self._apply(actions, [audit], system_audit=False)
        self.metrics.clinician_actions.labels(action="resolve").inc()
        return record

    def rules_with(self, patient: str, overrides: dict[str, Any]) -> RuleSet:
        """The rule set with ``patient``'s overrides replaced by ``overrides``; raises ConfigError if invalid."""
        current = self.rules.patient_overrides(patient)
        changes: dict[str, Any] = dict.fromkeys(current)
        changes.update(overrides)
        return self.rules.with_patient_override(patient, **changes)

    def _restore_rules(self, rules: RuleSet) -> None:
        for hook in self.rules_hooks:
            try:
                hook(rules)
            except Exception:  # the engine refuses even the rules it ran with: say so loudly
                self.metrics.failures.labels(stage="rules").inc()
                self.set_problem("rules", "the engine refused to go back to the rules in force")
                _log.exception("restoring the rules in force failed")

    def set_thresholds(self, patient: str, overrides: dict[str, Any], actor: str, reason: str) -> dict[str, Any]:
        """Replace a patient's threshold overrides: validated, tried on the engine, then saved with its audit entry.

        Raises :class:`ConfigError` if invalid or if the engine cannot apply them (the old rules stay
        in force). The new rule set goes to every hook in :attr:`rules_hooks` (the engine) before it
        is persisted. Returns the old overrides; clears a ``thresholds_rejected`` alarm of the patient.
        """
        rules = self.rules_with(patient, overrides)
        old_rules = self.rules
        try:
            for hook in self.rules_hooks:
                hook(rules)
        except Exception as exc:
            self._restore_rules(old_rules)
            raise ConfigError(
                f"the engine cannot apply them ({type(exc).__name__}: {exc}); nothing was changed",
                key=f"patients.{patient}",
            ) from None
        old = self.store.thresholds(patient) or {}
        now = self.clock.now_ms()
        entry = AuditEntry(
            t=now,
            actor=actor,
            action="thresholds_set",
            patient=patient,
            reason=reason,
            details={"old": old, "new": overrides},
        )
        try:
            self.store.set_thresholds(patient, overrides, actor, now, entry)
        except BaseException:
            self._restore_rules(old_rules)
            raise
        self.rules = rules
        priority = self.config.guard.thresholds_rejected_priority
        for ward in self.config.wards:  # a no-op unless the stored ones had been rejected at start-up
            self.technical(ward, patient, THRESHOLDS_REJECTED, priority, False, "thresholds set again")
        return old
