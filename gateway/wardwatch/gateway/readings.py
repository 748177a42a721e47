"""From notification bytes to queued wire messages: decode, time-stamp, number, encode, queue.

:class:`DeviceDecoder` turns the bytes of one device's notifications (every measurement of the core
profile table, and battery) into :class:`~wardwatch.core.schema.Vitals` samples; :class:`Recorder`
numbers them (per-device sequence numbers, allocated by the durable queue) and queues their JSON.

Batching (``batch=True``, the gateway's default, ``queue.batch_vitals``): instead of one message per
signal per notification, the recorder holds a device's samples until the queue's next commit and then
queues them as one :class:`~wardwatch.core.schema.VitalsBatch` per device (one series per signal, samples in
arrival order). A message waits for that commit either way (the publisher sends committed messages only),
so batching adds no latency and no crash exposure; it divides the per-message cost (JSON, SQLite row,
MQTT publish and PUBACK, consumers' decoding) by the notifications that share a commit.

Time: a sample gets the gateway's UTC clock at reception, unless the device sent its own valid
timestamp (PLX spot-check, blood pressure, temperature; flagged ``device_clock``, see
:class:`~wardwatch.core.profiles.DeviceClock`). RR intervals are back-dated from reception
(the last beat at reception, each earlier beat one interval before). Within a device and signal the
gateway's timestamps are strictly increasing at ms resolution, so no two samples of a series share
a time (a time-series database would overwrite one with the other).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from wardwatch.core.errors import GattDecodeError
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.profiles import BATTERY, PROFILES, Access, DeviceClock, Measurement, ProfileCharacteristic
from wardwatch.core.quality import ordered
from wardwatch.core.schema import (
    VALID_RANGES,
    DeviceStatus,
    Quality,
    Sample,
    Series,
    Signal,
    Vitals,
    VitalsBatch,
    encode,
)
from wardwatch.core.topics import device_status_topic, vitals_batch_topic, vitals_topic
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.queue import DurableQueue, Reading

__all__ = ["MAX_BATCH_SAMPLES", "DeviceDecoder", "Recorder", "device_clock_zone"]

#: A device's held samples are queued as a batch at once when they reach this many (bounds the message).
MAX_BATCH_SAMPLES: Final = 1024

_log = logging.getLogger(__name__)
_malformed_log = RateLimitedLog(_log, 60.0)

Clock = Callable[[], float]


def device_clock_zone(name: str) -> tzinfo | None:
    """The zone device clocks are read in: ``None`` for the gateway's local zone."""
    if name == "local":
        return None
    if name == "UTC":
        return UTC
    return ZoneInfo(name)


class _Held:
    """One device's samples for one patient, held until the queue's next commit."""

    __slots__ = ("samples", "series", "t_first", "t_last")

    def __init__(self) -> None:
        self.series: dict[Signal, list[Sample]] = {}
        self.samples = 0
        self.t_first = 2**63
        self.t_last = -1


