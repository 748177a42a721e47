"""Simulated spot-check wearables (blood-pressure cuff, thermometer), built from the core profile table.

A spot-check device sleeps between readings. :meth:`SpotCheckDevice.take_reading` is the patient
pressing the button: the measurement is stored with the device's own timestamp, the device wakes
and advertises; once a central subscribes to the measurement characteristic every stored
measurement is indicated, oldest first, and dropped only when the central confirmed it; then the
device says goodbye (disconnects) and sleeps. A reading taken while no gateway listens stays stored
(up to ``spec.storage_capacity``; the oldest is overwritten) until the next connection.

Faults: ``movement`` / ``cuff_loose`` set the Blood Pressure Measurement status bits; a spec with
``clock = "unset"`` stamps readings from :data:`~.scenario.DEVICE_EPOCH` (2000-01-01) on, as a
device whose clock was never set does; many stored readings are just many :meth:`take_reading` calls
while the gateway is away. The GATT database comes from :data:`wardwatch.core.profiles.PROFILES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from bumble.gatt import Characteristic, CharacteristicValue, Service

from wardwatch.core.errors import GattDecodeError
from wardwatch.core.gatt import MedFloat
from wardwatch.core.gatt.blood_pressure import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    BloodPressureStatus,
    PulseRateRange,
)
from wardwatch.core.gatt.current_time import CurrentTime
from wardwatch.core.gatt.thermometer import MeasurementInterval, TemperatureMeasurement, TemperatureType
from wardwatch.core.profiles import (
    BLOOD_PRESSURE_CUFF,
    CURRENT_TIME,
    CURRENT_TIME_SERVICE,
    THERMOMETER,
    Access,
)
from wardwatch.core.waiting import wait_for

from .devices import DISCONNECT_USER, SimulatedDevice, _uuid
from .model import DEVICE_EPOCH
from .radio import Radio
from .scenario import DeviceKind, DeviceSpec
from .spot_track import SpotReading

__all__ = ["BloodPressureCuff", "SpotCheckDevice", "Thermometer"]

_PROPS = Characteristic.Properties
LINGER_S: Final = 0.5  # after the last confirmed indication, before the device says goodbye


class SpotCheckDevice(SimulatedDevice):
    """A device that wakes for a reading, delivers everything it stored, and sleeps."""

    def __init__(self, spec: DeviceSpec, radio: Radio, *, advertising_interval_ms: float = 100.0) -> None:
        super().__init__(spec, radio, advertising_interval_ms=advertising_interval_ms)
        self.stored: deque[bytes] = deque(maxlen=max(1, spec.storage_capacity))
        self.delivered_total = 0
        self.overwritten_total = 0
        self._started = time.monotonic()
        self._clock_offset: dt.timedelta | None = None  # set by a central writing Current Time
        self.clock_writes = 0
        self._delivering: asyncio.Task[None] | None = None
        self._measurement = next(c.uuid16 for c in self.PROFILE.characteristics if c.access is Access.INDICATE)

    # --- what the patient does --------------------------------------------------------------------

    def device_time(self, now: dt.datetime | None = None) -> dt.datetime:
        """The device's clock: local wall time when set (by its spec or by a central writing Current
        Time), else counting from 2000-01-01 since power-on."""
        wall = now or dt.datetime.now()
        if self._clock_offset is not None:
            return (wall + self._clock_offset).replace(microsecond=0)
        if self.spec.clock == "set":
            return wall.replace(microsecond=0)
        return DEVICE_EPOCH + dt.timedelta(seconds=int(time.monotonic() - self._started))

    async def store(self, data: bytes) -> None:
        """Keep one encoded measurement for the next central, wake up and advertise."""
        if len(self.stored) == self.stored.maxlen:
            self.overwritten_total += 1
        self.stored.append(data)
        await self._update_advertising()
        if self.is_subscribed(self._measurement):
            self._deliver_soon()

    async def record(self, reading: SpotReading) -> None:
        """The patient takes a scenario reading now (:mod:`~wardwatch.firmware_sim.spot_track`): its values
        and status bits, stamped by this device's own clock."""
        measurement = reading.to_gatt(self.KIND, self.device_time())
        await self.store(self.PROFILE.by_uuid[self._measurement].codec.encode(measurement))

    async def wait_delivered(self, timeout: float = 20.0) -> None:
        """Return once every stored measurement was confirmed by a central."""
        await wait_for(lambda: not self.stored, timeout, what=f"{self.name} delivered its stored readings")

    # --- GATT -------------------------------------------------------------------------------------

    def _services(self) -> list[Service]:
        clock = self._characteristic(
            CURRENT_TIME.uuid16,
            _PROPS.READ | _PROPS.WRITE,
            CharacteristicValue(
                read=lambda _c: CURRENT_TIME.encode(CurrentTime(self.device_time())), write=self._on_time_write
            ),
        )
        return [*super()._services(), Service(_uuid(CURRENT_TIME_SERVICE), [clock])]

    def _on_time_write(self, _connection: Any, value: bytes) -> None:
        try:
            written = CURRENT_TIME.decode(bytes(value))
        except GattDecodeError:
            return
        self._clock_offset = written.timestamp - dt.datetime.now().replace(microsecond=0)
        self.clock_writes += 1

    def _awake(self) -> bool:
        return bool(self.stored)

    def _subscription_handler(self, uuid16: int) -> Callable[[Any, bool, bool], None]:
        record = super()._subscription_handler(uuid16)

        def handler(bearer: Any, notify: bool, indicate: bool) -> None:
            record(bearer, notify, indicate)
            if uuid16 == self._measurement and indicate:
                self._deliver_soon()

        return handler

    def _deliver_soon(self) -> None:
        if self._delivering is None or self._delivering.done():
            self._delivering = asyncio.get_running_loop().create_task(self._deliver())
            self._background.add(self._delivering)
            self._delivering.add_done_callback(self._background.discard)

    async def _deliver(self) -> None:
        while self.stored:
            if not await self._notify(self._measurement, self.stored[0], indicate=True):
                return  # not confirmed: keep it for the next connection
            self.stored.popleft()
            self.delivered_total += 1
        await asyncio.sleep(LINGER_S)
        if not self.stored:
            with contextlib.suppress(Exception):
                await self._drop(DISCONNECT_USER)  # goodbye: back to sleep
            await self._update_advertising()


