"""The FHIR exporter: MQTT vitals and device status -> windows -> ``transaction`` Bundles -> acknowledgements.

At-least-once to the FHIR server, never duplicated there:

1. Every message is validated on arrival; a malformed one is dead-lettered and, once the broker has the
   dead letter, acknowledged. Samples go into their window (one per patient, device, signal and interval);
   a device status and a physiological alarm's state change become units of their own.
2. A window closes when a later sample of its series came and none of its own for ``settle_s``, or
   ``grace_s`` after its end by the wall clock, or when nothing came for it for ``idle_s``.
3. Closed windows are packed into transaction Bundles of at most ``max_bundle_entries`` entries
   (conditional creates, :mod:`~wardwatch.fhir.mapping`) and posted by one writer, in order. While the
   server is unavailable the writer retries with exponential backoff; the broker sends at most
   ``receive_maximum`` unacknowledged messages meanwhile, so memory stays bounded.
4. A rejected transaction is split in halves down to single windows; a rejected window is dead-lettered
   with the server's OperationOutcome.
5. Only then are the messages acknowledged (a message with samples in several windows after the last).

A crash or a lost connection loses nothing: unacknowledged messages are redelivered, rebuild the same
windows, and the conditional creates find what was stored before. Samples arriving after their interval
was exported (a late gateway backlog) are counted (``late_samples``) and acknowledged: they stay in
InfluxDB, the exported summary is not changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

from wardwatch.core import topics
from wardwatch.core.consumer import AckAfterStore
from wardwatch.core.errors import SchemaError, TopicError, WardwatchError
from wardwatch.core.schema import (
    Alarm,
    AlarmCategory,
    DeviceStatus,
    News2Score,
    Signal,
    Vitals,
    decode,
    decode_device_status,
    decode_vitals,
    split_vitals_batch,
)
from wardwatch.core.subscriber import Subscriber
from wardwatch.fhir.client import FhirClient, FhirUnavailableError, TransactionResult
from wardwatch.fhir.config import FhirConfig
from wardwatch.fhir.mapping import EXPORTED_SIGNALS, BundleBuilder, Window, series_signal, window_start
from wardwatch.fhir.metrics import FhirMetrics

__all__ = ["SERVICE", "Exporter"]

_log = logging.getLogger(__name__)

SERVICE: Final = "fhir"
CLOSE_CHECK_S: Final = 0.1
_VITALS_PREFIX: Final = f"{topics.ROOT}/{topics.VITALS}/"
_DEVICE_PREFIX: Final = f"{topics.ROOT}/{topics.DEVICE}/"
_ALARM_PREFIX: Final = f"{topics.ROOT}/{topics.ALARM}/"
_SCORE_PREFIX: Final = f"{topics.ROOT}/{topics.SCORE}/"

SeriesKey = tuple[str, str, Signal]


class _Message:
    """One received MQTT message and how many open units still hold it."""

    __slots__ = ("generation", "mid", "pending", "qos")

    def __init__(self, mid: int, qos: int, generation: int) -> None:
        self.mid = mid
        self.qos = qos
        self.generation = generation
        self.pending = 0


@dataclass(slots=True)
class _Unit:
    """What one export carries: a window or a device status, and the messages it completes."""

    topic: str
    window: Window | None = None
    status: DeviceStatus | None = None
    alarm: Alarm | None = None
    score: News2Score | None = None
    messages: list[_Message] = field(default_factory=list)
    last_arrival: float = 0.0

    def add_to(self, builder: BundleBuilder) -> int:
        """Add this unit's entries; returns the number of Observations."""
        if self.window is not None:
            return builder.window(self.window)
        if self.alarm is not None:
            return builder.alarm(self.alarm)
        if self.score is not None:
            return builder.news2_score(self.score)
        assert self.status is not None
        builder.device_status(self.status)
        return 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Exporter:
    """MQTT -> FHIR with manual acknowledgement; an async context manager that runs until exit."""

    def __init__(self, config: FhirConfig, client: FhirClient, *, metrics: FhirMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else FhirMetrics()
        self._client = client
        self._export = config.export
        self._interval_ms = config.export.interval_s * 1000
        self._max_entries = config.fhir.max_bundle_entries
        self._windows: dict[tuple[str, str, Signal, int], _Unit] = {}
        self._latest: dict[SeriesKey, int] = {}  # newest sample time per series
        self._exported_until: dict[SeriesKey, int] = {}  # start of the newest closed window per series
        self._queue: asyncio.Queue[_Unit] = asyncio.Queue()
        self._generation = -1
        self._busy = False
        self.in_flight = 0
        self._background: set[asyncio.Task[None]] = set()
        self.subscriber = Subscriber(
            config.mqtt,
            config.mqtt.client_id or config.subscription.client_id,
            list(config.subscription.filters),
            self._on_message,
            receive_maximum=config.export.receive_maximum,
        )
        self._consumer = AckAfterStore(SERVICE, self.subscriber, self.metrics, _log)

    async def __aenter__(self) -> Self:
        await self._consumer.start({"fhir-writer": self._writer, "fhir-closer": self._closer})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in list(self._background):
            task.cancel()
        await self._consumer.stop()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until subscribed (the FHIR server may still be down)."""
        await self.subscriber.wait_subscribed(timeout)

    def idle(self) -> bool:
        """Nothing open, queued or being sent."""
        return not self._windows and self._queue.empty() and not self._busy

    # -- receiving: on the loop thread, one call per message -------------------------------------------

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        if generation != self._generation:
            self._new_connection(generation)
        message = _Message(mid, qos, generation)
        self.metrics.received.inc()
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            if topic.startswith(_VITALS_PREFIX):
                self._vitals(topic, payload, message)
            elif topic.startswith(_DEVICE_PREFIX):
                self._device_status(topic, payload, message)
            elif topic.startswith(_ALARM_PREFIX):
                self._alarm(topic, payload, message)
            elif topic.startswith(_SCORE_PREFIX):
                self._score(topic, payload, message)
            else:
                raise TopicError(f"topic {topic!r} is not a vitals, device status, alarm or score topic")
        except WardwatchError as exc:
            self._dead_letter_malformed(topic, payload, message, str(exc))
        except Exception as exc:  # a bug must not stop the exporter: keep the message, say what happened
            _log.exception("cannot convert message on %s", topic)
            self._dead_letter_malformed(topic, payload, message, f"internal error: {exc!r}")
        if message.pending == 0 and not self._held(message):
            self._ack([message])

    def _held(self, message: _Message) -> bool:
        return message.pending < 0  # a dead letter in flight holds the message (pending set to -1)

    def _new_connection(self, generation: int) -> None:
        """Open windows hold messages of the old connection: the broker redelivers them, so start anew."""
        if self._windows:
            dropped = sum(len(u.messages) for u in self._windows.values())
            _log.info("new MQTT connection: %d open windows dropped (%d messages come again)", len(self), dropped)
            self.in_flight -= len({id(m) for u in self._windows.values() for m in u.messages})
            self._windows.clear()
            self._latest.clear()
            self.metrics.open_windows.set(0)
        self._generation = generation

    def __len__(self) -> int:
        return len(self._windows)

    def _vitals(self, topic: str, payload: bytes, message: _Message) -> None:
        if topics.is_vitals_batch_topic(topic):
            for series_topic, series in split_vitals_batch(topic, payload):  # each series as if alone
                self._series(series_topic, series, message)
            return
        parts = topics.parse_topic(topic)
        vitals = decode_vitals(payload)
        if (vitals.gateway, vitals.patient, vitals.device, vitals.signal) != (
            parts.gateway,
            parts.patient,
            parts.device,
            parts.signal,
        ):
            raise SchemaError("payload ids (gateway, patient, device, signal) do not match its topic")
        self._series(topic, vitals, message)

    def _series(self, topic: str, vitals: Vitals, message: _Message) -> None:
        if vitals.signal not in EXPORTED_SIGNALS:
            return  # not part of the record (battery, perfusion index, energy): acknowledged at once
        signal = series_signal(vitals.signal)  # a cuff's three pressures: one window, one panel per reading
        series: SeriesKey = (vitals.patient, vitals.device, signal)
        now = time.monotonic()
        for sample in vitals.samples:
            start = window_start(sample.t, self._export.interval_s)
            key = (vitals.patient, vitals.device, signal, start)
            unit = self._windows.get(key)
            if unit is None:
                if start <= self._exported_until.get(series, -1):
                    self.metrics.late_samples.inc()
                    continue
                window = Window(vitals.patient, vitals.device, vitals.gateway, signal, start, self._export.interval_s)
                unit = self._windows[key] = _Unit(topic=topic, window=window)
                self.metrics.open_windows.set(len(self._windows))
            assert unit.window is not None
            unit.window.put(vitals.signal, sample)
            unit.last_arrival = now
            if not unit.messages or unit.messages[-1] is not message:
                unit.messages.append(message)
                message.pending += 1
            if sample.t > self._latest.get(series, -1):
                self._latest[series] = sample.t

    def _device_status(self, topic: str, payload: bytes, message: _Message) -> None:
        status = decode_device_status(payload, topics.parse_topic(topic))
        message.pending += 1
        self._queue.put_nowait(_Unit(topic=topic, status=status, messages=[message]))

    def _alarm(self, topic: str, payload: bytes, message: _Message) -> None:
        parts = topics.parse_topic(topic)
        alarm = decode(payload)
        if not isinstance(alarm, Alarm):
            raise SchemaError(f"a {type(alarm).__name__} message on an alarm topic")
        if (alarm.ward, alarm.patient) != (parts.ward, parts.patient):
            raise SchemaError("payload ids (ward, patient) do not match its topic")
        if alarm.category is not AlarmCategory.PHYSIOLOGICAL:
            return  # technical alarms are about the equipment, not the patient's record: acknowledged at once
        message.pending += 1
        self._queue.put_nowait(_Unit(topic=topic, alarm=alarm, messages=[message]))

    def _score(self, topic: str, payload: bytes, message: _Message) -> None:
        parts = topics.parse_topic(topic)
        score = decode(payload)
        if not isinstance(score, News2Score):
            raise SchemaError(f"a {type(score).__name__} message on a score topic")
        if (score.ward, score.patient) != (parts.ward, parts.patient):
            raise SchemaError("payload ids (ward, patient) do not match its topic")
        message.pending += 1
        self._queue.put_nowait(_Unit(topic=topic, score=score, messages=[message]))

    # -- closing windows -----------------------------------------------------------------------------

    async def _closer(self) -> None:
        while True:
            await asyncio.sleep(CLOSE_CHECK_S)
            self._close_due(time.monotonic(), _now_ms())

    def _close_due(self, now: float, now_ms: int) -> None:
        settle, idle, grace_ms = self._export.settle_s, self._export.idle_s, self._export.grace_s * 1000
        due = []
        for key, unit in self._windows.items():
            quiet = now - unit.last_arrival
            end = key[3] + self._interval_ms
            newest = self._latest.get((key[0], key[1], key[2]), -1)
            if quiet >= idle or (quiet >= settle and (newest >= end or now_ms >= end + grace_ms)):
                due.append(key)
        for key in sorted(due, key=lambda k: k[3]):
            unit = self._windows.pop(key)
            series: SeriesKey = (key[0], key[1], key[2])
            self._exported_until[series] = max(self._exported_until.get(series, -1), key[3])
            self._queue.put_nowait(unit)
        if due:
            self.metrics.open_windows.set(len(self._windows))

    # -- the writer ----------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            self._busy = False
            units = [await self._queue.get()]
            self._busy = True
            while not self._queue.empty() and len(units) < 256:
                units.append(self._queue.get_nowait())
            for group in self._pack(units):
                await self._send(group)

    def _pack(self, units: list[_Unit]) -> list[list[_Unit]]:
        """Consecutive units in Bundles of at most ``max_bundle_entries`` entries."""
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        for unit in units:
            candidate = [*current, unit]
            try:
                fits = len(self._build(candidate)[0]) <= self._max_entries
            except ValueError:  # the same device twice as a status update
                fits = False
            if fits or not current:
                current = candidate
            else:
                groups.append(current)
                current = [unit]
        if current:
            groups.append(current)
        return groups

    def _build(self, units: list[_Unit]) -> tuple[BundleBuilder, int]:
        builder = BundleBuilder(self._export)
        observations = sum(unit.add_to(builder) for unit in units)
        return builder, observations

    async def _send(self, units: list[_Unit]) -> None:
        builder, observations = self._build(units)
        if not len(builder):  # nothing to send (cannot happen for exported signals)
            self._finish(units)
            return
        started = time.monotonic()
        result = await self._consumer.retrying(
            lambda: self._client.transaction(builder.bundle()),
            FhirUnavailableError,
            what="post the FHIR transaction",
            min_s=self.config.fhir.retry_min_s,
            max_s=self.config.fhir.retry_max_s,
        )
        self.metrics.transaction_seconds.observe(time.monotonic() - started)
        if result.accepted:
            self.metrics.transactions.labels("accepted").inc()
            self.metrics.observations.inc(observations)
            self.metrics.bytes_sent.inc(result.request_bytes)
            self._finish(units)
            return
        self.metrics.transactions.labels("rejected").inc()
        if len(units) > 1:
            middle = len(units) // 2
            await self._send(units[:middle])
            await self._send(units[middle:])
            return
        await self._dead_letter_rejected(units[0], builder, result)
        self._finish(units)

    def _finish(self, units: list[_Unit]) -> None:
        done = []
        for unit in units:
            for message in unit.messages:
                message.pending -= 1
                if message.pending == 0:
                    done.append(message)
        self._ack(done)

    def _ack(self, messages: list[_Message]) -> None:
        by_generation: dict[int, list[int]] = {}
        for message in messages:
            if message.qos:
                by_generation.setdefault(message.generation, []).append(message.mid)
        for generation, mids in by_generation.items():
            self._consumer.acknowledge(mids, generation, len(mids))
        self.in_flight -= len(messages)
        self.metrics.in_flight.set(self.in_flight)

    # -- dead letters ---------------------------------------------------------------------------------

    def _dead_letter_malformed(self, topic: str, payload: bytes, message: _Message, reason: str) -> None:
        future = self._consumer.dead_letter("malformed", reason, topic, payload)
        message.pending = -1  # held until the broker has the dead letter

        async def confirm() -> None:
            await self._consumer.confirm([future], message.generation)
            message.pending = 0
            self._ack([message])

        task = asyncio.get_running_loop().create_task(confirm())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _dead_letter_rejected(self, unit: _Unit, builder: BundleBuilder, result: TransactionResult) -> None:
        reason = f"the FHIR server rejected the transaction ({result.status}): {result.outcome_text}"
        payload = json.dumps(builder.bundle(), separators=(",", ":")).encode()
        letter = self._consumer.dead_letter("rejected", reason, unit.topic, payload)
        await self._consumer.confirm([letter], self.subscriber.generation)
