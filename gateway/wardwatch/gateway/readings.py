"""From notification bytes to queued wire messages: decode, time-stamp, number, encode, queue.

:class:`DeviceDecoder` turns the bytes of one device's notifications (0x2A37, 0x2A5F, 0x2A5E,
0x2A19) into :class:`~wardwatch.core.schema.Vitals` samples; :class:`Recorder` numbers them
(per-device sequence numbers, allocated by the durable queue) and queues their JSON.

Time: a sample gets the gateway's UTC clock at reception, unless the device sent its own valid
timestamp (PLX spot-check, flagged ``device_clock``). RR intervals are back-dated from reception
(the last beat at reception, each earlier beat one interval before). Within a device and signal the
gateway's timestamps are strictly increasing at ms resolution, so no two samples of a series share
a time (a time-series database would overwrite one with the other).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from wardwatch.core import gatt
from wardwatch.core.errors import GattDecodeError
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.quality import ordered, plx_quality
from wardwatch.core.schema import (
    VALID_RANGES,
    AbsentReason,
    DeviceStatus,
    Quality,
    Sample,
    Signal,
    Vitals,
    encode,
)
from wardwatch.core.topics import device_status_topic, vitals_topic
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.queue import DurableQueue, Reading

__all__ = ["DeviceDecoder", "Recorder", "device_clock_zone"]

_log = logging.getLogger(__name__)
_malformed_log = RateLimitedLog(_log, 60.0)

Clock = Callable[[], float]

_ABSENT: Final = {reason.value: AbsentReason(reason.value) for reason in gatt.AbsentReason}

# A device clock outside this window is not believed (unset clocks often start in 2000 or 1970).
_EARLIEST_DEVICE_TIME_MS: Final = 1_577_836_800_000  # 2020-01-01
# Nor one ahead of the gateway's by more than this: a reading cannot be taken after it arrived. A clock
# minutes or hours fast (drift, a wrong zone, the simulator's compressed time) would stamp a spot-check
# in the future, and downstream every later continuous reading of that device and signal would look
# older than it (the alarm engine drops those as late: SpO2 unmonitored until the clock catches up).
_DEVICE_CLOCK_FUTURE_SLACK_MS: Final = 2_000


def device_clock_zone(name: str) -> tzinfo | None:
    """The zone device clocks are read in: ``None`` for the gateway's local zone."""
    if name == "local":
        return None
    if name == "UTC":
        return UTC
    return ZoneInfo(name)


