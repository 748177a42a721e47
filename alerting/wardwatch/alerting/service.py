"""The alerting service: MQTT in, engine, alarm manager, pager, API and persistence in one TaskGroup.

:class:`AlarmService` ties the pure :class:`~wardwatch.alerting.manager.AlarmManager` to the store
(alarm state, pages and audit in one transaction before anything is delivered), the pager and the
MQTT alarm publisher, and runs the escalation timer: it sleeps exactly until the manager's next due
time (or until woken by a change), on a :class:`Clock` that tests can replace.

:func:`run` is the whole service: it subscribes to vitals, device, gateway and gap topics of the
wards it owns (partitioning by ward), feeds the engine (anything satisfying :class:`ConditionSource`),
and serves the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp

from wardwatch.alerting.audit import SYSTEM_ACTOR, AuditEntry
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import Action, AlarmManager, AlarmNotFoundError, AlarmRecord, PublishAlarm, SendPage
from wardwatch.alerting.metrics import AlertingMetrics
from wardwatch.alerting.paging import Channel, Pager, Publisher, build_channel
from wardwatch.alerting.rules import RuleSet, load_rules
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.store import Store
from wardwatch.core.errors import ConfigError, SchemaError, TopicError
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import (
    SCHEMA_VERSION,
    Alarm,
    AlarmState,
    DataGap,
    DeadLetter,
    DeviceStatus,
    GatewayStatus,
    Vitals,
    decode,
    decode_vitals,
    encode,
)
from wardwatch.core.topics import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    DEVICE,
    GATEWAY,
    VITALS,
    alarm_topic,
    deadletter_topic,
    parse_topic,
    ward_filter,
)

_log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_BATCH = 64  # messages handled before yielding to the pager


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


class ManualClock:
    """A clock that moves only when told (:meth:`advance`); for deterministic tests."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        """The current manual time."""
        return self._now

    def advance(self, ms: int) -> None:
        """Move time forward and wake sleepers whose time has come."""
        self._now += ms
        self._moved.set()

    async def sleep_until(self, t_ms: int, wake: asyncio.Event) -> None:
        """Wait until the manual time reaches ``t_ms`` or ``wake`` is set."""
        while self._now < t_ms and not wake.is_set():
            self._moved.clear()
            waiter = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait([waiter, woken], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                woken.cancel()


# -- the engine's side ---------------------------------------------------------------------------


class ConditionSource(Protocol):
    """What the service needs from the alarm engine (:class:`wardwatch.alerting.engine.Engine`; pure)."""

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Feed one vitals message."""
        ...

    def on_device_status(self, msg: DeviceStatus, ward: str) -> Sequence[ConditionChange]:
        """Feed one device status."""
        ...

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> Sequence[ConditionChange]:
        """A gateway came online or went offline."""
        ...

    def on_data_gap(self, msg: DataGap, ward: str) -> Sequence[ConditionChange]:
        """A gateway dropped readings."""
        ...

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        """Time passed (deadman timers, delays)."""
        ...