class Recorder:
    """Numbers, encodes and queues the messages of every device of one gateway.

    ``batch``: hold each device's samples until the queue commits and queue them as one
    :class:`~wardwatch.core.schema.VitalsBatch` (see the module docstring); otherwise one
    :class:`~wardwatch.core.schema.Vitals` per signal and notification, queued at once.
    """

    def __init__(self, queue: DurableQueue, *, gateway: str, ward: str, batch: bool = False) -> None:
        self.queue = queue
        self.gateway = gateway
        self.ward = ward
        self.batch = batch
        self._topics: dict[tuple[str, str, str], str] = {}
        self._held: dict[tuple[str, str], _Held] = {}  # (device, patient) -> samples awaiting the commit
        self._held_samples = 0
        if batch:
            queue.before_commit(self.queue_held)
        self.recorded = 0  # vitals messages (or batches) queued
        self.samples = 0  # samples queued in them
        self.statuses = 0  # device status messages queued
        # The patient a device was bound to at a time, from the kit in force (None: the config's bindings hold).
        self.patient_at: Callable[[str, int], str | None] | None = None
        self.unbound = 0  # samples and statuses not queued: no binding held at their time

    def vitals(self, binding: DeviceBinding, signal: Signal, samples: tuple[Sample, ...]) -> list[Vitals]:
        """Queue ``samples`` (at least one): one message per patient whose binding held at their times.

        Without :attr:`patient_at` (no kit yet: the config's devices) every sample is ``binding.patient``'s;
        with it, samples that no binding held are not queued (the device was released or not yet bound).
        With :attr:`batch` the samples are held for the device's next batch and nothing is returned.
        """
        if self.patient_at is None:
            if self.batch:
                self._hold(binding.id, binding.patient, signal, samples)
                return []
            return [self._vitals(binding, binding.patient, signal, samples)]
        groups: dict[str, list[Sample]] = {}
        for sample in samples:
            patient = self.patient_at(binding.id, sample.t)
            if patient is None:
                self.unbound += 1
                continue
            groups.setdefault(patient, []).append(sample)
        if self.batch:
            for patient, group in groups.items():
                self._hold(binding.id, patient, signal, group)
            return []
        return [self._vitals(binding, patient, signal, tuple(group)) for patient, group in groups.items()]

    def _hold(self, device: str, patient: str, signal: Signal, samples: Sequence[Sample]) -> None:
        key = (device, patient)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held()
        series = held.series.get(signal)
        if series is None:
            held.series[signal] = list(samples)
        else:
            series.extend(samples)
        held.samples += len(samples)
        for sample in samples:
            t = sample.t
            if t < held.t_first:
                held.t_first = t
            if t > held.t_last:
                held.t_last = t
        if held.samples >= MAX_BATCH_SAMPLES:
            del self._held[key]
            self._queue_batch(device, patient, held)
        self._held_samples += len(samples)
        if self._held_samples >= self.queue.commit_batch:
            self._held_samples = 0
            self.queue.request_commit()

    def queue_held(self) -> None:
        """Queue every device's held samples as one batch each (the queue calls this as it commits)."""
        held, self._held = self._held, {}
        self._held_samples = 0
        for (device, patient), samples in held.items():
            self._queue_batch(device, patient, samples)

    def _queue_batch(self, device: str, patient: str, held: _Held) -> None:
        key = (device, "", patient)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = vitals_batch_topic(self.ward, self.gateway, patient, device)
        next_seq = self.queue.next_seq
        message = VitalsBatch(
            patient=patient,
            device=device,
            gateway=self.gateway,
            series=tuple(
                Series(signal=signal, seq=next_seq(device), samples=tuple(samples))
                for signal, samples in held.series.items()
            ),
        )
        self.queue.put(Reading(topic, encode(message), held.t_first, held.t_last, patient, device))
        self.recorded += 1
        self.samples += held.samples

    def _vitals(self, binding: DeviceBinding, patient: str, signal: Signal, samples: tuple[Sample, ...]) -> Vitals:
        key = (binding.id, signal, patient)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = vitals_topic(self.ward, self.gateway, patient, binding.id, signal)
        message = Vitals(
            patient=patient,
            device=binding.id,
            gateway=self.gateway,
            signal=signal,
            seq=self.queue.next_seq(binding.id),
            samples=samples,
        )
        times = [s.t for s in samples]
        self.queue.put(Reading(topic, encode(message), min(times), max(times), patient, binding.id))
        self.recorded += 1
        self.samples += len(samples)
        return message

    def device_status(self, status: DeviceStatus) -> DeviceStatus | None:
        """Queue a device status (numbered in its own per-device sequence); None if no binding held then.

        Held samples are queued first, so a status never overtakes the samples received before it.
        """
        if self._held:
            self.queue_held()
        if self.patient_at is not None:
            patient = self.patient_at(status.device, status.t)
            if patient is None:
                self.unbound += 1
                return None
            status = msgspec.structs.replace(status, patient=patient)
        status = msgspec.structs.replace(status, seq=self.queue.next_seq(f"status:{status.device}"))
        topic = device_status_topic(self.ward, self.gateway, status.patient, status.device)
        self.queue.put(Reading(topic, encode(status), status.t, status.t, status.patient, status.device))
        self.statuses += 1
        return status


