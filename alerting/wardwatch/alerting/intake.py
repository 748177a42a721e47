"""The alerting service's intake: two lanes, its own lag, and conditions from stale samples held back.

Received MQTT messages are stamped on arrival and queued in one of two lanes:

* **live**: the normal case;
* **stale**: a vitals message whose newest sample was already older than ``guard.stale_after_s`` when it
  arrived (a backlog replayed after a broker restart, a gateway emptying its disk queue), and every later
  message of a patient who still has messages in this lane (per-patient order is kept).

The consumer takes live messages first and stale ones with what is left, counted in samples, but
always some (:data:`STALE_SHARE`), so a backlog cannot starve live patients and still drains.

Condition changes that stale messages produce are **held** per alarm (dedup key) instead of reaching
the alarm manager: a condition that starts and ends within a backlog has ended before anyone could act
and pages nobody (counted as ``wardwatch_alerting_stale_conditions_dropped``). Held changes are
released once the patient's backlog has drained and either a live message of the patient was handled
or no stale message of theirs came for a second (checked every second): a condition still true at the
end of its backlog pages then. (A gateway replaying slower than one message a second per patient is
seen as several short backlogs.)

:class:`LagMonitor` measures how long live messages wait in the intake (and the age of the samples
handled); past ``guard.max_lag_s`` the instance raises one technical alarm, ``monitoring_delayed``, per
ward it owns (paged to the ward's operator destination), and ``GET /healthz`` turns degraded; both
clear once the lag is back under half the bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from wardwatch.alerting.events import ConditionChange
from wardwatch.core.errors import SchemaError
from wardwatch.core.mqtt import Message
from wardwatch.core.schema import Vitals, decode_vitals, split_vitals_batch
from wardwatch.core.topics import is_vitals_batch_topic

__all__ = ["STALE_SHARE", "Entry", "HeldConditions", "Intake", "LagMonitor"]

STALE_SHARE: Final = 8  # at least 1 in this many messages of a full batch comes from the stale lane
TICK_QUIET_S: Final = 35.0  # longer than the engine's default flap window (30 s), which delays "sending again"
_VITALS_LEVEL: Final = "/vitals/"


@dataclass(slots=True)
class Entry:
    """A received message, when it arrived (wall clock, s), and its vitals if it is one (decoded once)."""

    message: Message
    arrived: float
    vitals: Vitals | None = None
    stale: bool = False  # its samples were already old on arrival: its condition changes are held


class Intake:
    """The two lanes; :meth:`put` is the MQTT client's ``on_message`` callback."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.time) -> None:
        self.stale_after_ms = stale_after_s * 1000
        self.clock = clock
        self.live: deque[Entry] = deque()
        self.stale: deque[Entry] = deque()
        self.backlogged: dict[str, int] = {}  # patient -> messages of theirs in the stale lane
        self._ready = asyncio.Event()

    def put(self, message: Message) -> None:
        """Queue a received message in its lane (never raises: decoding errors surface when it is handled).

        A vitals batch becomes one entry per series, on the series' own topic
        (:func:`~wardwatch.core.schema.split_vitals_batch`).
        """
        arrived = self.clock()
        if _VITALS_LEVEL in message.topic:
            if is_vitals_batch_topic(message.topic):
                try:
                    series = split_vitals_batch(message.topic, message.payload)
                except SchemaError:
                    series = []  # handled (and dead-lettered) in order, like any other message
                for topic, vitals in series:
                    self._put_vitals(Entry(dataclasses.replace(message, topic=topic), arrived), vitals)
                if series:
                    return
            else:
                try:
                    vitals = decode_vitals(message.payload)
                except SchemaError:
                    pass  # handled (and dead-lettered) in order, like any other message
                else:
                    self._put_vitals(Entry(message, arrived), vitals)
                    return
        self.live.append(Entry(message, arrived))
        self._ready.set()

    def _put_vitals(self, entry: Entry, vitals: Vitals) -> None:
        entry.vitals = vitals
        samples = vitals.samples
        newest = samples[-1].t if len(samples) == 1 else max(s.t for s in samples)
        entry.stale = entry.arrived * 1000 - newest > self.stale_after_ms
        if entry.stale or vitals.patient in self.backlogged:
            self.backlogged[vitals.patient] = self.backlogged.get(vitals.patient, 0) + 1
            self.stale.append(entry)
        else:
            self.live.append(entry)
        self._ready.set()

    def __len__(self) -> int:
        return len(self.live) + len(self.stale)

    def oldest_live_wait_s(self) -> float:
        """How long the oldest waiting live message has waited (0 if none waits)."""
        return self.clock() - self.live[0].arrived if self.live else 0.0

    async def take(self, limit: int) -> list[Entry]:
        """Wait for messages; return about ``limit`` samples' worth: live first, some stale always.

        Stale messages fill what live ones leave, counted in samples (a replayed backlog carries many
        per message), and take at least ``limit // STALE_SHARE`` samples (at least one message) a batch.
        """
        while not self.live and not self.stale:
            self._ready.clear()
            await self._ready.wait()
        live, stale = self.live, self.stale
        budget = max(limit - len(live), limit // STALE_SHARE) if stale else 0  # samples: backlogs batch them
        batch = [live.popleft() for _ in range(min(len(live), limit - budget))]
        while budget > 0 and stale:
            entry = stale.popleft()
            batch.append(entry)
            budget -= len(entry.vitals.samples) if entry.vitals is not None else 1
            patient = entry.vitals.patient if entry.vitals is not None else ""
            left = self.backlogged.get(patient, 0) - 1
            if left > 0:
                self.backlogged[patient] = left
            else:
                self.backlogged.pop(patient, None)
        return batch


class HeldConditions:
    """Condition changes from stale samples, held per alarm until the patient's backlog has drained."""

    def __init__(
        self, quiet_s: float = 1.0, tick_quiet_s: float = TICK_QUIET_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.quiet_s = quiet_s
        self.tick_quiet_s = tick_quiet_s
        self.clock = clock
        self._held: dict[str, ConditionChange] = {}  # dedup key -> latest change
        self._by_patient: dict[str, set[str]] = {}  # patient -> dedup keys held
        self._last_held: dict[str, float] = {}  # patient -> when a stale message of theirs last produced a change
        self._from_tick: dict[str, tuple[ConditionChange, float]] = {}  # dedup key -> (tick's start, held since)
        self._last_touch: dict[str, float] = {}  # patient -> when a stale message of theirs was last handled
        self.dropped = 0  # conditions that started and ended within a backlog

    def __len__(self) -> int:
        return len(self._held) + len(self._from_tick)

    @property
    def active(self) -> bool:
        """Whether any change is held or any patient's backlog was handled lately."""
        return bool(self._held or self._last_held or self._from_tick or self._last_touch)

    def touch(self, patient: str) -> None:
        """A stale message of ``patient`` was handled (their backlog may still be arriving)."""
        now = self.clock()
        self._last_held[patient] = now
        self._last_touch[patient] = now

    def hold_tick(self, change: ConditionChange) -> None:
        """A change of the wall-clock tick (a deadman: "no data") for a patient whose backlog is being handled.

        Its start is kept apart: it may only mean the backlog had not been handled yet, and the engine
        announces the device "sending again" only after its flap window. It is released ``tick_quiet_s``
        after the patient's last stale message, unless its end arrived meanwhile (see :meth:`cancels`);
        a patient's live message does not release it.
        """
        if change.active:
            self._from_tick.setdefault(change.dedup_key, (change, self.clock()))
        elif not self.cancels(change):
            self.hold(change)

    def cancels(self, change: ConditionChange) -> bool:
        """Whether ``change`` ends a held start of the tick (both are dropped: the device was sending all along)."""
        if change.active or change.dedup_key not in self._from_tick:
            return False
        del self._from_tick[change.dedup_key]
        self.dropped += 1
        return True

    def holds(self, patient: str) -> bool:
        """Whether changes of ``patient`` are held, or a stale message of theirs was handled within ``quiet_s``."""
        if patient in self._by_patient:
            return True
        last = self._last_held.get(patient)
        return last is not None and self.clock() - last < self.quiet_s

    def hold(self, change: ConditionChange) -> None:
        """Keep ``change`` back; a start followed by its end within the backlog cancels out."""
        if self.cancels(change):
            return
        key, patient = change.dedup_key, change.patient
        self._last_held[patient] = self.clock()
        previous = self._held.get(key)
        if previous is not None and previous.active and not change.active:
            del self._held[key]
            self._by_patient[patient].discard(key)
            self.dropped += 1
            return
        self._held[key] = change
        self._by_patient.setdefault(patient, set()).add(key)

    def release(self, patient: str) -> list[ConditionChange]:
        """The patient's held changes (their backlog has drained and they are live again)."""
        self._last_held.pop(patient, None)
        keys = self._by_patient.pop(patient, None)
        if not keys:
            return []
        return [self._held.pop(key) for key in sorted(keys)]

    def overdue(self, backlogged: dict[str, int]) -> list[ConditionChange]:
        """Held changes of patients with nothing left in the stale lane and no stale input for ``quiet_s``."""
        now = self.clock()
        cutoff = now - self.quiet_s
        for patient in [p for p, t in self._last_held.items() if t <= cutoff and p not in self._by_patient]:
            del self._last_held[patient]  # touched, nothing held, quiet now
        out: list[ConditionChange] = []
        if self._from_tick or self._last_touch:
            tick_cutoff = now - self.tick_quiet_s
            for key, (change, since) in list(self._from_tick.items()):
                patient = change.patient
                if patient not in backlogged and max(since, self._last_touch.get(patient, 0.0)) <= tick_cutoff:
                    del self._from_tick[key]
                    out.append(change)
            waiting = {change.patient for change, _ in self._from_tick.values()}
            for patient in [p for p, t in self._last_touch.items() if t <= tick_cutoff and p not in waiting]:
                del self._last_touch[patient]
        if not self._by_patient:
            return out
        for patient in list(self._by_patient):
            if patient not in backlogged and self._last_held.get(patient, 0.0) <= cutoff:
                out += self.release(patient)
        return out


class LagMonitor:
    """How far behind the instance is: the longest a live message waited in the intake, per window."""

    def __init__(self, max_lag_s: float) -> None:
        self.max_lag_s = max_lag_s
        self.clear_below_s = max_lag_s / 2
        self.delayed = False
        self._window_wait_s = 0.0
        self._window_age_s: float | None = None

    def observe(self, wait_s: float, sample_age_s: float | None) -> None:
        """A live message was handled after waiting ``wait_s`` with its newest sample ``sample_age_s`` old."""
        if wait_s > self._window_wait_s:
            self._window_wait_s = wait_s
        if sample_age_s is not None and (self._window_age_s is None or sample_age_s < self._window_age_s):
            self._window_age_s = sample_age_s

    def close_window(self, oldest_waiting_s: float) -> tuple[float, float | None, bool | None]:
        """End a window: ``(lag s, youngest sample age s or None, new delayed state or None if unchanged)``."""
        lag = max(self._window_wait_s, oldest_waiting_s)
        age = self._window_age_s
        self._window_wait_s = 0.0
        self._window_age_s = None
        if not self.delayed and lag > self.max_lag_s:
            self.delayed = True
            return lag, age, True
        if self.delayed and lag < self.clear_below_s:
            self.delayed = False
            return lag, age, False
        return lag, age, None
