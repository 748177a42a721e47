"""The durable queue's file schema, errors and records (:mod:`wardwatch.gateway.queue` re-exports the public ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from wardwatch.gateway.errors import GatewayError

SCHEMA_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    patient TEXT,
    device TEXT,
    t_first INTEGER NOT NULL,
    t_last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient TEXT,
    device TEXT,
    dropped INTEGER NOT NULL,
    first_t INTEGER NOT NULL,
    last_t INTEGER NOT NULL,
    t INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class QueueError(GatewayError):
    """The on-disk queue cannot be opened or written (disk full, corrupt file, wrong permissions)."""


class QueueClosedError(QueueError):
    """The queue is not open."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A message to queue: where it goes, its bytes, and whose samples (for gap reports)."""

    topic: str
    payload: bytes
    t_first: int
    t_last: int
    patient: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A committed message, in queue order."""

    id: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """Readings dropped because the queue was full, summarised per device."""

    id: int
    patient: str | None
    device: str | None
    dropped: int
    first_t: int
    last_t: int
    t: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the broker refused for good, kept locally with the reason."""

    id: int
    t: int
    topic: str
    payload: bytes
    reason: str


@dataclass(slots=True)
class Batch:
    """What one commit writes, snapshotted on the loop and applied on the worker thread."""

    inserts: list[Reading] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    gap_acks: list[int] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    claimed: frozenset[int] = frozenset()
    taken_gaps: frozenset[int] = frozenset()

    def empty(self) -> bool:
        return not (self.inserts or self.acks or self.gap_acks or self.dead or self.counters)


@dataclass(slots=True)
class Committed:
    """What a commit did: the new ids, the count after it, what it dropped (ids, gaps), what it dead-lettered."""

    ids: list[int]
    count: int
    dropped: int
    dropped_ids: list[int]
    gaps: list[Gap]
    dead_lettered: int
