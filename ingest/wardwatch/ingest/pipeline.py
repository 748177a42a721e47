"""The ingest pipeline: receive → validate and encode → batch → store → acknowledge.

At-least-once, exactly-once in the database:

1. Every MQTT message is validated and made points on arrival (:class:`~wardwatch.ingest.points.PointEncoder`);
   a malformed one is published to the dead-letter topic and otherwise treated like a stored one.
2. Points accumulate in a batch, written by one writer task, in order, while the next batch fills:
   when it holds ``max_points`` points; or once it is ``min_delay_ms`` old, the writer is idle and no
   message came for ``QUIET_S`` (the stream paused: low latency at low rates and at the end of a
   burst, big batches under load); and at the latest ``max_delay_ms`` after its first message.
3. A write is retried with exponential backoff while InfluxDB is unavailable. The broker sends at
   most ``receive_maximum`` unacknowledged messages, so memory stays bounded meanwhile.
4. Points the database rejects are found by halving the batch (each half re-sent; points already
   stored are rewritten identically) down to single points, which go to the dead-letter topic.
5. Only then — dead letters confirmed by the broker — the batch's messages are acknowledged.

A crash anywhere loses nothing: unacknowledged messages are redelivered and rewrite the same points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Self, TypeVar

from wardwatch.core.consumer import AckAfterStore
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.registry import registry_filter
from wardwatch.ingest.config import IngestConfig
from wardwatch.ingest.metrics import IngestMetrics
from wardwatch.ingest.points import ImplausibleTimeError, Point, PointEncoder
from wardwatch.ingest.provenance import ProvenanceGate
from wardwatch.ingest.sinks import SchemaSetupError, Sink, SinkUnavailableError
from wardwatch.ingest.subscriber import Subscriber

__all__ = ["SERVICE", "Ingestor"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE: Final = "ingest"
QUIET_S: Final = 0.005  # no message for this long: the stream paused


class _Batch:
    """Points of consecutive messages of one connection, and what acknowledging them needs."""

    __slots__ = ("dead_letters", "first_received", "generation", "messages", "mids", "points", "starts", "topics")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.points: list[Point] = []
        self.starts: list[int] = []  # index in points of each message's first point
        self.topics: list[str] = []
        self.mids: list[int] = []  # packet ids of the QoS 1 messages
        self.dead_letters: list[asyncio.Future[None]] = []
        self.messages = 0
        self.first_received = time.monotonic()

    def topic_of_point(self, index: int) -> str:
        lo, hi = 0, len(self.starts)
        while hi - lo > 1:  # the last message starting at or before ``index``
            mid = (lo + hi) // 2
            if self.starts[mid] <= index:
                lo = mid
            else:
                hi = mid
        return self.topics[lo] if self.topics else ""


class Ingestor:
    """MQTT → InfluxDB with manual acknowledgement; an async context manager that runs until exit."""

    def __init__(self, config: IngestConfig, sink: Sink, *, metrics: IngestMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else IngestMetrics()
        self._sink = sink
        self._encoder = PointEncoder(future_margin_ms=round(config.future_margin_s * 1000))
        self._max_points = config.batch.max_points
        self._max_delay_s = config.batch.max_delay_ms / 1000
        self._min_delay_s = config.batch.min_delay_ms / 1000
        self._writing = False
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._open: _Batch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warn = RateLimitedLog(_log, interval_s=30.0)
        # Provenance (docs/provenance.md): the gate judges each message before it reaches the encoder and sink.
        self.provenance = (
            ProvenanceGate(
                config.registry.settle_s, self._on_message, self.metrics, state_file=config.registry.state_file
            )
            if config.registry.enforce
            else None
        )
        self.subscriber = Subscriber(
            config.mqtt,
            config.mqtt.client_id or config.subscription.client_id,
            config.subscription.topic_filters(),
            self.provenance.receive if self.provenance is not None else self._on_message,
            receive_maximum=config.batch.receive_maximum,
        )
        self._consumer = AckAfterStore(SERVICE, self.subscriber, self.metrics, _log)
        if self.provenance is not None:  # every instance needs every document: retained, never a shared group
            self.subscriber.add_subscription(registry_filter(), qos=1, retained=True)
        self.in_flight = 0
        self.max_in_flight = 0
        self.schema_ready = asyncio.Event()
        self._drained = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        await self._consumer.start({"ingest-writer": self._writer})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until subscribed (the database may still be down)."""
        await self.subscriber.wait_subscribed(timeout)

    async def drain(self, timeout: float) -> bool:
        """Write and acknowledge what was received so far (for a graceful stop); False on timeout."""
        self._seal()
        if self.in_flight:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._drained.wait()
        return self.in_flight == 0

    # -- hot path: one call per MQTT message, on the loop thread -----------------------------------

    def _on_message(
        self,
        topic: str,
        payload: bytes | None,
        mid: int,
        qos: int,
        generation: int,
        refused: str | None = None,
        original: bytes = b"",
    ) -> None:
        """Take one message: store ``payload`` (None: nothing, e.g. a registry document) and dead-letter
        ``original`` with the ``refused`` reason if the provenance gate refused samples of it."""
        batch = self._open
        if batch is None or batch.generation != generation:
            if batch is not None:
                self._seal()
            batch = self._open = _Batch(generation)
            assert self._loop is not None
            self._loop.call_later(self._min_delay_s, self._seal_if_quiet, batch, -1)
            self._loop.call_later(self._max_delay_s, self._seal_if_open, batch)
        if refused is not None:
            self._dead_letter(batch, "provenance", refused, topic, original)
        try:
            points = self._encoder.points(topic, payload) if payload is not None else []
        except ImplausibleTimeError as exc:
            points = []
            self._dead_letter(batch, "clock", str(exc), topic, original or payload or b"")
        except WardwatchError as exc:
            points = []
            self._dead_letter(batch, "malformed", str(exc), topic, original or payload or b"")
        except Exception as exc:  # a bug must not stop ingest: keep the message, say what happened
            _log.exception("cannot convert message on %s", topic)
            points = []
            self._dead_letter(batch, "malformed", f"internal error: {exc!r}", topic, original or payload or b"")
        batch.starts.append(len(batch.points))
        batch.topics.append(topic)
        batch.points += points
        if qos:
            batch.mids.append(mid)
        batch.messages += 1
        if len(batch.points) >= self._max_points:
            self._seal()

    def _seal_if_quiet(self, batch: _Batch, seen: int) -> None:
        if self._open is not batch:
            return
        if batch.messages == seen and not self._writing and self._queue.empty():
            self._seal()
        else:
            assert self._loop is not None
            self._loop.call_later(QUIET_S, self._seal_if_quiet, batch, batch.messages)

    def _seal_if_open(self, batch: _Batch) -> None:
        if self._open is batch:
            self._seal()

    def _seal(self) -> None:
        batch, self._open = self._open, None
        if batch is None:
            return
        self.metrics.received.inc(batch.messages)
        self.in_flight += batch.messages
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.metrics.in_flight.set(self.in_flight)
        self._queue.put_nowait(batch)

    def _dead_letter(self, batch: _Batch, cause: str, reason: str, topic: str, payload: bytes) -> None:
        batch.dead_letters.append(self._consumer.dead_letter(cause, reason, topic, payload))

    # -- the writer -----------------------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._retrying(self._sink.ensure_schema, "create the database schema", is_schema=True)
        except SchemaSetupError as exc:
            _log.error(
                "cannot set up the database schema (%s); writing anyway. If the database is managed elsewhere "
                "(e.g. InfluxDB 2.x/3.x through the v1 API), set influx.create_schema = false",
                exc,
            )
        self.schema_ready.set()
        while True:
            self._writing = False
            batch = await self._queue.get()
            self._writing = True
            if batch.points:
                await self._write_range(batch, 0, len(batch.points))
                self.metrics.lag.set(max(0.0, time.time() - batch.points[-1].time / 1000))
            await self._consumer.confirm(batch.dead_letters, batch.generation)
            self._consumer.acknowledge(batch.mids, batch.generation, batch.messages)
            self.in_flight -= batch.messages
            self.metrics.in_flight.set(self.in_flight)
            if not self.in_flight:
                self._drained.set()
            self.metrics.batch_points.observe(len(batch.points))
            self.metrics.batch_latency.observe(time.monotonic() - batch.first_received)

    async def _write_range(self, batch: _Batch, lo: int, hi: int) -> None:
        """Store points ``lo:hi``; on rejection split in halves, and dead-letter single rejected points."""
        points = batch.points[lo:hi]
        started = time.monotonic()
        reason = await self._retrying(lambda: self._sink.write(points), "write to InfluxDB")
        self.metrics.write_seconds.observe(time.monotonic() - started)
        if reason is None:
            self.metrics.written.inc(hi - lo)
            return
        if hi - lo == 1:
            point = self._sink.describe(batch.points[lo])
            self._dead_letter(
                batch, "rejected", f"InfluxDB rejected the point: {reason}", batch.topic_of_point(lo), point
            )
            return
        middle = (lo + hi) // 2
        await self._write_range(batch, lo, middle)
        await self._write_range(batch, middle, hi)

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str, *, is_schema: bool = False) -> T:
        """Run ``operation`` until it does not raise :class:`SinkUnavailableError`, backing off."""

        async def create_missing_database(exc: Exception) -> None:
            if isinstance(exc, SinkUnavailableError) and exc.missing_database and not is_schema:
                with contextlib.suppress(SinkUnavailableError, SchemaSetupError):
                    await self._sink.ensure_schema()

        batch = self.config.batch
        return await self._consumer.retrying(
            operation,
            SinkUnavailableError,
            what=what,
            min_s=batch.retry_min_s,
            max_s=batch.retry_max_s,
            on_unavailable=create_missing_database,
        )
