"""The alerting service's start-up and MQTT input: what ``wardwatch alerting run`` runs.

:func:`run` opens the store, loads the rules (with every per-patient override that still
validates), starts the engine, the :class:`~wardwatch.alerting.service.AlarmService` and the API,
subscribes to the vitals, device and gateway topics of the wards this instance owns (partitioning
by ward), and feeds the engine through :class:`MqttInput`.

:class:`MqttInput` never lets one message stop the service: malformed ones go to the dead-letter
topic, impossible time stamps are kept from the engine (:class:`~wardwatch.alerting.guard.TimeGate`),
and an exception in the engine is counted per patient (:class:`~wardwatch.alerting.guard.FailureTracker`,
which raises "monitoring impaired"). A failing engine tick is handled the same way, for every
patient of the ward.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Final

from wardwatch.alerting.audit import AuditAnchor
from wardwatch.alerting.capacity import MONITORING_DELAYED
from wardwatch.alerting.engine.news2 import NurseObservation
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.guard import IMPAIRED_PATIENTS, FailureTracker, TimeGate
from wardwatch.alerting.intake import Entry, HeldConditions, Intake, LagMonitor
from wardwatch.alerting.metrics import AlertingMetrics
from wardwatch.alerting.observations.live import LiveScores
from wardwatch.alerting.observations.stream import ScorePublisher
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.registry.provenance import ProvenanceGate
from wardwatch.alerting.rules import RuleSet, load_rules
from wardwatch.alerting.service import (
    ALL_PATIENTS,
    DEVICE_CLOCK_WRONG,
    MONITORING_IMPAIRED,
    THRESHOLDS_REJECTED,
    AlarmService,
    Clock,
)
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.store import Store, audit_head_file, audit_key_file
from wardwatch.core.errors import ConfigError, SchemaError, TopicError
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import (
    DataGap,
    DeadLetter,
    DeviceStatus,
    GatewayStatus,
    Vitals,
    decode,
    decode_vitals,
    encode,
    split_vitals_batch,
)
from wardwatch.core.topics import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    BATCH_LEAF,
    DEVICE,
    GATEWAY,
    LIVE_ONLY_KINDS,
    VITALS,
    deadletter_topic,
    parse_topic,
    ward_filter,
)

_log = logging.getLogger(__name__)


def _log_refused_dead_letter(published: asyncio.Future[None]) -> None:
    """A dead letter the broker refused is lost: say so loudly (check the broker ACL for this user)."""
    if not published.cancelled() and published.exception() is not None:
        _log.error("dead letter not accepted by the broker: %s", published.exception())


_BATCH: Final = 64  # messages handled before yielding to the pager
_TOPICS_CACHED: Final = 1 << 16  # parsed topics kept (two devices per patient: room for 30,000 patients)


def open_store(config: AlertingConfig) -> Store:
    """The store of ``config``, with its audit key and head checkpoint (created when missing)."""
    anchor = AuditAnchor.load(
        config.audit_key_file or audit_key_file(config.database),
        config.audit_head_file or audit_head_file(config.database),
    )
    return Store(config.database, synchronous=config.database_sync, anchor=anchor)


def load_rules_with_overrides(config: AlertingConfig, store: Store) -> tuple[RuleSet, dict[str, str]]:
    """The configured rules plus every stored patient override that still validates.

    Returns the rule set and, per patient whose stored override was rejected, why (the ward's
    defaults apply to that patient until a clinician sets the thresholds again).
    """
    rules = load_rules(config.rules)
    rejected: dict[str, str] = {}
    for patient, overrides in store.all_thresholds().items():
        try:
            if not isinstance(overrides, dict):
                raise ConfigError(f"stored overrides are a {type(overrides).__name__}, not a table")
            rules = rules.with_patient_override(patient, **overrides)
        except (ConfigError, TypeError, ValueError) as exc:
            rejected[patient] = str(exc)
            _log.error(
                "stored thresholds of patient %s rejected: %s; the ward defaults apply until they are set again "
                "(PUT /api/v1/patients/%s/thresholds)",
                patient,
                exc,
                patient,
            )
    return rules, rejected


def default_source(rules: RuleSet) -> ConditionSource:
    """The alarm engine for ``rules``."""
    from wardwatch.alerting.engine import Engine  # numpy/scipy stay lazy

    return Engine(rules)


class MqttInput:
    """Decodes messages of the owned wards, gates them and feeds the engine; nothing here stops the service."""

    def __init__(
        self,
        service: AlarmService,
        source: ConditionSource,
        mqtt: MqttClient,
        service_id: str,
        *,
        rejected_thresholds: dict[str, str] | None = None,
        intake: Intake | None = None,
    ) -> None:
        guard = service.config.guard
        # fed by the MQTT client's on_message (see run)
        self.intake = intake if intake is not None else Intake(guard.stale_after_s)
        self.held = HeldConditions()
        self.lag = LagMonitor(guard.max_lag_s)
        self._holding = False  # handling a stale message: its condition changes are held
        # per message, parsing and validating the topic cost a fifth of the intake's CPU (docs/scaling.md):
        # a device publishes on the same topic every time; invalid topics raise and are not cached
        self._parse_topic = functools.lru_cache(maxsize=_TOPICS_CACHED)(parse_topic)
        self._vitals_counted = service.metrics.messages.labels(kind="vitals")
        self.service = service
        self.source = source
        self.mqtt = mqtt
        self.service_id = service_id
        self.wards = set(service.config.wards)
        self.gate = TimeGate(service)
        self.failures = FailureTracker(service)
        self.provenance = ProvenanceGate(service, service.registry, self._dead_letter, self.gate.problem)
        self._rejected = dict(rejected_thresholds or {})  # alarmed when the patient's ward is known
        for record in service.manager.open_alarms():  # raised before a restart: let them clear
            if record.condition_active and record.rule == MONITORING_IMPAIRED and record.patient == IMPAIRED_PATIENTS:
                text = "restarted: raised again if the patients' input keeps failing"
                service.technical(record.ward, record.patient, MONITORING_IMPAIRED, record.priority, False, text)
            elif record.condition_active and record.rule == MONITORING_IMPAIRED:
                self.failures.restore(record.ward, record.patient)
            elif record.condition_active and record.rule == DEVICE_CLOCK_WRONG:
                self.gate.restore(record.ward, record.patient)
            elif record.condition_active and record.rule == MONITORING_DELAYED:
                self.lag.delayed = True  # cleared by the first window that is not behind
        if len(self.wards) == 1:
            (ward,) = self.wards
            for patient in list(self._rejected):
                self._thresholds_rejected(ward, patient)

    def _thresholds_rejected(self, ward: str, patient: str) -> None:
        reason = self._rejected.pop(patient)
        self.service.metrics.thresholds_rejected.inc()
        text = f"stored thresholds rejected ({reason}); ward defaults in use - set them again"
        self.service.technical(
            ward, patient, THRESHOLDS_REJECTED, self.service.config.guard.thresholds_rejected_priority, True, text
        )

    def _feed(
        self, ward: str, patient: str, stage: str, call: Callable[[], Sequence[ConditionChange]]
    ) -> Sequence[ConditionChange]:
        if self._rejected and patient in self._rejected:
            self._thresholds_rejected(ward, patient)
        try:
            changes = call()
        except Exception as exc:  # counted per patient; "monitoring impaired" after a few in a row
            self.failures.failed(ward, patient, stage, exc)
            return ()
        self.failures.succeeded(ward, patient)
        return changes

    def handle(self, topic: str, payload: bytes, retain: bool = False, decoded: Vitals | None = None) -> None:
        """One MQTT message (``retain``: it was published with the retain flag; ``decoded``: its vitals)."""
        metrics = self.service.metrics
        live = self.service.live  # the console's board: updated after the engine, its faults contained
        try:
            parts = self._parse_topic(topic)
            ward = parts.ward
            if ward is None or ward not in self.wards:
                return
            if retain and parts.kind in LIVE_ONLY_KINDS:
                # a stored message must never act again (re-raise a resolved alarm after a restart)
                metrics.rejected.labels(reason="retained").inc()
                self._dead_letter(topic, payload, f"refused a retained {parts.kind} message: gateways must not retain")
                return
            changes: Sequence[ConditionChange]
            if parts.kind == VITALS and parts.signal == BATCH_LEAF and decoded is None:
                for series_topic, series in split_vitals_batch(topic, payload):  # as the intake does
                    self.handle(series_topic, payload, retain, series)
                return
            if parts.kind == VITALS:
                decoded = decoded if decoded is not None else decode_vitals(payload)
                self._vitals_counted.inc()
                admitted = self.provenance.vitals(topic, payload, parts, decoded)
                if admitted is None:
                    return
                vitals = admitted
                samples = vitals.samples
                t_min, t_max = samples[0].t, samples[-1].t
                if len(samples) > 1:
                    t_min, t_max = min(s.t for s in samples), max(s.t for s in samples)
                if not self.gate.admit(ward, vitals.patient, vitals.device, t_min, t_max, len(samples)):
                    return
                self.service.note_patient(vitals.patient, ward, t_max)
                changes = self._feed(ward, vitals.patient, "engine", lambda: self.source.on_vitals(vitals, ward))
                live.guard(lambda: live.on_vitals(ward, vitals))
            elif parts.kind == DEVICE:
                status = decode(payload)
                if not isinstance(status, DeviceStatus):
                    raise SchemaError(f"expected device_status on {topic}, got {type(status).__name__}")
                metrics.messages.labels(kind="device_status").inc()
                if not self.provenance.device_status(topic, payload, parts, status):
                    return
                if not self.gate.admit(ward, status.patient, status.device, status.t, status.t, 1):
                    return
                changes = self._feed(ward, status.patient, "engine", lambda: self.source.on_device_status(status, ward))
                live.guard(lambda: live.on_device_status(ward, status))
                self.service.handover.devices.on_device_status(ward, status)  # never raises
            elif parts.kind == GATEWAY and parts.leaf == "availability":
                if payload not in (AVAILABILITY_ONLINE, AVAILABILITY_OFFLINE):
                    raise SchemaError(f"availability must be 'online' or 'offline', got {payload[:20]!r}")
                metrics.messages.labels(kind="availability").inc()
                gateway = parts.gateway
                assert gateway is not None  # parse_topic guarantees it for gateway topics
                online = payload == AVAILABILITY_ONLINE
                now = self.service.clock.now_ms()
                changes = self._feed(
                    ward,
                    ALL_PATIENTS,
                    "engine",
                    lambda: self.source.on_gateway_availability(ward, gateway, online, now),
                )
                live.guard(lambda: live.on_gateway_availability(ward, gateway, online, now))
                self.service.handover.devices.on_gateway_availability(ward, gateway, online, now)
            elif parts.kind == GATEWAY and parts.leaf == "gap":
                gap = decode(payload)
                if not isinstance(gap, DataGap):
                    raise SchemaError(f"expected data_gap on {topic}, got {type(gap).__name__}")
                metrics.messages.labels(kind="data_gap").inc()
                if not self.provenance.data_gap(topic, payload, parts, gap):
                    return
                if self.gate.problem(min(gap.t, gap.first_t), max(gap.t, gap.last_t), self.service.clock.now_ms()):
                    metrics.samples_ignored.labels(reason="gap_time").inc()
                    return
                patient = gap.patient or ALL_PATIENTS
                changes = self._feed(ward, patient, "engine", lambda: self.source.on_data_gap(gap, ward))
            elif parts.kind == GATEWAY and parts.leaf == "status":
                gw_status = decode(payload)
                if not isinstance(gw_status, GatewayStatus):
                    raise SchemaError(f"expected gateway_status on {topic}, got {type(gw_status).__name__}")
                metrics.messages.labels(kind="gateway_status").inc()
                checked = self.provenance.gateway_status(topic, payload, parts, gw_status)
                if checked is None:
                    return
                gw_status = checked
                seen = [link.last_seen for link in gw_status.devices if link.last_seen is not None]
                now = self.service.clock.now_ms()
                if self.gate.problem(min([gw_status.t, *seen]), max([gw_status.t, *seen]), now):
                    metrics.samples_ignored.labels(reason="status_time").inc()
                    return
                changes = self._feed(ward, ALL_PATIENTS, "engine", lambda: self.source.on_gateway_status(gw_status))
                live.guard(lambda: live.on_gateway_status(gw_status))
                self.service.handover.devices.on_gateway_status(gw_status)
            else:
                return
        except (SchemaError, TopicError) as exc:
            metrics.rejected.labels(reason=type(exc).__name__).inc()
            self._dead_letter(topic, payload, str(exc))
            return
        if changes:
            self._deliver(changes)

    def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Publish a refused message to ``deadletter/alerting/<service id>`` (the operator reads it)."""
        dead = DeadLetter(
            service=self.service_id,
            t=self.service.clock.now_ms(),
            reason=reason[:500],
            topic=topic,
            payload=payload[:4096],
        )
        published = self.mqtt.publish_nowait(deadletter_topic("alerting", self.service_id), encode(dead))
        published.add_done_callback(_log_refused_dead_letter)

    def _handle_safely(self, topic: str, payload: bytes, retain: bool = False, decoded: Vitals | None = None) -> None:
        try:
            self.handle(topic, payload, retain, decoded)
        except Exception:  # a bug outside the engine: counted and logged; the next message is handled
            self.service.metrics.rejected.labels(reason="internal_error").inc()
            self.service.metrics.failures.labels(stage="input").inc()
            _log.exception("processing a message on %s failed; it was skipped", topic)

    async def consume(self) -> None:
        """Handle messages from the intake until cancelled (see :mod:`wardwatch.alerting.intake`)."""
        while True:
            for entry in await self.intake.take(_BATCH):
                self.handle_entry(entry)
            await asyncio.sleep(0)  # let the socket reader, page deliveries and ticks run between batches

    # -- the intake's lanes, stale backlogs and lag (alerting/intake.py) ---------------------------------

    def _deliver(self, changes: Sequence[ConditionChange]) -> None:
        if self._holding:
            for change in changes:
                self.held.hold(change)
            return
        if self.held.active:
            changes = [change for change in changes if not self.held.cancels(change)]
        if changes:
            self.service.on_conditions(changes)

    def handle_entry(self, entry: Entry) -> None:
        """One message from the intake: a stale one's condition changes are held, a live one's lag observed."""
        message, vitals = entry.message, entry.vitals
        if entry.stale:
            self.service.metrics.stale_messages.inc()
            if vitals is not None:
                self.held.touch(vitals.patient)
            self._holding = True
            try:
                self._handle_safely(message.topic, message.payload, message.retain, vitals)
            finally:
                self._holding = False
            return
        self._handle_safely(message.topic, message.payload, message.retain, vitals)
        now = self.intake.clock()
        age = None if vitals is None else now - vitals.samples[-1].t / 1000
        self.lag.observe(now - entry.arrived, age)
        if vitals is not None and len(self.held) and vitals.patient not in self.intake.backlogged:
            self._release(self.held.release(vitals.patient))

    def _release(self, changes: Sequence[ConditionChange]) -> None:
        if changes:
            self.service.on_conditions(changes)

    def check_lag(self) -> None:
        """Close a lag window: export it, raise or clear "monitoring delayed", release overdue held changes."""
        service, metrics = self.service, self.service.metrics
        lag, age, change = self.lag.close_window(self.intake.oldest_live_wait_s())
        metrics.intake_lag.set(lag)
        if age is not None:
            metrics.sample_age.set(age)
        metrics.intake_backlog.labels(lane="live").set(len(self.intake.live))
        metrics.intake_backlog.labels(lane="stale").set(len(self.intake.stale))
        dropped = self.held.dropped
        if dropped:
            metrics.stale_conditions_dropped.inc(dropped)
            self.held.dropped = 0
        self._release(self.held.overdue(self.intake.backlogged))
        if change is None:
            return
        bound = self.lag.max_lag_s
        if change:
            text = (
                f"monitoring delayed: alerting instance {self.service_id} is {lag:.0f} s behind its input "
                f"(bound {bound:g} s); alarms are late - reduce its load or add an instance (docs/scaling.md)"
            )
            service.set_problem("monitoring_delayed", text)
        else:
            text = f"monitoring caught up: alerting instance {self.service_id} is {lag:.1f} s behind"
            service.set_problem("monitoring_delayed", None)
        for ward in sorted(self.wards):
            service.technical(
                ward, self.service_id, MONITORING_DELAYED, service.config.guard.delayed_priority, change, text, lag
            )

    async def watch_lag(self, interval_s: float = 1.0) -> None:
        """:meth:`check_lag` every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.check_lag()
            except Exception:  # the watch must not die; counted and logged
                self.service.metrics.failures.labels(stage="lag").inc()
                _log.exception("checking the intake lag failed")

    def tick_once(self) -> None:
        """One engine tick; a failure counts against every patient of every ward (the tick serves them all)."""
        now = self.service.clock.now_ms()
        try:
            changes = self.source.tick(now)
        except Exception as exc:
            for ward in sorted(self.wards):
                self.failures.failed(ward, ALL_PATIENTS, "tick", exc)
            return
        for ward in self.wards:
            self.failures.succeeded(ward, ALL_PATIENTS)
        if changes:
            self._deliver_tick(changes)

    def _deliver_tick(self, changes: Sequence[ConditionChange]) -> None:
        """The tick's changes; those of a patient whose backlog is still being handled are held with it.

        The engine's clock is the wall clock: while a replayed backlog is worked through, the patient's
        newest handled sample is minutes old and the tick would page "no data" for a device that sent all along.
        """
        backlogged = self.intake.backlogged
        if not backlogged and not self.held.active:
            self.service.on_conditions(changes)
            return
        live = []
        for change in changes:
            if self.held.cancels(change):
                continue
            if change.patient in backlogged or self.held.holds(change.patient):
                self.held.hold_tick(change)
            else:
                live.append(change)
        if live:
            self.service.on_conditions(live)

    async def tick(self, interval_s: float) -> None:
        """Tick the engine every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.tick_once()