RulesHook = Callable[[RuleSet], None]
"""Called with the new rule set when a clinician changed a patient's thresholds (``Engine.set_rules``)."""


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

    async def __aenter__(self) -> Self:
        try:
            session = await self._stack.enter_async_context(aiohttp.ClientSession())
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
            self.manager.restore(self.store.open_alarms())
            self.metrics.open_alarms.set(len(self.manager.open_alarms()))
            self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            self.pager = await self._stack.enter_async_context(
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
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._ticker.cancel()
        await self._stack.__aexit__(exc_type, exc, tb)

    # -- applying the manager's decisions -------------------------------------------------------

    def _apply(self, actions: Sequence[Action], audit: Iterable[AuditEntry] = (), *, system_audit: bool = True) -> None:
        records = self.manager.take_dirty()
        if not actions and not records and not audit:
            return
        now = self.clock.now_ms()
        entries = list(audit)
        alarms: list[Alarm] = []
        pages = []
        for action in actions:
            if isinstance(action, PublishAlarm):
                alarms.append(action.alarm)
                if system_audit:
                    entries.append(
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
                pages.append(action.page)
        queued = self.store.commit(records, pages, entries)
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

    def _undeliverable(self, page: Any) -> None:
        self._apply(self.manager.on_delivery_failed(page, self.clock.now_ms()))

    async def _escalation_timer(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now_ms()
            self._apply(self.manager.tick(now))
            due = self.manager.next_due()
            await self.clock.sleep_until(due if due is not None else now + 3_600_000, self._wake)

    # -- inputs ----------------------------------------------------------------------------------

    def on_conditions(self, changes: Iterable[ConditionChange]) -> None:
        """Condition changes from the engine."""
        now = self.clock.now_ms()
        actions: list[Action] = []
        for change in changes:
            self.metrics.conditions.labels(rule=change.rule, active=str(change.active).lower()).inc()
            new = self.manager.on_condition(change, now)
            for action in new:
                if isinstance(action, PublishAlarm) and action.alarm.state is AlarmState.ACTIVE:
                    self.metrics.alarms_raised.labels(rule=change.rule, priority=str(change.priority)).inc()
            actions += new
        self._apply(actions)

    def note_patient(self, patient: str, ward: str, t: int) -> None:
        """A patient was monitored at ``t`` (for pages per patient-day)."""
        key = (patient, t // _DAY_MS)
        if key not in self._patient_days:
            self._patient_days.add(key)
            self.store.note_patient_days([(patient, ward, t)])

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

    def resolve(self, alarm_id: str, actor: str, reason: str) -> AlarmRecord:
        """Resolve an open alarm by hand; audited."""
        record = self._command_record(alarm_id)
        actions = self.manager.resolve(alarm_id, actor, reason, self.clock.now_ms())
        self._apply(actions, [self._command_audit("resolve", record, actor, reason)], system_audit=False)
        self.metrics.clinician_actions.labels(action="resolve").inc()
        return record

    def rules_with(self, patient: str, overrides: dict[str, Any]) -> RuleSet:
        """The rule set with ``patient``'s overrides replaced by ``overrides``; raises ConfigError if invalid."""
        current = self.rules.patient_overrides(patient)
        changes: dict[str, Any] = dict.fromkeys(current)
        changes.update(overrides)
        return self.rules.with_patient_override(patient, **changes)

    def set_thresholds(self, patient: str, overrides: dict[str, Any], actor: str, reason: str) -> dict[str, Any]:
        """Replace a patient's threshold overrides: validated, applied, then saved with its audit entry.

        The new rule set goes to every hook in :attr:`rules_hooks` (the engine) first; if a hook fails,
        the previous rules are put back and :class:`ConfigError` says so, and nothing is saved. If saving
        fails, the previous rules are put back too. Returns the old overrides.
        """
        rules = self.rules_with(patient, overrides)
        old = self.store.thresholds(patient) or {}
        previous = self.rules
        try:
            for hook in self.rules_hooks:
                hook(rules)
        except Exception as exc:
            self._restore_rules(previous)
            raise ConfigError(
                f"the alarm engine could not apply these thresholds ({type(exc).__name__}: {exc}); nothing was changed",
                key=f"patients.{patient}",
            ) from exc
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
            self._restore_rules(previous)
            raise
        self.rules = rules
        return old

    def _restore_rules(self, previous: RuleSet) -> None:
        for hook in self.rules_hooks:
            try:
                hook(previous)
            except Exception:
                _log.exception("putting the previous alarm rules back failed")


# -- MQTT input ----------------------------------------------------------------------------------


class _Ingest:
    """Decodes messages of the owned wards and feeds the engine; rejects go to the dead-letter topic."""

    def __init__(self, service: AlarmService, source: ConditionSource, mqtt: MqttClient, service_id: str) -> None:
        self.service = service
        self.source = source
        self.mqtt = mqtt
        self.service_id = service_id
        self.wards = set(service.config.wards)

    def handle(self, topic: str, payload: bytes) -> None:
        metrics = self.service.metrics
        try:
            parts = parse_topic(topic)
            ward = parts.ward
            if ward is None or ward not in self.wards:
                return
            changes: Sequence[ConditionChange]
            if parts.kind == VITALS:
                vitals = decode_vitals(payload)
                metrics.messages.labels(kind="vitals").inc()
                self.service.note_patient(vitals.patient, ward, vitals.samples[-1].t)
                changes = self.source.on_vitals(vitals, ward)
            elif parts.kind == DEVICE:
                message = decode(payload)
                if not isinstance(message, DeviceStatus):
                    raise SchemaError(f"expected device_status on {topic}, got {type(message).__name__}")
                metrics.messages.labels(kind="device_status").inc()
                changes = self.source.on_device_status(message, ward)
            elif parts.kind == GATEWAY and parts.leaf == "availability":
                if payload not in (AVAILABILITY_ONLINE, AVAILABILITY_OFFLINE):
                    raise SchemaError(f"availability must be 'online' or 'offline', got {payload[:20]!r}")
                metrics.messages.labels(kind="availability").inc()
                assert parts.gateway is not None
                online = payload == AVAILABILITY_ONLINE
                now = self.service.clock.now_ms()
                changes = self.source.on_gateway_availability(ward, parts.gateway, online, now)
            elif parts.kind == GATEWAY and parts.leaf == "gap":
                message = decode(payload)
                if not isinstance(message, DataGap):
                    raise SchemaError(f"expected data_gap on {topic}, got {type(message).__name__}")
                metrics.messages.labels(kind="data_gap").inc()
                changes = self.source.on_data_gap(message, ward)
            elif parts.kind == GATEWAY and parts.leaf == "status":
                message = decode(payload)
                if not isinstance(message, GatewayStatus):
                    raise SchemaError(f"expected gateway_status on {topic}, got {type(message).__name__}")
                on_status = getattr(self.source, "on_gateway_status", None)
                changes = on_status(message) if on_status is not None else ()
            else:
                return
        except (SchemaError, TopicError) as exc:
            metrics.rejected.labels(reason=type(exc).__name__).inc()
            dead = DeadLetter(
                v=SCHEMA_VERSION,
                service=self.service_id,
                t=self.service.clock.now_ms(),
                reason=str(exc)[:500],
                topic=topic,
                payload=payload[:4096],
            )
            self.mqtt.publish_nowait(deadletter_topic(self.service_id), encode(dead), qos=0)
            return
        if changes:
            self.service.on_conditions(changes)

    def _handle_safely(self, topic: str, payload: bytes) -> None:
        try:
            self.handle(topic, payload)
        except Exception:  # one bad message must not stop alarm processing for the ward
            self.service.metrics.rejected.labels(reason="internal_error").inc()
            _log.exception("processing a message on %s failed; it was skipped", topic)

    async def consume(self) -> None:
        while True:
            message = await self.mqtt.get_message()
            self._handle_safely(message.topic, message.payload)
            for _ in range(_BATCH):  # drain a burst, but let page deliveries run in between
                more = self.mqtt.get_message_nowait()
                if more is None:
                    break
                self._handle_safely(more.topic, more.payload)

    async def tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            changes = self.source.tick(self.service.clock.now_ms())
            if changes:
                self.service.on_conditions(changes)


def load_rules_with_overrides(config: AlertingConfig, store: Store) -> RuleSet:
    """The configured rules plus every patient override persisted by the API."""
    rules = load_rules(config.rules)
    for patient, overrides in store.all_thresholds().items():
        rules = rules.with_patient_override(patient, **overrides)
    return rules


def default_source(rules: RuleSet) -> ConditionSource:
    """The alarm engine for ``rules``."""
    from wardwatch.alerting.engine import Engine  # the engine engineer's part; numpy/scipy stay lazy

    engine: ConditionSource = Engine(rules)
    return engine


async def _purge_tokens(store: Store, clock: Clock, interval_s: float = 300.0) -> None:
    """Delete expired sessions and tokens now and then (they are refused when expired anyway)."""
    while True:
        store.purge_expired_tokens(clock.now_ms())
        await asyncio.sleep(interval_s)


async def run(
    config: AlertingConfig,
    *,
    source: ConditionSource | None = None,
    clock: Clock | None = None,
    ready: Callable[[AlarmService, int | None], None] | None = None,
) -> None:
    """Run the alerting service until cancelled. ``ready(service, api_port)`` is called once serving."""
    from wardwatch.alerting.api import serve_api  # the API pulls in argon2; keep import cost at start-up

    metrics = AlertingMetrics()
    async with contextlib.AsyncExitStack() as stack:
        store = stack.enter_context(Store(config.database, synchronous=config.database_sync))
        rules = load_rules_with_overrides(config, store)
        engine = source if source is not None else default_source(rules)
        mqtt = await stack.enter_async_context(
            MqttClient(config.mqtt, config.mqtt.client_id or f"wardwatch-{config.service_id}", clean_start=False)
        )
        service = await stack.enter_async_context(
            AlarmService(config, store, clock=clock, publisher=mqtt, metrics=metrics)
        )
        service.rules = rules
        set_rules = getattr(engine, "set_rules", None)
        if callable(set_rules):
            service.rules_hooks.append(set_rules)
        api_port: int | None = None
        if config.api.enabled:
            api_port = await stack.enter_async_context(serve_api(service, config.api))
        await mqtt.wait_connected(timeout=None)
        for ward in config.wards:
            for kind in (VITALS, DEVICE, GATEWAY):
                await mqtt.subscribe(ward_filter(kind, ward), qos=1)
        service.inputs_ready = True
        ingest = _Ingest(service, engine, mqtt, config.service_id)
        _log.info("alerting service %s running for wards %s", config.service_id, ", ".join(config.wards))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest.consume(), name="ingest")
            tasks.create_task(ingest.tick(config.tick_s), name="engine-tick")
            tasks.create_task(_purge_tokens(store, service.clock), name="purge-tokens")
            if ready is not None:
                ready(service, api_port)
