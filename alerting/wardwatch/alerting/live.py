"""The live ward board: latest values per patient and device, gateway state and alarm changes, pushed to watchers.

:class:`LiveBoard` keeps, per ward, the latest reading of each vital sign per patient, each device's
link and battery, each patient's NEWS2, each gateway's availability, and fans changes out to
subscribers (the console's server-sent-events streams, :mod:`wardwatch.alerting.stream`).

The alarm path never waits for a watcher: everything here is called synchronously from the MQTT
input and the alarm service, does O(1) work per message (readings are coalesced and sent to
subscribers at most every :data:`FLUSH_S`), and pushes into bounded per-subscriber buffers. A
subscriber whose buffer is full is cut off (counted in ``wardwatch_alerting_live_dropped``) and
reconnects for a fresh snapshot; nothing ever blocks the caller. Callers still wrap these calls so
that a bug here is counted and never reaches the engine (:meth:`LiveBoard.guard`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from wardwatch.alerting.manager import AlarmRecord
from wardwatch.core.schema import DeviceStatus, GatewayStatus, Signal, Vitals

__all__ = ["FLUSH_S", "LIVE_SIGNALS", "LiveBoard", "Subscription", "alarm_json", "sse_event"]

_log = logging.getLogger(__name__)

FLUSH_S: Final = 0.25
"""How often coalesced reading changes go to subscribers (alarm changes go at once)."""

LIVE_SIGNALS: Final = frozenset(
    {Signal.HEART_RATE, Signal.SPO2, Signal.PULSE_RATE, Signal.PERFUSION_INDEX, Signal.BATTERY}
)
"""The signals whose latest value the board shows."""

DEFAULT_BUFFER: Final = 256
"""Events a subscriber may have waiting before it is cut off as too slow."""


def alarm_json(record: AlarmRecord) -> dict[str, Any]:
    """An alarm as the API and the live stream show it."""
    return {
        "alarm_id": record.alarm_id,
        "dedup_key": record.dedup_key,
        "ward": record.ward,
        "patient": record.patient,
        "rule": record.rule,
        "category": record.category,
        "priority": record.priority,
        "state": record.state,
        "started": record.started,
        "updated": record.updated,
        "value": record.value,
        "text": record.text,
        "actor": record.actor,
        "condition_active": record.condition_active,
        "escalation": {"round": record.round, "step": record.step, "next_step_at": record.next_step_at},
        "acknowledged_at": record.acknowledged_at,
        "silenced_until": record.silenced_until,
        "renotify_at": record.renotify_at,
        "resolved_at": record.resolved_at,
        "realarm_at": record.recheck_at,  # resolved by hand while present: a new alarm opens then unless it clears
        "reraised_as": record.reraised_as,
        "reraised_from": record.reraised_from,
        "pages": record.pages,
        "flaps": record.flaps,
    }


def sse_event(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: NAME`` and its JSON ``data``."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


class Subscription:
    """One watcher of one ward: a bounded buffer of encoded events and a wake-up.

    :meth:`push` never blocks: when the buffer is full the subscription is marked :attr:`overflowed`
    and closed (the stream ends; the client reconnects and starts from a snapshot).
    """

    def __init__(self, ward: str, capacity: int) -> None:
        self.ward = ward
        self.capacity = capacity
        self.overflowed = False
        self.closed = False
        self._events: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()

    def push(self, event: bytes) -> bool:
        """Queue an encoded event; ``False`` (and closed) if the subscriber is too slow or already closed."""
        if self.closed:
            return False
        if len(self._events) >= self.capacity:
            self.overflowed = True
            self.close()
            return False
        self._events.append(event)
        self._ready.set()
        return True

    def close(self) -> None:
        """End the subscription (the waiting reader returns what is left, then nothing)."""
        self.closed = True
        self._ready.set()

    async def next_batch(self, timeout: float) -> list[bytes]:
        """Events waiting (at most ``timeout`` s of waiting; empty on time-out or when closed and drained)."""
        if not self._events and not self.closed:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        if self.overflowed:  # what is left is stale: the client must start again from a snapshot
            self._events.clear()
            return []
        batch = list(self._events)
        self._events.clear()
        return batch


class _Ward:
    """The latest state of one ward."""

    def __init__(self) -> None:
        self.patients: dict[str, dict[str, Any]] = {}
        self.gateways: dict[str, dict[str, Any]] = {}
        self.dirty_patients: set[str] = set()
        self.dirty_gateways: set[str] = set()
        self.subscribers: set[Subscription] = set()
        self.discharged: set[str] = set()  # never shown again (a late sample of theirs may still be accepted)
        # each patient's entry as JSON, kept while the patient is not dirty (see LiveBoard._patient_entries)
        self.encoded: dict[str, msgspec.Raw] = {}

    def patient(self, patient: str) -> dict[str, Any]:
        entry = self.patients.get(patient)
        if entry is None:
            entry = self.patients[patient] = {"patient": patient, "gateway": None, "vitals": {}, "devices": {}}
        return entry

    def gateway(self, gateway: str) -> dict[str, Any]:
        entry = self.gateways.get(gateway)
        if entry is None:
            entry = self.gateways[gateway] = {"gateway": gateway, "online": None, "t": None}
        return entry


class LiveBoard:
    """Latest values and alarm changes per ward, fanned out to bounded subscribers (see the module)."""

    def __init__(
        self,
        wards: Iterable[str],
        open_alarms: Callable[[], list[AlarmRecord]],
        *,
        watched: Callable[[], list[AlarmRecord]] = list,
        registry: CollectorRegistry | None = None,
        now_ms: Callable[[], int] | None = None,
        flush_s: float = FLUSH_S,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self.buffer = buffer  # events a subscriber may have waiting before it is cut off
        self._wards = {ward: _Ward() for ward in wards}
        self._open_alarms = open_alarms
        self._watched = watched  # alarms resolved by hand while present: a new alarm opens at realarm_at
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.flush_s = flush_s  # how often coalesced reading changes are sent
        self._flush_handle: asyncio.TimerHandle | None = None
        # a ward's encoded snapshot, shared by the watchers that subscribe before the next flush or alarm change
        # (20 consoles reconnecting at once must not encode a 1,000-patient board 20 times on the alarm path)
        self._generation = 0
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        # each open alarm's JSON for snapshots, kept until its next change (see _encoded_alarm)
        self._alarm_entries: dict[str, tuple[AlarmRecord, int, msgspec.Raw]] = {}
        registry = registry or CollectorRegistry()
        self.dropped = Counter(
            "wardwatch_alerting_live_dropped",
            "Live-stream subscribers cut off as too slow (buffer full or a write timed out)",
            ["why"],
            registry=registry,
        )
        self.failures = Counter(
            "wardwatch_alerting_live_failures",
            "Exceptions in the live board, contained so they never reach the alarm path",
            registry=registry,
        )
        self.subscribers = Gauge("wardwatch_alerting_live_subscribers", "Open live streams", registry=registry)
        self.subscribers.set_function(self.watchers)

    @property
    def wards(self) -> list[str]:
        """The wards this board shows."""
        return list(self._wards)

    def watchers(self) -> int:
        """Open subscriptions over all wards."""
        return sum(len(w.subscribers) for w in self._wards.values())

    def guard(self, update: Callable[[], None]) -> None:
        """Run an update; an exception is counted and logged, never raised to the alarm path."""
        try:
            update()
        except Exception:
            self.failures.inc()
            _log.exception("live board update failed (the alarm path is unaffected)")

    # -- inputs (called from the MQTT input and the alarm service) --------------------------------

    def on_vitals(self, ward: str, vitals: Vitals) -> None:
        """The latest sample with a value (or why there is none) of a shown signal."""
        state = self._wards.get(ward)
        if state is None or vitals.signal not in LIVE_SIGNALS or vitals.patient in state.discharged:
            return
        sample = max(vitals.samples, key=lambda s: s.t)
        patient = state.patient(vitals.patient)
        patient["gateway"] = vitals.gateway
        shown = patient["vitals"].get(vitals.signal)
        if shown is not None and shown["t"] > sample.t:
            return  # an older reading arriving late
        patient["vitals"][str(vitals.signal)] = {
            "value": sample.v,
            "t": sample.t,
            "device": vitals.device,
            "absent": sample.absent,
            "quality": list(sample.q),
        }
        self._dirty(state, patient=vitals.patient)

    def on_device_status(self, ward: str, status: DeviceStatus) -> None:
        """A device's link state and battery."""
        state = self._wards.get(ward)
        if state is None or status.patient in state.discharged:
            return
        patient = state.patient(status.patient)
        patient["gateway"] = status.gateway
        patient["devices"][status.device] = {
            "device": status.device,
            "role": status.role,
            "connected": status.connected,
            "battery": status.battery,
            "reason": status.reason,
            "t": status.t,
        }
        self._dirty(state, patient=status.patient)

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> None:
        """A gateway came online or went offline (its MQTT last will)."""
        state = self._wards.get(ward)
        if state is None:
            return
        entry = state.gateway(gateway)
        entry["online"] = online
        entry["t"] = t
        self._dirty(state, gateway=gateway)

    def on_gateway_status(self, status: GatewayStatus) -> None:
        """A gateway's periodic status: its devices' links and batteries."""
        state = self._wards.get(status.ward)
        if state is None:
            return
        entry = state.gateway(status.gateway)
        entry["status_t"] = status.t
        entry["queue_depth"] = status.queue_depth
        for link in status.devices:
            if link.patient in state.discharged:
                continue
            patient = state.patient(link.patient)
            patient["gateway"] = status.gateway
            device = patient["devices"].setdefault(link.device, {"device": link.device})
            device.update(
                role=link.role, connected=link.connected, battery=link.battery, last_seen=link.last_seen, t=status.t
            )
            state.dirty_patients.add(link.patient)
        self._dirty(state, gateway=status.gateway)

    def on_admitted(self, ward: str, patient: str) -> None:
        """A patient admitted to ``ward``: on the board at once (no readings yet), an ``admitted`` event."""
        state = self._wards.get(ward)
        if state is None or patient in state.discharged:
            return
        self._fan_out(state, "admitted", {"now": self._now_ms(), "patient": state.patient(patient)})

    def on_kit(self, ward: str, patient: str, gateway: str) -> None:
        """A kit assigned: the patient's tile names its gateway (and its state) before the first reading."""
        state = self._wards.get(ward)
        if state is None or patient in state.discharged:
            return
        state.patient(patient)["gateway"] = gateway
        self._dirty(state, patient=patient)

    def on_discharged(self, ward: str, patient: str) -> None:
        """A patient discharged from ``ward``: off the board for good, a ``discharged`` event."""
        state = self._wards.get(ward)
        if state is None:
            return
        state.discharged.add(patient)
        state.patients.pop(patient, None)
        state.encoded.pop(patient, None)
        state.dirty_patients.discard(patient)
        self._fan_out(state, "discharged", {"now": self._now_ms(), "ward": ward, "patient": patient})

    def load_roster(
        self,
        ward: str,
        admitted: Iterable[str],
        discharged: Iterable[str],
        gateways: Mapping[str, str] | None = None,
    ) -> None:
        """At start: the registry's admitted patients are on the board, each with the gateway of their kit
        (``gateways``: patient -> gateway), its discharged ones never again."""
        state = self._wards.get(ward)
        if state is None:
            return
        state.discharged.update(discharged)
        for patient in admitted:
            if patient not in state.discharged:
                entry = state.patient(patient)
                if gateways is not None and patient in gateways:
                    entry["gateway"] = gateways[patient]
                    state.dirty_patients.add(patient)  # a kept encoding of this entry is stale now

    def on_news2(self, ward: str, patient: str, news2: dict[str, Any] | None) -> None:
        """The patient's current NEWS2 (compact, :func:`~wardwatch.alerting.observations.live.board_json`);
        sent to watchers only when it changed."""
        state = self._wards.get(ward)
        if state is None:
            return
        entry = state.patient(patient)
        if entry.get("news2") == news2:
            return
        entry["news2"] = news2
        self._dirty(state, patient=patient)

    def on_alarms(self, records: Iterable[AlarmRecord]) -> None:
        """Alarm changes the store has saved: sent to the ward's subscribers at once."""
        self._generation += 1
        if len(self._alarm_entries) > 2 * len(self._open_alarms()) + 64:
            self._alarm_entries.clear()  # bounded even if an alarm left the open ones without passing here
        for record in records:
            self._alarm_entries.pop(record.alarm_id, None)  # changed: encoded afresh by the next snapshot
            state = self._wards.get(record.ward)
            if state is None or not state.subscribers:
                continue
            self._fan_out(state, "alarm", alarm_json(record))

    # -- watchers ---------------------------------------------------------------------------------

    def snapshot(self, ward: str, *, encoded: bool = False) -> dict[str, Any]:
        """Everything the board of ``ward`` shows now (``KeyError`` for a ward this service does not own).

        ``encoded``: patients and alarms come as pre-encoded JSON (:class:`msgspec.Raw`), for encoding the whole.
        ``watched``: alarms resolved by hand while their condition lasts (resolved, ``realarm_at`` set); the
        stream's ``alarm`` events carry their changes (``realarm_at`` null once the watch ends).
        """
        state = self._wards[ward]
        alarm_entry: Callable[[AlarmRecord], Any] = self._encoded_alarm if encoded else alarm_json
        alarms = [alarm_entry(r) for r in self._open_alarms() if r.ward == ward]
        watched = [alarm_json(r) for r in self._watched() if r.ward == ward]
        return {
            "ward": ward,
            "now": self._now_ms(),
            "patients": self._patient_entries(state) if encoded else list(state.patients.values()),
            "gateways": list(state.gateways.values()),
            "alarms": alarms,
            "watched": watched,
        }

    def subscribe(self, ward: str) -> Subscription:
        """A new watcher of ``ward`` (buffer: :attr:`buffer` events); its first event is a ``snapshot``."""
        state = self._wards[ward]
        subscription = Subscription(ward, self.buffer)
        subscription.push(self._snapshot_event(ward, state))
        state.subscribers.add(subscription)
        return subscription

    def _snapshot_event(self, ward: str, state: _Ward) -> bytes:
        """The ``snapshot`` event, encoded once per generation while the ward has watchers.

        Reusing it is exact: every reading or device change since it was made is in the ward's dirty set
        (a flush is pending, since the ward had watchers), which goes to every watcher, the new one too; a
        flush or an alarm change starts a new generation.
        """
        cached = self._snapshots.get(ward)
        if cached is not None and cached[0] == self._generation and state.subscribers:
            return cached[1]
        event = sse_event("snapshot", self.snapshot(ward, encoded=True))
        if state.subscribers:
            self._snapshots[ward] = (self._generation, event)
        return event

    @staticmethod
    def _patient_entries(state: _Ward) -> list[msgspec.Raw]:
        """The ward's patients as JSON, each re-encoded only when it changed since it was last encoded.

        Measured (``python -m wardwatch.alerting.bench_snapshot``, 1,000 patients and 1,000 open alarms,
        100 patients changed between two snapshots): the patients' entries were about half of a snapshot's
        time on the alarm service's loop, the alarms the other half (3.4-4.3 ms in all); with the patients'
        and the alarms' JSON kept (:meth:`_encoded_alarm`) a snapshot is mostly a join: 0.8 ms. Sending the
        snapshot in chunks with yields between them would bound each step too, but the snapshot would no
        longer be one moment of the board (a flush or an alarm change could fall between two chunks), and
        it costs the same CPU on the same loop: the chunks only interleave it with the pages.

        Exact: every change to a patient's entry marks the patient dirty (a dirty entry is encoded afresh and
        not kept); a flush drops the kept bytes of the patients it finds dirty before it clears them, and
        keeps the new bytes it encodes for the ``values`` event (so the fan-out encodes nothing twice).
        """
        dirty = state.dirty_patients
        return [
            msgspec.Raw(msgspec.json.encode(state.patients[patient]))
            if patient in dirty
            else state.encoded.get(patient) or LiveBoard._encode_patient(state, patient)
            for patient in state.patients
        ]

    def _encoded_alarm(self, record: AlarmRecord) -> msgspec.Raw:
        """An open alarm's JSON, kept until it changes: every change of a record is saved and then passed to
        :meth:`on_alarms`, which drops it; until then the same record with the same ``updated`` is unchanged.
        """
        kept = self._alarm_entries.get(record.alarm_id)
        if kept is not None and kept[0] is record and kept[1] == record.updated:
            return kept[2]
        raw = msgspec.Raw(msgspec.json.encode(alarm_json(record)))
        self._alarm_entries[record.alarm_id] = (record, record.updated, raw)
        return raw

    @staticmethod
    def _encode_patient(state: _Ward, patient: str) -> msgspec.Raw:
        """A patient's entry as JSON, kept until the patient is next found dirty at a flush."""
        raw = state.encoded[patient] = msgspec.Raw(msgspec.json.encode(state.patients[patient]))
        return raw

    def unsubscribe(self, subscription: Subscription, why: str | None = None) -> None:
        """Forget a watcher; ``why`` (``buffer_full``, ``write_timeout``) counts it as dropped."""
        subscription.close()
        state = self._wards.get(subscription.ward)
        if state is not None:
            state.subscribers.discard(subscription)
        if why is not None:
            self.dropped.labels(why=why).inc()

    def close(self) -> None:
        """End every stream (shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for state in self._wards.values():
            for subscription in list(state.subscribers):
                self.unsubscribe(subscription)

    # -- fan-out ----------------------------------------------------------------------------------

    def _dirty(self, state: _Ward, *, patient: str | None = None, gateway: str | None = None) -> None:
        if patient is not None:
            state.dirty_patients.add(patient)
        if gateway is not None:
            state.dirty_gateways.add(gateway)
        if self._flush_handle is None and state.subscribers:
            self._flush_handle = asyncio.get_running_loop().call_later(self.flush_s, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._generation += 1
        try:
            for state in self._wards.values():
                for patient in state.dirty_patients:
                    state.encoded.pop(patient, None)  # changed since encoded
                if state.subscribers and (state.dirty_patients or state.dirty_gateways):
                    # each changed patient encoded once: for this event and kept for the next snapshots
                    changed = [self._encode_patient(state, p) for p in sorted(state.dirty_patients)]
                    data = {
                        "now": self._now_ms(),
                        "patients": changed,
                        "gateways": [state.gateways[g] for g in sorted(state.dirty_gateways)],
                    }
                    self._fan_out(state, "values", data)
                state.dirty_patients.clear()
                state.dirty_gateways.clear()
        except Exception:
            self.failures.inc()
            _log.exception("sending live values failed (the alarm path is unaffected)")

    def _fan_out(self, state: _Ward, event: str, data: dict[str, Any]) -> None:
        chunk = sse_event(event, data)  # encoded once, whatever the number of watchers
        for subscription in list(state.subscribers):
            if not subscription.push(chunk):
                self.unsubscribe(subscription, "buffer_full" if subscription.overflowed else None)