class Recorder:
    """Numbers, encodes and queues the messages of every device of one gateway."""

    def __init__(self, queue: DurableQueue, *, gateway: str, ward: str) -> None:
        self.queue = queue
        self.gateway = gateway
        self.ward = ward
        self._topics: dict[tuple[str, str, str], str] = {}
        self.recorded = 0  # vitals messages queued
        self.statuses = 0  # device status messages queued
        # The patient a device was bound to at a time, from the kit in force (None: the config's bindings hold).
        self.patient_at: Callable[[str, int], str | None] | None = None
        self.unbound = 0  # samples and statuses not queued: no binding held at their time

    def vitals(self, binding: DeviceBinding, signal: Signal, samples: tuple[Sample, ...]) -> list[Vitals]:
        """Queue ``samples`` (at least one): one message per patient whose binding held at their times.

        Without :attr:`patient_at` (no kit yet: the config's devices) every sample is ``binding.patient``'s;
        with it, samples that no binding held are not queued (the device was released or not yet bound).
        """
        if self.patient_at is None:
            return [self._vitals(binding, binding.patient, signal, samples)]
        groups: dict[str, list[Sample]] = {}
        for sample in samples:
            patient = self.patient_at(binding.id, sample.t)
            if patient is None:
                self.unbound += 1
                continue
            groups.setdefault(patient, []).append(sample)
        return [self._vitals(binding, patient, signal, tuple(group)) for patient, group in groups.items()]

    def _vitals(self, binding: DeviceBinding, patient: str, signal: Signal, samples: tuple[Sample, ...]) -> Vitals:
        key = (binding.id, signal, patient)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = vitals_topic(self.ward, self.gateway, patient, binding.id, signal)
        message = Vitals(
            v=1,
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
        return message

    def device_status(self, status: DeviceStatus) -> DeviceStatus | None:
        """Queue a device status (numbered in its own per-device sequence); None if no binding held then."""
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
    """Decodes one device's notifications into queued vitals; malformed bytes are counted and skipped."""

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
        self._zone = device_zone
        self._series: dict[tuple[Signal, bool], _Series] = {}
        self.malformed = 0
        self.notifications = 0
        self.spot_checks = 0  # 0x2A5E values received (live or fetched from storage)
        self.battery: int | None = None
        self.last_seen_ms: int | None = None
        self._handlers: dict[int, Callable[[bytes | bytearray, int], None]] = {
            gatt.HEART_RATE_MEASUREMENT: self._heart_rate,
            gatt.PLX_CONTINUOUS_MEASUREMENT: self._plx_continuous,
            gatt.PLX_SPOT_CHECK_MEASUREMENT: self._plx_spot_check,
            gatt.BATTERY_LEVEL: self._battery,
        }

    def handle(self, uuid16: int, data: bytes | bytearray, received_ms: int | None = None) -> bool:
        """Decode and queue one notification; return False if it was malformed (and skipped)."""
        now = int(self._clock() * 1000) if received_ms is None else received_ms
        self.notifications += 1
        if uuid16 == gatt.PLX_SPOT_CHECK_MEASUREMENT:
            self.spot_checks += 1
        self.last_seen_ms = now
        try:
            self._handlers[uuid16](data, now)
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

    @staticmethod
    def _check(signal: Signal, value: float | None, characteristic: str, data: bytes | bytearray) -> None:
        if value is None:
            return
        low, high = VALID_RANGES[signal]
        if not (math.isfinite(value) and low <= value <= high):
            raise GattDecodeError(characteristic, f"{signal} {value} outside {low}..{high}", bytes(data))

    def _heart_rate(self, data: bytes | bytearray, now: int) -> None:
        m = gatt.decode_heart_rate_measurement(data)
        label = "Heart Rate Measurement (0x2A37)"
        self._check(Signal.HEART_RATE, m.heart_rate, label, data)
        t_hr = self._stamp(Signal.HEART_RATE, now)
        if m.sensor_contact is False:
            # No skin contact: whatever number the strap sends (often 0) is no heart rate.
            quality: tuple[Quality, ...] = (Quality.CONTACT_LOST,)
            hr = Sample(t_hr, None, quality, AbsentReason.UNAVAILABLE)
        else:
            quality = ()
            hr = Sample(t_hr, float(m.heart_rate), quality)
        records: list[tuple[Signal, tuple[Sample, ...]]] = [(Signal.HEART_RATE, (hr,))]
        if m.energy_expended is not None:
            t = self._stamp(Signal.ENERGY_EXPENDED, now)
            records.append((Signal.ENERGY_EXPENDED, (Sample(t, float(m.energy_expended)),)))
        if m.rr_ticks:
            # Beat times back-dated from reception: the last beat now, each earlier one an interval before.
            beat = now
            times = []
            for ticks in reversed(m.rr_ticks):
                times.append(beat)
                beat -= round(ticks * 1000 / 1024)
            times.reverse()
            series = Signal.RR_INTERVAL
            samples = tuple(
                Sample(self._stamp(series, t), ticks / 1024, quality)
                for t, ticks in zip(times, m.rr_ticks, strict=True)
            )
            records.append((series, samples))
        for signal, samples in records:
            self.recorder.vitals(self.binding, signal, samples)

    def _plx_samples(
        self,
        t: int,
        spo2: gatt.MedFloat,
        pulse_rate: gatt.MedFloat,
        pai: gatt.MedFloat | None,
        quality: tuple[Quality, ...],
        label: str,
        data: bytes | bytearray,
        device_clock: bool,
    ) -> None:
        pairs = [(Signal.SPO2, spo2), (Signal.PULSE_RATE, pulse_rate)]
        if pai is not None:
            pairs.append((Signal.PERFUSION_INDEX, pai))
        records = []
        for signal, value in pairs:
            self._check(signal, value.value, label, data)
        for signal, value in pairs:
            absent = None if value.absent_reason is None else _ABSENT[value.absent_reason.value]
            sample = Sample(self._stamp(signal, t, device_clock), value.value, quality, absent)
            records.append((signal, sample))
        for signal, sample in records:
            self.recorder.vitals(self.binding, signal, (sample,))

    def _plx_continuous(self, data: bytes | bytearray, now: int) -> None:
        m = gatt.decode_plx_continuous_measurement(data)
        quality = plx_quality(m.measurement_status, m.device_sensor_status)
        self._plx_samples(
            now, m.spo2, m.pulse_rate, m.pulse_amplitude_index, quality, "PLX Continuous (0x2A5F)", data, False
        )

    def _plx_spot_check(self, data: bytes | bytearray, now: int) -> None:
        m = gatt.decode_plx_spot_check_measurement(data)
        quality = list(plx_quality(m.measurement_status, m.device_sensor_status))
        t = now
        device_clock = False
        if m.timestamp is not None and not m.device_clock_not_set:
            local = m.timestamp.replace(tzinfo=self._zone) if self._zone is not None else m.timestamp.astimezone()
            device_ms = int(local.timestamp() * 1000)
            if _EARLIEST_DEVICE_TIME_MS <= device_ms <= now + _DEVICE_CLOCK_FUTURE_SLACK_MS:
                t = device_ms
                device_clock = True
                quality.append(Quality.DEVICE_CLOCK)
            else:
                quality.append(Quality.DEVICE_CLOCK_UNSET)
        elif m.device_clock_not_set:
            quality.append(Quality.DEVICE_CLOCK_UNSET)
        flags = ordered(quality)
        self._plx_samples(
            t, m.spo2, m.pulse_rate, m.pulse_amplitude_index, flags, "PLX Spot-Check (0x2A5E)", data, device_clock
        )

    def _battery(self, data: bytes | bytearray, now: int) -> None:
        self.battery = gatt.decode_battery_level(data).percent


def utc_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(moment.timestamp() * 1000)
