"""Simulated BLE wearables: bumble GATT peripherals that send what the model yields.

:class:`HeartRateStrap` (Heart Rate 0x180D, Battery 0x180F, Device Information 0x180A) and
:class:`PulseOximeter` (Pulse Oximeter 0x1822 with continuous notifications, spot-check
indications, features and a Record Access Control Point for stored spot-checks; Battery; Device
Information). The main service's characteristics come from the core profile table
(:mod:`wardwatch.core.profiles`); every value is packed by the encoders of :mod:`wardwatch.core.gatt`.

Faults are methods: :meth:`SimulatedDevice.go_out_of_range` / :meth:`~SimulatedDevice.come_back`,
:meth:`~SimulatedDevice.set_busy` (held by another central: the link drops and new connections are
refused), :meth:`~SimulatedDevice.power_off` (battery empty), :meth:`~SimulatedDevice.send_raw`
(malformed bytes). Devices are async context managers: power on and advertise on entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Final, Self

from bumble import hci
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service

from wardwatch.core import gatt as codec
from wardwatch.core.errors import GattDecodeError
from wardwatch.core.gatt import (
    BodySensorLocation,
    DeviceSensorStatus,
    MeasurementStatus,
    PlxFeatureFlags,
    PlxFeatures,
    RacpNumberOfRecords,
    RacpOpcode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
)
from wardwatch.core.profiles import HEART_RATE_STRAP, PULSE_OXIMETER, Access, Profile
from wardwatch.core.waiting import wait_for

from .errors import SimError
from .model import HeartRateReading, OximeterReading, SpotCheck
from .radio import Radio, static_random_address
from .scenario import DeviceKind, DeviceSpec

__all__ = [
    "DISCONNECT_BUSY",
    "DISCONNECT_OUT_OF_RANGE",
    "DISCONNECT_POWER_OFF",
    "HeartRateStrap",
    "PulseOximeter",
    "SimulatedDevice",
    "device_name",
    "make_device",
]

_log = logging.getLogger(__name__)

DISCONNECT_OUT_OF_RANGE: Final = hci.HCI_CONNECTION_TIMEOUT_ERROR  # 0x08: supervision timeout
DISCONNECT_BUSY: Final = hci.HCI_REMOTE_DEVICE_TERMINATED_CONNECTION_DUE_TO_LOW_RESOURCES_ERROR  # 0x14
DISCONNECT_USER: Final = hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR  # 0x13
DISCONNECT_POWER_OFF: Final = hci.HCI_REMOTE_DEVICE_TERMINATED_CONNECTION_DUE_TO_POWER_OFF_ERROR  # 0x15
_INDICATION_TIMEOUT_S: Final = 5.0
_PROPS = Characteristic.Properties
_ACCESS_PROPS: Final = {Access.NOTIFY: _PROPS.NOTIFY, Access.INDICATE: _PROPS.INDICATE, Access.READ_ONCE: _PROPS.READ}


def _uuid(uuid16: int) -> UUID:
    return UUID.from_16_bits(uuid16)


def _advertising_data(name: str, services: tuple[int, ...]) -> bytes:
    uuids = b"".join(uuid16.to_bytes(2, "little") for uuid16 in services)
    room = 31 - 3 - (2 + len(uuids)) - 2
    encoded = name.encode()
    name_type = AdvertisingData.COMPLETE_LOCAL_NAME if len(encoded) <= room else AdvertisingData.SHORTENED_LOCAL_NAME
    return bytes(
        AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),  # LE general discoverable, BR/EDR not supported
                (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, uuids),
                (name_type, encoded[:room]),
            ]
        )
    )


class SimulatedDevice:
    """A BLE peripheral with battery and device-information services and the faults real ones have."""

    KIND: ClassVar[DeviceKind]
    PROFILE: ClassVar[Profile]  # the core profile table's entry: service and characteristics
    MAIN_SERVICE: ClassVar[int]
    NAME_PREFIX: ClassVar[str]

    def __init__(self, spec: DeviceSpec, radio: Radio, *, advertising_interval_ms: float = 100.0) -> None:
        self.spec = spec
        self.name = device_name(spec)
        self.address = spec.address or static_random_address(spec.id)
        self._radio = radio
        self._interval = advertising_interval_ms
        self._battery = max(0, min(100, round(spec.battery)))
        self._device: Device | None = None
        self._connection: Connection | None = None
        self._powered = False
        self._in_range = True
        self._busy = False
        self._subscriptions: dict[int, bool] = {}  # characteristic uuid16 -> subscribed
        self._characteristics: dict[int, Characteristic[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.connections_total = 0
        self.refused_total = 0
        self.notifications_total = 0

    # --- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.power_on()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.power_off(reason=DISCONNECT_USER)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._device is not None:
            self._radio.release(self._device)
            self._device = None

    async def power_on(self) -> None:
        """Switch on: build the GATT database (first time), power the controller, advertise."""
        if self._powered:
            return
        if self._device is None:
            device = self._radio.make_device(self.name, self.address)
            device.add_services(self._services())
            device.on(device.EVENT_CONNECTION, self._on_connection)
            self._device = device
        await self._device.power_on()
        self._powered = True
        await self._update_advertising()

    async def power_off(self, reason: int = DISCONNECT_POWER_OFF) -> None:
        """Switch off (battery empty): drop the link, stop advertising."""
        if not self._powered:
            return
        self._powered = False
        await self._drop(reason)
        await self._update_advertising()

    # --- state ------------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether a central holds the link."""
        return self._connection is not None

    @property
    def is_advertising(self) -> bool:
        """Whether the device is discoverable and connectable now."""
        return self._powered and self._in_range

    @property
    def battery(self) -> int:
        """Battery level in percent."""
        return self._battery

    def is_subscribed(self, uuid16: int) -> bool:
        """Whether the connected central enabled notifications/indications on ``uuid16``."""
        return self.is_connected and self._subscriptions.get(uuid16, False)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Return once a central is connected."""
        await wait_for(lambda: self.is_connected, timeout, what=f"{self.name} connected")

    async def wait_subscribed(self, uuid16: int, timeout: float = 10.0) -> None:
        """Return once the central subscribed to ``uuid16``."""
        await wait_for(lambda: self.is_subscribed(uuid16), timeout, what=f"{self.name} subscribed to {uuid16:#06x}")

    # --- faults -----------------------------------------------------------------------------------

    async def go_out_of_range(self) -> None:
        """The wearer walked away: the link drops (supervision timeout) and nothing is heard."""
        self._in_range = False
        await self._drop(DISCONNECT_OUT_OF_RANGE)
        await self._update_advertising()

    async def come_back(self) -> None:
        """Back in range: advertise again."""
        self._in_range = True
        await self._update_advertising()

    async def set_busy(self, busy: bool) -> None:
        """Held by another central: drop the gateway's link and refuse new connections (0x14)."""
        self._busy = busy
        if busy:
            await self._drop(DISCONNECT_USER)
        await self._update_advertising()

    async def set_battery(self, percent: int) -> None:
        """Change the battery level and notify it."""
        percent = max(0, min(100, int(percent)))
        if percent == self._battery:
            return
        self._battery = percent
        await self._notify(codec.BATTERY_LEVEL, codec.encode_battery_level(percent))

    async def send_raw(self, uuid16: int, data: bytes, *, indicate: bool = False) -> None:
        """Send arbitrary (e.g. malformed) bytes as a notification/indication of ``uuid16``."""
        await self._notify(uuid16, data, indicate=indicate)

    # --- GATT -------------------------------------------------------------------------------------

    def _services(self) -> list[Service]:
        battery = self._characteristic(
            codec.BATTERY_LEVEL,
            _PROPS.READ | _PROPS.NOTIFY,
            CharacteristicValue(read=lambda _c: codec.encode_battery_level(self._battery)),
        )
        spec = self.spec
        info = [
            (codec.MANUFACTURER_NAME_STRING, spec.manufacturer),
            (codec.MODEL_NUMBER_STRING, spec.model or f"{self.NAME_PREFIX}-sim"),
            (codec.SERIAL_NUMBER_STRING, spec.serial or spec.id),
            (codec.FIRMWARE_REVISION_STRING, spec.firmware),
        ]
        dis = [self._characteristic(u, _PROPS.READ, codec.encode_device_information_string(v)) for u, v in info]
        return [
            Service(_uuid(self.MAIN_SERVICE), self._main_characteristics()),
            Service(_uuid(codec.BATTERY_SERVICE), [battery]),
            Service(_uuid(codec.DEVICE_INFORMATION_SERVICE), dis),
        ]

    def _main_characteristics(self) -> list[Characteristic[Any]]:
        """The profile's characteristics (from the core table), then any of this device's own."""
        values = self._read_values()
        declared = [
            self._characteristic(c.uuid16, _ACCESS_PROPS[c.access], values.get(c.uuid16, b""))
            for c in self.PROFILE.characteristics
        ]
        return declared + self._extra_characteristics()

    def _read_values(self) -> dict[int, bytes]:
        """Values of the profile's read-once characteristics, by UUID."""
        return {}

    def _extra_characteristics(self) -> list[Characteristic[Any]]:
        """Characteristics beyond the profile's (e.g. the oximeter's RACP)."""
        return []

    def _characteristic(self, uuid16: int, properties: Characteristic.Properties, value: Any) -> Characteristic[Any]:
        char: Characteristic[Any] = Characteristic(
            _uuid(uuid16),
            properties,
            Characteristic.READABLE | Characteristic.WRITEABLE
            if properties & _PROPS.WRITE
            else Characteristic.READABLE,
            value,
        )
        if properties & (_PROPS.NOTIFY | _PROPS.INDICATE):
            char.on(char.EVENT_SUBSCRIPTION, self._subscription_handler(uuid16))
        self._characteristics[uuid16] = char
        return char

    def _subscription_handler(self, uuid16: int) -> Callable[[Any, bool, bool], None]:
        def handler(_bearer: Any, notify: bool, indicate: bool) -> None:
            self._subscriptions[uuid16] = notify or indicate

        return handler

    async def _notify(self, uuid16: int, data: bytes, *, indicate: bool = False) -> bool:
        """Send to the subscribed central; False when nobody is listening or the link dropped meanwhile."""
        device = self._device
        if device is None or not self.is_subscribed(uuid16):
            return False
        char = self._characteristics[uuid16]
        try:
            if indicate:
                async with asyncio.timeout(_INDICATION_TIMEOUT_S):
                    await device.indicate_subscribers(char, data)
            else:
                await device.notify_subscribers(char, data)
        except (TimeoutError, OSError, Exception) as exc:  # the link may drop while sending
            _log.debug(
                "%s: %s of %#06x not delivered: %r",
                self.name,
                "indication" if indicate else "notification",
                uuid16,
                exc,
            )
            return False
        self.notifications_total += 1
        return True

    # --- links ------------------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        if self._busy or self._connection is not None or not self._powered or not self._in_range:
            self.refused_total += 1
            self._spawn(self._refuse(connection))
            return
        self.connections_total += 1
        self._connection = connection
        self._subscriptions.clear()
        connection.on(connection.EVENT_DISCONNECTION, lambda _reason: self._on_disconnection(connection))

    async def _refuse(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            await connection.disconnect(DISCONNECT_BUSY)
        await self._update_advertising()

    def _on_disconnection(self, connection: Connection) -> None:
        if self._connection is connection:
            self._connection = None
            self._subscriptions.clear()
        self._spawn(self._update_advertising())

    async def _drop(self, reason: int) -> None:
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        self._subscriptions.clear()
        with contextlib.suppress(Exception):
            await connection.disconnect(reason)

    async def _update_advertising(self) -> None:
        device = self._device
        if device is None:
            return
        want = self._powered and self._in_range and self._connection is None and self._awake()
        try:
            if want:
                await device.start_advertising(
                    advertising_data=_advertising_data(self.name, (self.MAIN_SERVICE,)),
                    scan_response_data=b"",
                    advertising_interval_min=self._interval,
                    advertising_interval_max=self._interval,
                )
            elif device.is_advertising:
                await device.stop_advertising()
        except Exception as exc:  # a controller mid-reset; the next state change retries
            _log.debug("%s: advertising update failed: %r", self.name, exc)

    def _awake(self) -> bool:
        """Whether the device wants to be found (spot-check devices sleep between readings)."""
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class HeartRateStrap(SimulatedDevice):
    """A chest strap: Heart Rate Measurement notifications with RR intervals and sensor contact."""

    KIND = DeviceKind.HEART_RATE_STRAP
    PROFILE = HEART_RATE_STRAP
    MAIN_SERVICE = HEART_RATE_STRAP.service
    NAME_PREFIX = "WW-HRS"

    def _read_values(self) -> dict[int, bytes]:
        return {codec.BODY_SENSOR_LOCATION: codec.encode_body_sensor_location(BodySensorLocation.chest)}

    async def send(self, reading: HeartRateReading) -> bool:
        """Notify one reading (battery first if it changed); False if nobody received it."""
        await self.set_battery(reading.battery)
        return await self._notify(codec.HEART_RATE_MEASUREMENT, codec.encode_heart_rate_measurement(reading.to_gatt()))


PLX_FEATURES: Final = PlxFeatures(
    PlxFeatureFlags.measurement_status_support
    | PlxFeatureFlags.device_and_sensor_status_support
    | PlxFeatureFlags.measurement_storage_for_spot_check
    | PlxFeatureFlags.timestamp_for_spot_check
    | PlxFeatureFlags.pulse_amplitude_index,
    MeasurementStatus(0xFFE0),
    DeviceSensorStatus(0xFFFF),
)


class PulseOximeter(SimulatedDevice):
    """A pulse oximeter: continuous notifications, spot-check indications, RACP for stored records."""

    KIND = DeviceKind.PULSE_OXIMETER
    PROFILE = PULSE_OXIMETER
    MAIN_SERVICE = PULSE_OXIMETER.service
    NAME_PREFIX = "WW-PLX"

    def __init__(self, spec: DeviceSpec, radio: Radio, *, advertising_interval_ms: float = 100.0) -> None:
        super().__init__(spec, radio, advertising_interval_ms=advertising_interval_ms)
        self.stored: list[SpotCheck] = []
        self._racp_busy = False

    def _read_values(self) -> dict[int, bytes]:
        return {codec.PLX_FEATURES: codec.encode_plx_features(PLX_FEATURES)}

    def _extra_characteristics(self) -> list[Characteristic[Any]]:
        racp = self._characteristic(
            codec.RECORD_ACCESS_CONTROL_POINT,
            _PROPS.WRITE | _PROPS.INDICATE,
            CharacteristicValue(write=self._on_racp_write),
        )
        return [racp]

    async def send(self, reading: OximeterReading) -> bool:
        """Notify one continuous reading (battery first if it changed)."""
        await self.set_battery(reading.battery)
        return await self._notify(
            codec.PLX_CONTINUOUS_MEASUREMENT, codec.encode_plx_continuous_measurement(reading.to_gatt())
        )

    async def spot_check(self, record: SpotCheck) -> bool:
        """Indicate a spot-check; store it when no central receives it (retrievable through RACP)."""
        delivered = await self._notify(
            codec.PLX_SPOT_CHECK_MEASUREMENT, codec.encode_plx_spot_check_measurement(record.to_gatt()), indicate=True
        )
        if not delivered and len(self.stored) < self.spec.storage_capacity:
            self.stored.append(record)
        return delivered

    def _on_racp_write(self, _connection: Any, value: bytes) -> None:
        self._spawn(self._racp(bytes(value)))

    async def _racp_reply(self, message: RacpNumberOfRecords | RacpResponse) -> None:
        await self._notify(codec.RECORD_ACCESS_CONTROL_POINT, codec.encode_racp(message), indicate=True)

    async def _racp(self, data: bytes) -> None:
        try:
            request = codec.decode_racp(data)
        except GattDecodeError:
            op = data[0] if data else 0
            await self._racp_reply(RacpResponse(op, RacpResponseCode.op_code_not_supported))
            return
        if not isinstance(request, RacpRequest):
            await self._racp_reply(RacpResponse(data[0], RacpResponseCode.op_code_not_supported))
            return
        op = request.opcode
        if op == RacpOpcode.abort_operation:
            self._racp_busy = False
            await self._racp_reply(RacpResponse(op, RacpResponseCode.success))
            return
        if request.operator not in {RacpOperator.all_records, RacpOperator.first_record, RacpOperator.last_record}:
            await self._racp_reply(RacpResponse(op, RacpResponseCode.operator_not_supported))
            return
        selected = self.stored
        if request.operator == RacpOperator.first_record:
            selected = self.stored[:1]
        elif request.operator == RacpOperator.last_record:
            selected = self.stored[-1:]
        if op == RacpOpcode.report_number_of_stored_records:
            await self._racp_reply(RacpNumberOfRecords(len(selected)))
        elif op == RacpOpcode.delete_stored_records:
            doomed = {id(r) for r in selected}
            self.stored = [r for r in self.stored if id(r) not in doomed]
            await self._racp_reply(RacpResponse(op, RacpResponseCode.success))
        elif op == RacpOpcode.report_stored_records:
            if not selected:
                await self._racp_reply(RacpResponse(op, RacpResponseCode.no_records_found))
                return
            self._racp_busy = True
            for record in list(selected):
                if not self._racp_busy:
                    return
                value = record.to_gatt()
                stored_value = type(value)(
                    value.spo2,
                    value.pulse_rate,
                    value.timestamp,
                    MeasurementStatus.validated_data | MeasurementStatus.data_from_measurement_storage,
                    value.device_sensor_status,
                    value.pulse_amplitude_index,
                    value.device_clock_not_set,
                )
                encoded = codec.encode_plx_spot_check_measurement(stored_value)
                if not await self._notify(codec.PLX_SPOT_CHECK_MEASUREMENT, encoded, indicate=True):
                    await self._racp_reply(RacpResponse(op, RacpResponseCode.procedure_not_completed))
                    return
            self._racp_busy = False
            await self._racp_reply(RacpResponse(op, RacpResponseCode.success))


_NAME_PREFIXES: Final = {
    DeviceKind.HEART_RATE_STRAP: "WW-HRS",
    DeviceKind.PULSE_OXIMETER: "WW-PLX",
    DeviceKind.BLOOD_PRESSURE_CUFF: "WW-BPC",
    DeviceKind.THERMOMETER: "WW-THM",
}


def device_name(spec: DeviceSpec) -> str:
    """The name a device advertises (what a gateway binds when addresses rotate)."""
    return spec.name or f"{_NAME_PREFIXES[spec.kind]}-{spec.id}"[:20]


def make_device(spec: DeviceSpec, radio: Radio, *, advertising_interval_ms: float = 100.0) -> SimulatedDevice:
    """The device class for ``spec.kind``."""
    if spec.kind == DeviceKind.HEART_RATE_STRAP:
        return HeartRateStrap(spec, radio, advertising_interval_ms=advertising_interval_ms)
    if spec.kind == DeviceKind.PULSE_OXIMETER:
        return PulseOximeter(spec, radio, advertising_interval_ms=advertising_interval_ms)
    from .spot_check import BloodPressureCuff, Thermometer  # they build on this module

    if spec.kind == DeviceKind.BLOOD_PRESSURE_CUFF:
        return BloodPressureCuff(spec, radio, advertising_interval_ms=advertising_interval_ms)
    if spec.kind == DeviceKind.THERMOMETER:
        return Thermometer(spec, radio, advertising_interval_ms=advertising_interval_ms)
    raise SimError(f"unknown device kind {spec.kind!r}")