class _Series:
    """Strictly increasing ms timestamps for one signal of one device."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = -1

    def after(self, t: int) -> int:
        t = max(t, self.last + 1)
        self.last = t
        return t


class DeviceDecoder:
    """Decodes one device's notifications into queued vitals; malformed bytes are counted and skipped.

    Every characteristic of :data:`~wardwatch.core.profiles.PROFILES` is handled alike: decode with
    the profile's codec, turn the value into samples with the profile's function, place them in
    time with the shared :class:`~wardwatch.core.profiles.DeviceClock`, check them against the
    physically valid ranges, and queue one message per signal.
    """

    def __init__(
        self,
        binding: DeviceBinding,
        recorder: Recorder,
        *,
        clock: Clock = time.time,
        device_zone: tzinfo | None = None,
    ) -> None:
        self.binding = binding
        self.recorder = recorder
        self._clock = clock
        self.device_clock = DeviceClock(device_zone)
        self._series: dict[tuple[Signal, bool], _Series] = {}
        self.malformed = 0
        self.notifications = 0
        self.spot_checks = 0  # indicated measurements received (live or fetched from storage)
        self.battery: int | None = None
        self.last_seen_ms: int | None = None
        self.values: dict[int, object] = {}  # last value of each characteristic without samples (features...)

    def handle(self, uuid16: int, data: bytes | bytearray, received_ms: int | None = None) -> bool:
        """Decode and queue one notification; return False if it was malformed (and skipped)."""
        now = int(self._clock() * 1000) if received_ms is None else received_ms
        self.notifications += 1
        self.last_seen_ms = now
        characteristic = _HANDLED.get(uuid16)
        try:
            if characteristic is None:
                raise GattDecodeError(f"0x{uuid16:04X}", "no wearable profile has this characteristic", bytes(data))
            if characteristic.access is Access.INDICATE:
                self.spot_checks += 1
            value = characteristic.codec.decode(data)
            if characteristic is BATTERY:
                self.battery = value.percent
            elif characteristic.samples is None:
                self.values[uuid16] = value
            else:
                self._record(characteristic.samples(value), now, characteristic.codec.label, data)
        except GattDecodeError as exc:
            self.malformed += 1
            _malformed_log.warning(
                f"malformed:{self.binding.id}",
                "device %s: skipped malformed notification from 0x%04X (%d bytes): %s (%d malformed so far)",
                self.binding.id,
                uuid16,
                len(data),
                exc.problem,
                self.malformed,
            )
            return False
        return True

    def _stamp(self, signal: Signal, t: int, device_clock: bool = False) -> int:
        series = self._series.get((signal, device_clock))
        if series is None:
            series = self._series[(signal, device_clock)] = _Series()
        return series.after(t)

    def _record(self, m: Measurement, now: int, label: str, data: bytes | bytearray) -> None:
        for point in m.points:
            value = point.value
            if value is not None:
                low, high = VALID_RANGES[point.signal]
                if not (math.isfinite(value) and low <= value <= high):
                    raise GattDecodeError(label, f"{point.signal} {value} outside {low}..{high}", bytes(data))
        t, clock_flag = self.device_clock.resolve(m, now)
        device_clock = clock_flag is Quality.DEVICE_CLOCK
        by_signal: dict[Signal, list[Sample]] = {}
        for point in m.points:
            quality = point.quality if clock_flag is None else ordered((*point.quality, clock_flag))
            sample = Sample(
                self._stamp(point.signal, t - point.before_ms, device_clock), point.value, quality, point.absent
            )
            by_signal.setdefault(point.signal, []).append(sample)
        for signal, samples in by_signal.items():
            self.recorder.vitals(self.binding, signal, tuple(samples))


_HANDLED: Final[dict[int, ProfileCharacteristic[Any]]] = {
    **{c.uuid16: c for p in PROFILES for c in p.characteristics},
    BATTERY.uuid16: BATTERY,
}