async def _purge_tokens(service: AlarmService, interval_s: float = 300.0) -> None:
    """Delete expired sessions and tokens now and then (they are refused when expired anyway)."""
    while True:
        try:
            service.store.purge_expired_tokens(service.clock.now_ms())
        except Exception as exc:  # housekeeping only
            service.metrics.failures.labels(stage="store").inc()
            _log.warning("purging expired tokens failed: %r", exc)
        await asyncio.sleep(interval_s)


def _connect_observations(
    service: AlarmService, engine: ConditionSource, mqtt: MqttClient, inputs: MqttInput
) -> ScorePublisher | None:
    """A nurse's observations go to an engine that scores NEWS2 (after restoring the last day's), through
    the inputs' failure tracking ("monitoring impaired" if the engine keeps failing on a patient); its
    scores are published on the score stream (the publisher is returned, to run)."""
    on_observation = getattr(engine, "on_observation", None)
    if not callable(on_observation):
        return None

    def observe(patient: str, ward: str, obs: NurseObservation) -> Sequence[ConditionChange]:
        now = service.clock.now_ms()
        return inputs._feed(ward, patient, "observation", lambda: on_observation(patient, ward, obs, now))

    service.observations.hooks.append(observe)
    service.observations.restore_hooks.append(engine.remember_observation)  # type: ignore[attr-defined]
    service.observations.score_source = engine.score_now  # type: ignore[attr-defined]
    restored = service.observations.restore()
    if restored:
        _log.info("restored %d manual observations of the last day into the engine", restored)
    scores = ScorePublisher(mqtt, engine.patient_wards, engine.score_now)  # type: ignore[attr-defined]
    service.registry.discharge_hooks.append(scores.forget)
    board = LiveScores(service.live, engine.patient_wards, engine.score_now, service.clock.now_ms)  # type: ignore[attr-defined]
    scores.watchers.append(board.scored)  # the console's board: NEWS2 turns partial as parameters go stale
    service.observations.hooks.append(board.observed)  # ... and full at once after a nurse's entry
    return scores


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
        store = stack.enter_context(open_store(config))
        rules, rejected = load_rules_with_overrides(config, store)
        engine = source if source is not None else default_source(rules)
        intake = Intake(config.guard.stale_after_s)
        mqtt = await stack.enter_async_context(
            MqttClient(
                config.mqtt,
                config.mqtt.client_id or f"wardwatch-{config.service_id}",
                clean_start=False,
                on_message=intake.put,
            )
        )
        service = await stack.enter_async_context(
            AlarmService(config, store, clock=clock, publisher=mqtt, metrics=metrics)
        )
        service.rules = rules
        service.rules_hooks.append(engine.set_rules)
        discharge = getattr(engine, "discharge", None)
        if callable(discharge):  # the engine forgets a discharged patient
            service.registry.discharge_hooks.append(discharge)
        inputs = MqttInput(service, engine, mqtt, config.service_id, rejected_thresholds=rejected, intake=intake)
        scores = _connect_observations(service, engine, mqtt, inputs)
        api_port: int | None = None
        if config.api.enabled:
            api_port = await stack.enter_async_context(serve_api(service, config.api))
        await mqtt.wait_connected(timeout=None)
        await service.registry.publish_all()  # kits and manifests, retained, at new revisions
        for ward in config.wards:
            for kind in (VITALS, DEVICE, GATEWAY):
                # vitals and device status count only live: no retained copies, and any retained one refused;
                # the retained gateway availability is state the engine needs at start
                live = kind in LIVE_ONLY_KINDS
                await mqtt.subscribe(ward_filter(kind, ward), qos=1, retained=not live, retain_as_published=live)
        # the engine's clock before the first message: a spot-check reading stored on a device for hours and
        # delivered in the first second must be judged late (engine/late.py), not as a reading of "now"
        inputs.tick_once()
        service.inputs_ready = True
        _log.info("alerting service %s running for wards %s", config.service_id, ", ".join(config.wards))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(inputs.consume(), name="mqtt-input")
            tasks.create_task(inputs.tick(config.tick_s), name="engine-tick")
            tasks.create_task(inputs.watch_lag(), name="intake-lag")
            tasks.create_task(_purge_tokens(service), name="purge-tokens")
            tasks.create_task(service.registry.expire_periodically(), name="registry-expiry")
            tasks.create_task(service.handover.scores.run(), name="news2-log")
            if scores is not None:
                tasks.create_task(scores.run(service.clock.now_ms), name="news2-scores")
            if ready is not None:
                ready(service, api_port)
