"""The pager: delivers queued pages from the outbox, with retries, backoff and channel fail-over.

Each page is tried on its destination's channels in order; each channel gets
``attempts_per_channel`` attempts with exponential backoff (tenacity) before the next channel is
tried. If every channel failed, ``on_undeliverable`` is called once (the service pages the ward's
failsafe destination) and whole rounds repeat with growing pauses until the page is delivered or no
longer wanted (its alarm was acknowledged, silenced or resolved: then it is cancelled). Delivery is
recorded in the outbox with channel, time and attempts, and in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from wardwatch.alerting.audit import SYSTEM_ACTOR, AuditEntry
from wardwatch.alerting.metrics import AlertingMetrics
from wardwatch.alerting.paging.channels import Channel, DeliveryError
from wardwatch.alerting.settings import PagingConfig
from wardwatch.alerting.store import Store
from wardwatch.core.schema import Page

_log = logging.getLogger(__name__)

ChannelMap = Mapping[tuple[str, str], Sequence[Channel]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.retryable


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Pager:
    """Delivers pages; an async context manager that owns its delivery tasks.

    ``channels`` maps (ward, destination) to that destination's channels in fail-over order.
    ``is_wanted(page)`` says whether a page still matters; ``on_undeliverable(page)`` is called once
    when a page failed on every channel.
    """

    def __init__(
        self,
        store: Store,
        channels: ChannelMap,
        settings: PagingConfig,
        *,
        is_wanted: Callable[[Page], bool] = lambda page: True,
        on_undeliverable: Callable[[Page], None] = lambda page: None,
        on_delivered: Callable[[Page, str, int], None] = lambda page, channel, t: None,
        metrics: AlertingMetrics | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self.channels = channels
        self.settings = settings
        self._is_wanted = is_wanted
        self._on_undeliverable = on_undeliverable
        self._on_delivered = on_delivered
        self._metrics = metrics
        self._clock = clock
        self._in_flight: set[str] = set()
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self.submit(self.store.pending_pages())  # redeliver what a previous run left pending
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tasks is not None
        for task in list(self._running):  # pending deliveries stay in the outbox for the next run
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks.__aexit__(exc_type, exc, tb)

    @property
    def in_flight(self) -> int:
        """Pages being delivered now."""
        return len(self._in_flight)

    async def wait_idle(self) -> None:
        """Wait until no page is being delivered."""
        await self._idle.wait()

    def submit(self, pages: Iterable[Page]) -> None:
        """Start delivering pages (already in the outbox); a page in flight is not started twice."""
        assert self._tasks is not None, "use Pager as an async context manager"
        for page in pages:
            if page.page_id in self._in_flight:
                continue
            self._in_flight.add(page.page_id)
            self._idle.clear()
            delivery = self._deliver(page)
            try:
                task = self._tasks.create_task(delivery, name=f"page:{page.page_id}")
            except RuntimeError:  # shutting down: the page stays pending in the outbox for the next run
                delivery.close()
                self._in_flight.discard(page.page_id)
                continue
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _deliver(self, page: Page) -> None:
        crashes = 0
        try:
            while True:
                try:
                    async with self._semaphore:
                        await self._deliver_rounds(page)
                    return
                except Exception:  # e.g. the store failing: never give a page up, try again after a pause
                    crashes += 1
                    if self._metrics is not None:
                        self._metrics.failures.labels(stage="paging").inc()
                    _log.exception("delivery of page %s crashed (%d); trying again", page.page_id, crashes)
                    await asyncio.sleep(
                        min(self.settings.round_backoff_max_s, self.settings.backoff_min_s * 2**crashes)
                    )
        finally:
            self._in_flight.discard(page.page_id)
            if not self._in_flight:
                self._idle.set()

    async def _deliver_rounds(self, page: Page) -> None:
        channels = self.channels.get((page.ward, page.destination), ())
        attempts = 0
        rounds = 0
        while True:
            if not self._is_wanted(page):
                self._cancel(page, "alarm no longer active")
                return
            for channel in channels:
                if not self._is_wanted(page):
                    self._cancel(page, "alarm no longer active")
                    return
                used, error = await self._try_channel(channel, page)
                attempts += used
                if error is not None:
                    exc = error
                    if not self._is_wanted(page):
                        self._cancel(page, "alarm no longer active")
                        return
                    _log.warning(
                        "page %s to %s via %s failed: %s", page.page_id, page.destination, channel.name, exc.problem
                    )
                    self.store.mark_attempt(page.page_id, attempts, str(exc))
                    if self._metrics is not None:
                        self._metrics.page_failures.labels(channel=channel.name.split(":")[0]).inc()
                    continue
                self._delivered(page, channel.name, attempts)
                return
            rounds += 1
            if rounds == 1:
                _log.error("page %s to %s could not be delivered on any channel", page.page_id, page.destination)
                self.store.audit(
                    AuditEntry(
                        t=self._clock(),
                        actor=SYSTEM_ACTOR,
                        action="page_undeliverable",
                        alarm_id=page.alarm_id,
                        patient=page.patient,
                        ward=page.ward,
                        reason="every channel failed" if channels else "destination has no channels",
                        details={"page_id": page.page_id, "destination": page.destination, "attempts": attempts},
                    )
                )
                self._on_undeliverable(page)
            pause = min(self.settings.round_backoff_max_s, self.settings.backoff_min_s * 2**rounds)
            await asyncio.sleep(pause)

    async def _try_channel(self, channel: Channel, page: Page) -> tuple[int, DeliveryError | None]:
        """Deliver on one channel with retries: (attempts used, the last error or ``None`` if delivered)."""
        count = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts_per_channel),
            wait=wait_exponential(multiplier=self.settings.backoff_min_s, max=self.settings.backoff_max_s)
            + wait_random(0, self.settings.backoff_min_s),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    count += 1
                    if count > 1 and not self._is_wanted(page):
                        return count, DeliveryError(channel.name, "alarm no longer active", retryable=False)
                    await channel.send(page)
        except DeliveryError as exc:
            return count, exc
        return count, None

    def _delivered(self, page: Page, channel: str, attempts: int) -> None:
        t = self._clock()
        entry = AuditEntry(
            t=t,
            actor=SYSTEM_ACTOR,
            action="page_delivered",
            alarm_id=page.alarm_id,
            patient=page.patient,
            ward=page.ward,
            details={
                "page_id": page.page_id,
                "destination": page.destination,
                "step": page.step,
                "channel": channel,
                "attempts": attempts,
                "state": str(page.state),
            },
        )
        if self.store.mark_delivered(page.page_id, channel, t, attempts, entry):
            if self._metrics is not None:
                self._metrics.pages_delivered.labels(channel=channel.split(":")[0], priority=str(page.priority)).inc()
                self._metrics.page_delivery_seconds.observe(max(0, t - page.t) / 1000)
            self._on_delivered(page, channel, t)

    def _cancel(self, page: Page, reason: str) -> None:
        self.store.mark_cancelled(
            page.page_id,
            AuditEntry(
                t=self._clock(),
                actor=SYSTEM_ACTOR,
                action="page_cancelled",
                alarm_id=page.alarm_id,
                patient=page.patient,
                ward=page.ward,
                reason=reason,
                details={"page_id": page.page_id, "destination": page.destination},
            ),
        )