class BloodPressureCuff(SpotCheckDevice):
    """An upper-arm cuff: Blood Pressure Measurement indications with status bits."""

    KIND = DeviceKind.BLOOD_PRESSURE_CUFF
    PROFILE = BLOOD_PRESSURE_CUFF
    MAIN_SERVICE = BLOOD_PRESSURE_CUFF.service
    NAME_PREFIX = "WW-BPC"
    FEATURES: Final = (
        BloodPressureFeature.body_movement_detection
        | BloodPressureFeature.cuff_fit_detection
        | BloodPressureFeature.irregular_pulse_detection
    )

    def _read_values(self) -> dict[int, bytes]:
        return {0x2A49: self.PROFILE.by_uuid[0x2A49].codec.encode(self.FEATURES)}

    async def take_reading(
        self,
        systolic: float,
        diastolic: float,
        pulse_rate: float | None = None,
        *,
        movement: bool = False,
        cuff_loose: bool = False,
        irregular_pulse: bool = False,
        at: dt.datetime | None = None,
    ) -> BloodPressureMeasurement:
        """The patient takes a reading (mmHg); ``at`` is the wall time it is taken (default: now)."""
        status = BloodPressureStatus(0)
        if movement:
            status |= BloodPressureStatus.body_movement
        if cuff_loose:
            status |= BloodPressureStatus.cuff_too_loose
        if irregular_pulse:
            status |= BloodPressureStatus.irregular_pulse
        mean = diastolic + (systolic - diastolic) / 3
        m = BloodPressureMeasurement(
            MedFloat.from_float(systolic, 0),
            MedFloat.from_float(diastolic, 0),
            MedFloat.from_float(mean, 0),
            timestamp=self.device_time(at),
            pulse_rate=None if pulse_rate is None else MedFloat.from_float(pulse_rate, 0),
            status=status,
            pulse_rate_range=PulseRateRange.within_range,
        )
        await self.store(self.PROFILE.by_uuid[0x2A35].codec.encode(m))
        return m


class Thermometer(SpotCheckDevice):
    """A clinical thermometer: Temperature Measurement indications in °C with the body site."""

    KIND = DeviceKind.THERMOMETER
    PROFILE = THERMOMETER
    MAIN_SERVICE = THERMOMETER.service
    NAME_PREFIX = "WW-THM"

    def _read_values(self) -> dict[int, bytes]:
        codecs = self.PROFILE.by_uuid
        return {
            0x2A1D: codecs[0x2A1D].codec.encode(TemperatureType.armpit),
            0x2A21: codecs[0x2A21].codec.encode(MeasurementInterval(0)),
        }

    async def take_reading(self, celsius: float, *, at: dt.datetime | None = None) -> TemperatureMeasurement:
        """The patient takes a temperature; ``at`` is the wall time it is taken (default: now)."""
        m = TemperatureMeasurement(
            MedFloat.from_float(celsius, 1), timestamp=self.device_time(at), temperature_type=TemperatureType.armpit
        )
        await self.store(self.PROFILE.by_uuid[0x2A1C].codec.encode(m))
        return m
