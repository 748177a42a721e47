"""The durable store-and-forward queue: every message is on disk before it is published.

SQLite in WAL mode with ``synchronous=FULL``: a committed batch survives ``kill -9`` and power cuts.
Writes are batched (one transaction, one fsync per ``commit_interval_s`` or ``commit_batch``
messages) to spare the SD card. The queue is bounded: past ``max_messages`` the oldest unclaimed
messages are dropped, counted, and summarised per device as a *gap* (also stored durably) that the
publisher reports, so nurses learn the data has a hole.

Schema (one file)::

    messages(id INTEGER PRIMARY KEY AUTOINCREMENT, topic, payload, patient, device, t_first, t_last)
    gaps(id INTEGER PRIMARY KEY AUTOINCREMENT, patient, device, dropped, first_t, last_t, t)
    dead_letters(id INTEGER PRIMARY KEY AUTOINCREMENT, t, topic, payload, reason)
    counters(name TEXT PRIMARY KEY, value INTEGER)    -- per-device sequence numbers, totals

Order is ``messages.id`` (AUTOINCREMENT: never reused). A message leaves the queue only when the
publisher acknowledges it (:meth:`DurableQueue.ack`, after the broker's PUBACK) or dead-letters it.
Per-device sequence numbers are allocated here and committed in the same transaction as the
messages that carry them, so they never repeat across restarts.

All SQLite work runs on one worker thread; the public methods are called from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from wardwatch.core.lifecycle import opening
from wardwatch.gateway.queue_records import (
    SCHEMA,
    SCHEMA_VERSION,
    Batch,
    Committed,
    DeadLetter,
    Gap,
    QueueClosedError,
    QueuedMessage,
    QueueError,
    Reading,
)

__all__ = ["DeadLetter", "DurableQueue", "Gap", "QueueClosedError", "QueueError", "QueuedMessage", "Reading"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_MAX: Final = 20_000  # committed messages kept in memory for the publisher's hot path
DEAD_LETTER_MAX: Final = 10_000

DROPPED_TOTAL: Final = "dropped_total"
DEAD_LETTERED_TOTAL: Final = "dead_lettered_total"


class DurableQueue:
    """A bounded, ordered, crash-safe message queue on SQLite; use as ``async with DurableQueue(path) as q``."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_messages: int = 500_000,
        commit_interval_s: float = 0.2,
        commit_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.commit_interval_s = commit_interval_s
        self.commit_batch = commit_batch
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._pending = Batch()
        self._counters: dict[str, int] = {}
        self._seqs: dict[str, int] = {}  # allocated sequence numbers, committed or not
        self._count = 0  # committed messages in the file
        self._last_id = 0  # highest committed message id
        self._cache: dict[int, QueuedMessage] = {}
        self._cache_floor = 0  # every committed message with a higher id is in _cache
        self._claimed: set[int] = set()
        self._acked: set[int] = set()
        self._gaps: dict[int, Gap] = {}
        self._taken_gaps: set[int] = set()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        self._gap_event = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()
        self._closed = True
        self.commits = 0
        self.last_commit_error: str | None = None
        self._before_commit: list[Callable[[], None]] = []
        self._in_hooks = False  # before-commit hooks may put even while the queue closes (its last commit)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        async with opening(self._stack) as stack:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wardwatch-queue")
            # Closed in reverse: the flusher's task group, the last commit, the file, then the worker thread
            # that all of them need (pushed first, so it runs last).
            stack.callback(self._shut_down_worker)
            stack.push_async_callback(self._close_file)
            await self._run(self._open)
            stack.push_async_callback(self._last_commit)
            self._closed = False
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._tasks.create_task(self._flusher(), name="queue-flusher")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._wake.set()
        await self._stack.aclose()

    async def _last_commit(self) -> None:
        with contextlib.suppress(QueueError):
            await self._flush_locked()

    async def _close_file(self) -> None:
        with contextlib.suppress(Exception):
            await self._run(self._close_db)

    def _shut_down_worker(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise QueueClosedError("the queue is not open; use it as an async context manager")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns: power-cut safe
            db.execute("PRAGMA journal_size_limit=16777216")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise QueueError(f"queue file {self.path} has schema version {version}; expected {SCHEMA_VERSION}")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise QueueError(f"queue file {self.path} is damaged ({check}); move it aside to start afresh")
            self._counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
            self._seqs = {name: value for name, value in self._counters.items() if name.startswith("seq:")}
            self._count = db.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._last_id = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
            self._gaps = {
                row[0]: Gap(*row)
                for row in db.execute("SELECT id, patient, device, dropped, first_t, last_t, t FROM gaps ORDER BY id")
            }
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open queue file {self.path}: {exc}") from None
        self._cache_floor = self._last_id
        self._db = db
        if self._count:
            _log.info("queue %s holds %d messages from before the restart", self.path, self._count)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- producing -------------------------------------------------------------------------------

    def next_seq(self, key: str) -> int:
        """Allocate the next sequence number of ``key`` (e.g. a device id); committed with the next batch."""
        name = f"seq:{key}"
        value = self._seqs.get(name, -1) + 1
        self._seqs[name] = value
        self._pending.counters[name] = value
        return value

    def put(self, reading: Reading) -> None:
        """Queue ``reading``; it is on disk within ``commit_interval_s`` (or at once with :meth:`flush`)."""
        if self._closed and not self._in_hooks:
            raise QueueClosedError("the queue is closed")
        self._pending.inserts.append(reading)
        if len(self._pending.inserts) >= self.commit_batch:
            self._wake.set()

    def before_commit(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the loop at the start of every commit, before the batch is taken.

        A producer that coalesces (:class:`~wardwatch.gateway.readings.Recorder` building one vitals batch
        per device) puts what it holds there, so its messages are on disk with that same commit:
        no later than a message put at once, and lost in a crash no more often (both wait for the commit).
        """
        self._before_commit.append(hook)

    def request_commit(self) -> None:
        """Commit soon rather than at the end of ``commit_interval_s`` (a producer holds a full batch)."""
        self._wake.set()

    async def flush(self) -> None:
        """Commit everything queued, acknowledged or dead-lettered so far."""
        async with self._lock:
            await self._flush_locked()

    async def _flusher(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.commit_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except QueueError as exc:
                # Disk full or I/O error: keep the batch in memory and try again; say so once a minute.
                self.last_commit_error = str(exc)
                _log.error("%s", exc)
                await asyncio.sleep(1.0)

    async def _flush_locked(self) -> None:
        self._in_hooks = True
        try:
            for hook in self._before_commit:
                hook()
        finally:
            self._in_hooks = False
        batch = self._pending
        if batch.empty():
            return
        self._pending = Batch()
        batch.claimed = frozenset(self._claimed)
        batch.taken_gaps = frozenset(self._taken_gaps)
        try:
            result = await self._run(lambda: self._commit(batch))
        except BaseException:
            # Not committed: put the batch back in front of whatever arrived meanwhile.
            later = self._pending
            batch.inserts.extend(later.inserts)
            batch.acks.extend(later.acks)
            batch.gap_acks.extend(later.gap_acks)
            batch.dead.extend(later.dead)
            batch.counters.update(later.counters)
            self._pending = batch
            raise
        self.commits += 1
        self.last_commit_error = None
        self._counters.update(batch.counters)
        self._counters[DROPPED_TOTAL] = self._counters.get(DROPPED_TOTAL, 0) + result.dropped
        self._counters[DEAD_LETTERED_TOTAL] = self._counters.get(DEAD_LETTERED_TOTAL, 0) + result.dead_lettered
        self._count = result.count
        for message_id in batch.acks:
            self._acked.discard(message_id)
        for message_id, _ in batch.dead:
            self._acked.discard(message_id)
        for gap_id in batch.gap_acks:
            self._gaps.pop(gap_id, None)
            self._taken_gaps.discard(gap_id)
        for gap in result.gaps:
            self._gaps[gap.id] = gap
        if result.gaps:
            self._gap_event.set()
        if result.ids:
            self._last_id = result.ids[-1]
            for message_id, reading in zip(result.ids, batch.inserts, strict=True):
                self._cache[message_id] = QueuedMessage(message_id, reading.topic, reading.payload)
        for message_id in result.dropped_ids:
            self._cache.pop(message_id, None)
        if result.ids:
            while len(self._cache) > CACHE_MAX:
                oldest = next(iter(self._cache))
                del self._cache[oldest]
                self._cache_floor = max(self._cache_floor, oldest)
            self._committed.set()

    def _commit(self, batch: Batch) -> Committed:
        """One transaction: deletes, dead letters, inserts, counters, drop-oldest. Worker thread only."""
        db = self._db
        if db is None:
            raise QueueClosedError("the queue is closed")
        now = int(self._clock() * 1000)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                count = self._count
                dead_lettered = 0
                for message_id, reason in batch.dead:
                    moved = db.execute(
                        "INSERT INTO dead_letters (t, topic, payload, reason) "
                        "SELECT ?, topic, payload, ? FROM messages WHERE id = ?",
                        (now, reason, message_id),
                    ).rowcount
                    dead_lettered += moved
                    count -= db.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount
                if dead_lettered:
                    db.execute(
                        "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                        (DEAD_LETTER_MAX,),
                    )
                if batch.acks:
                    count -= db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in batch.acks]).rowcount
                if batch.gap_acks:
                    db.executemany("DELETE FROM gaps WHERE id = ?", [(i,) for i in batch.gap_acks])
                ids = []
                for r in batch.inserts:
                    cursor = db.execute(
                        "INSERT INTO messages (topic, payload, patient, device, t_first, t_last) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (r.topic, r.payload, r.patient, r.device, r.t_first, r.t_last),
                    )
                    ids.append(int(cursor.lastrowid or 0))
                count += len(ids)
                dropped_ids: list[int] = []
                gaps: list[Gap] = []
                if count > self.max_messages:
                    dropped_ids, gaps = self._drop_oldest(db, count - self.max_messages, batch, now)
                    count -= len(dropped_ids)
                totals = dict(batch.counters)
                if dropped_ids:
                    totals[DROPPED_TOTAL] = self._counters.get(DROPPED_TOTAL, 0) + len(dropped_ids)
                if dead_lettered:
                    totals[DEAD_LETTERED_TOTAL] = self._counters.get(DEAD_LETTERED_TOTAL, 0) + dead_lettered
                if totals:
                    db.executemany(
                        "INSERT INTO counters (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        list(totals.items()),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise QueueError(f"cannot write queue file {self.path}: {exc}") from None
        return Committed(ids, count, len(dropped_ids), dropped_ids, gaps, dead_lettered)

    def _drop_oldest(
        self, db: sqlite3.Connection, overflow: int, batch: Batch, now: int
    ) -> tuple[list[int], list[Gap]]:
        """Delete the ``overflow`` oldest messages not in flight; fold them into per-device gaps."""
        rows = db.execute(
            "SELECT id, patient, device, t_first, t_last FROM messages ORDER BY id LIMIT ?",
            (overflow + len(batch.claimed),),
        ).fetchall()
        victims = [row for row in rows if row[0] not in batch.claimed][:overflow]
        db.executemany("DELETE FROM messages WHERE id = ?", [(row[0],) for row in victims])
        per_device: dict[tuple[str | None, str | None], list[int]] = {}
        for _, patient, device, t_first, t_last in victims:
            summary = per_device.setdefault((patient, device), [0, t_first, t_last])
            summary[0] += 1
            summary[1] = min(summary[1], t_first)
            summary[2] = max(summary[2], t_last)
        open_gaps = {(g.patient, g.device): g for g in self._gaps.values() if g.id not in batch.taken_gaps}
        gaps = []
        for (patient, device), (dropped, first_t, last_t) in per_device.items():
            previous = open_gaps.get((patient, device))
            if previous is not None:  # not yet handed to the publisher: merge, so gaps stay one row per device
                gap = Gap(
                    previous.id,
                    patient,
                    device,
                    previous.dropped + dropped,
                    min(previous.first_t, first_t),
                    max(previous.last_t, last_t),
                    now,
                )
                db.execute(
                    "UPDATE gaps SET dropped = ?, first_t = ?, last_t = ?, t = ? WHERE id = ?",
                    (gap.dropped, gap.first_t, gap.last_t, gap.t, gap.id),
                )
            else:
                cursor = db.execute(
                    "INSERT INTO gaps (patient, device, dropped, first_t, last_t, t) VALUES (?, ?, ?, ?, ?, ?)",
                    (patient, device, dropped, first_t, last_t, now),
                )
                gap = Gap(int(cursor.lastrowid or 0), patient, device, dropped, first_t, last_t, now)
            gaps.append(gap)
        if victims:
            _log.warning(
                "queue full (%d messages): dropped the %d oldest", self.max_messages, len(victims)
            )  # counted and reported as a data gap
        return [row[0] for row in victims], gaps

    # -- consuming (the publisher) ---------------------------------------------------------------

    async def read_after(self, cursor: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` committed messages with ids above ``cursor``, oldest first; they become claimed."""
        if self._executor is None:
            raise QueueClosedError("the queue is not open; use it as an async context manager")
        async with self._lock:  # not while a commit may be dropping the oldest messages
            return await self._read_after_locked(cursor, limit)

    async def _read_after_locked(self, cursor: int, limit: int) -> list[QueuedMessage]:
        if cursor >= self._cache_floor:
            found = []
            for message_id, message in self._cache.items():
                if message_id > cursor:
                    found.append(message)
                    if len(found) >= limit:
                        break
        else:

            def select() -> list[QueuedMessage]:
                if self._db is None:
                    raise QueueClosedError("the queue is closed")
                rows = self._db.execute(
                    "SELECT id, topic, payload FROM messages WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
                ).fetchall()
                return [QueuedMessage(i, topic, bytes(payload)) for i, topic, payload in rows]

            found = await self._run(select)
            found = [m for m in found if m.id not in self._acked]
        self._claimed.update(m.id for m in found)
        return found

    async def wait_beyond(self, cursor: int) -> None:
        """Wait until a committed message with an id above ``cursor`` exists."""
        while self._last_id <= cursor:
            self._committed.clear()
            await self._committed.wait()

    def ack(self, message_id: int) -> None:
        """The broker has the message: delete it (with the next commit)."""
        self._claimed.discard(message_id)
        self._cache.pop(message_id, None)
        self._acked.add(message_id)
        self._pending.acks.append(message_id)

    def release(self, message_id: int) -> None:
        """The message was not delivered and will be retried; it may be dropped again if the queue fills."""
        self._claimed.discard(message_id)

    def dead_letter(self, message_id: int, reason: str) -> None:
        """Move a message the broker refused for good to the ``dead_letters`` table (next commit)."""
        self._claimed.discard(message_id)
        self._cache.pop(message_id, None)
        self._acked.add(message_id)
        self._pending.dead.append((message_id, reason))

    async def take_gaps(self) -> list[Gap]:
        """Gaps not yet handed out, oldest first; they stop growing and wait for :meth:`ack_gap`."""
        async with self._lock:
            fresh = [gap for gap_id, gap in self._gaps.items() if gap_id not in self._taken_gaps]
            self._taken_gaps.update(gap.id for gap in fresh)
            self._gap_event.clear()
            return fresh

    async def wait_gaps(self) -> None:
        """Wait until there are gaps not yet handed out."""
        while not any(gap_id not in self._taken_gaps for gap_id in self._gaps):
            self._gap_event.clear()
            await self._gap_event.wait()

    def ack_gap(self, gap_id: int) -> None:
        """The broker has the gap report: delete it (next commit)."""
        self._pending.gap_acks.append(gap_id)

    def release_gap(self, gap_id: int) -> None:
        """The gap report was not delivered; hand it out again."""
        self._taken_gaps.discard(gap_id)
        self._gap_event.set()

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest last."""

        def select() -> list[DeadLetter]:
            if self._db is None:
                raise QueueClosedError("the queue is closed")
            rows = self._db.execute(
                "SELECT id, t, topic, payload, reason FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [DeadLetter(i, t, topic, bytes(payload), reason) for i, t, topic, payload, reason in reversed(rows)]

        return await self._run(select)

    # -- figures ---------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages waiting for the broker (on disk or about to be)."""
        return self._count - len(self._acked) + len(self._pending.inserts)

    @property
    def in_flight(self) -> int:
        """Messages handed to the publisher and not yet acknowledged."""
        return len(self._claimed)

    @property
    def dropped_total(self) -> int:
        """Messages dropped because the queue was full, since the file was created."""
        return self._counters.get(DROPPED_TOTAL, 0)

    @property
    def dead_lettered_total(self) -> int:
        """Messages the broker refused for good, since the file was created."""
        return self._counters.get(DEAD_LETTERED_TOTAL, 0)

    @property
    def last_id(self) -> int:
        """Highest committed message id."""
        return self._last_id

    def counters(self) -> dict[str, int]:
        """Committed counters (sequence numbers and totals), for inspection and tests."""
        return dict(self._counters)

    @staticmethod
    def ids(messages: Iterable[QueuedMessage]) -> list[int]:
        """Ids of ``messages`` (a convenience for tests and logs)."""
        return [m.id for m in messages]
