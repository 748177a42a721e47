"""Bluetooth LE with bleak: a radio coordinator and one session per bound device.

Written against the plain bleak API so that the same code runs on BlueZ (a Raspberry Pi) and on
any other bleak backend (the simulator's, in tests). BlueZ is touchy, so:

* :class:`Radio` serialises scans and connects with one lock (two at once raise
  ``org.bluez.Error.InProgress``), caps connections at the adapter's slots (a semaphore; sessions
  blocked on it are listed in ``Radio.waiting`` for the gateway status and metrics), and counts
  scans that hear nothing at all: after ``scan_stall_scans`` in a row it runs the adapter recovery
  (BlueZ: power-cycle the adapter over D-Bus), the watchdog that spares a reboot.
* :class:`DeviceSession` connects with a timeout, reads Device Information and battery, sets the
  device's clock (Current Time, when offered), reads the read-once and subscribes to the measurement
  characteristics of the core profile table (:mod:`wardwatch.core.profiles`) and battery, backfills
  stored records (RACP) after a reconnect, and reconnects forever with exponential backoff. A
  spot-check device (cuff, thermometer) is let go once it falls quiet and looked for again at the
  minimum backoff. Every BLE operation is bounded by a
  timeout; any failure mid-setup (the link dropping during service discovery or ``start_notify``)
  ends that attempt and the next one starts from scratch. A connected device that stays silent for
  ``stale_after_s`` is disconnected and reconnected (the per-link watchdog).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from wardwatch.core import gatt
from wardwatch.core.errors import GattDecodeError
from wardwatch.core.profiles import BATTERY, CURRENT_TIME, PROFILES, Access, Profile, profile_for_role
from wardwatch.core.schema import DeviceLink, DeviceStatus
from wardwatch.gateway.config import BleSettings, DeviceBinding
from wardwatch.gateway.readings import DeviceDecoder, Recorder

__all__ = ["SESSION_END_REASONS", "DeviceSession", "Radio", "Sighting", "bluez_power_cycle", "uuid16_of"]

_log = logging.getLogger(__name__)

#: Services a wardwatch wearable advertises (scans are filtered on them): one per profile.
WEARABLE_SERVICES: Final = tuple(gatt.sig_uuid(p.service) for p in PROFILES)
#: A spot-check device (cuff, thermometer) quiet this long after its last measurement is let go.
SPOT_CHECK_IDLE_S: Final = 3.0
_DEVICE_INFORMATION: Final = {
    "manufacturer": gatt.MANUFACTURER_NAME_STRING,
    "model": gatt.MODEL_NUMBER_STRING,
    "serial": gatt.SERIAL_NUMBER_STRING,
    "firmware": gatt.FIRMWARE_REVISION_STRING,
}
#: Failures that end one connection attempt (the session then backs off and tries again).
LINK_ERRORS: Final = (BleakError, TimeoutError, EOFError, BrokenPipeError, OSError, GattDecodeError)
STABLE_SESSION_S: Final = 60.0  # a session that lasted this long resets the backoff
#: Why an attempt or a session ends (the part of :attr:`DeviceSession.last_reason` before any ``:``).
SESSION_END_REASONS: Final = (
    "not_found",
    "connect_failed",
    "setup_failed",
    "link_lost_during_setup",
    "link_lost",
    "stale",
    "released",
    "stopped",
)


def uuid16_of(uuid: str) -> int | None:
    """The 16-bit SIG value of a 128-bit UUID string, or None for a vendor UUID."""
    try:
        return gatt.parse_uuid16(uuid)
    except GattDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Sighting:
    """A device heard advertising."""

    device: BLEDevice
    name: str | None
    rssi: int
    services: tuple[str, ...]
    seen: float  # time.monotonic()


async def bluez_power_cycle(adapter: str | None) -> None:
    """Power the BlueZ adapter off and on again over D-Bus (what ``bluetoothctl power off/on`` does)."""
    from dbus_fast import BusType, Message, MessageType, Variant  # bleak's own D-Bus library on Linux
    from dbus_fast.aio import MessageBus

    path = f"/org/bluez/{adapter or 'hci0'}"
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        for powered in (False, True):
            reply = await bus.call(
                Message(
                    destination="org.bluez",
                    path=path,
                    interface="org.freedesktop.DBus.Properties",
                    member="Set",
                    signature="ssv",
                    body=["org.bluez.Adapter1", "Powered", Variant("b", powered)],
                )
            )
            if reply is None or reply.message_type == MessageType.ERROR:
                raise BleakError(f"cannot set {path} Powered={powered}: {reply.body if reply else 'no reply'}")
            await asyncio.sleep(1.0)  # BlueZ needs a moment between power states
    finally:
        bus.disconnect()


class Radio:
    """The adapter: serialised scans and connects, connection slots, sightings, stall watchdog."""

    def __init__(
        self,
        settings: BleSettings,
        *,
        recover: Callable[[], Awaitable[None]] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        scanner_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._recover = recover
        adapter = {"bluez": {"adapter": settings.adapter}} if settings.adapter else {}
        self.client_kwargs: dict[str, Any] = {**adapter, **(client_kwargs or {})}
        self.scanner_kwargs: dict[str, Any] = {**adapter, **(scanner_kwargs or {})}
        self.lock = asyncio.Lock()  # one scan or connect at a time on this adapter
        self.slots = asyncio.Semaphore(settings.max_connections)
        self.sightings: dict[str, Sighting] = {}
        self.empty_scans = 0
        self.scans = 0
        self.recoveries = 0
        self.wanted = 0  # sessions currently looking for their device
        self.in_use = 0  # connection slots held (connecting or connected)
        self.waiting: dict[str, float] = {}  # device id -> time.monotonic() it began waiting for a slot
        self.capacity_changed = asyncio.Event()  # set whenever :attr:`waiting` changes

    @contextlib.asynccontextmanager
    async def slot(self, binding: DeviceBinding) -> AsyncIterator[None]:
        """Hold one connection slot; while every slot is in use the device is listed in :attr:`waiting`."""
        if self.slots.locked():
            self.waiting[binding.id] = time.monotonic()
            self.capacity_changed.set()
            try:
                await self.slots.acquire()
            finally:
                del self.waiting[binding.id]
                self.capacity_changed.set()
        else:
            await self.slots.acquire()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self.slots.release()

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Hold the adapter for one scan or connect."""
        async with self.lock:
            yield

    def forget(self, address: str) -> None:
        """Drop the sighting of ``address`` (it went away: scan before connecting again)."""
        self.sightings.pop(address.upper(), None)

    def sighting(self, binding: DeviceBinding) -> Sighting | None:
        """The freshest sighting of ``binding`` within ``seen_ttl_s``."""
        now = time.monotonic()
        for address, sighting in self.sightings.items():
            if now - sighting.seen <= self.settings.seen_ttl_s and binding.matches(address, sighting.name):
                return sighting
        return None

    def _record(self, device: BLEDevice, adv: AdvertisementData) -> Sighting:
        sighting = Sighting(device, adv.local_name or device.name, adv.rssi, tuple(adv.service_uuids), time.monotonic())
        self.sightings[device.address.upper()] = sighting
        return sighting

    async def scan(
        self,
        duration: float,
        *,
        until: Callable[[Sighting], bool] | None = None,
        all_devices: bool = False,
        silence_expected: bool = False,
    ) -> list[Sighting]:
        """Scan (holding the adapter) for up to ``duration`` s, or until ``until`` accepts a sighting.

        ``silence_expected``: looking for a device that sleeps between readings (a spot-check
        device); hearing nothing then says nothing about the adapter (no stall watchdog count).
        """
        heard: dict[str, Sighting] = {}
        found = asyncio.Event()

        def detected(device: BLEDevice, adv: AdvertisementData) -> None:
            sighting = self._record(device, adv)
            heard[device.address.upper()] = sighting
            if until is not None and until(sighting):
                found.set()

        services = None if all_devices else list(WEARABLE_SERVICES)
        async with self.operation():
            self.scans += 1
            scanner = BleakScanner(detected, services, **self.scanner_kwargs)
            async with asyncio.timeout(duration + self.settings.operation_timeout_s):
                await scanner.start()
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(duration):
                            await found.wait()
                finally:
                    await scanner.stop()
        if heard:
            self.empty_scans = 0
        elif not silence_expected:
            self.empty_scans += 1
            await self._maybe_recover()
        return list(heard.values())

    async def _maybe_recover(self) -> None:
        if self.empty_scans < self.settings.scan_stall_scans or self._recover is None:
            return
        _log.warning("scanner heard nothing in %d scans in a row: recovering the adapter", self.empty_scans)
        self.empty_scans = 0
        self.recoveries += 1
        async with self.operation():
            try:
                async with asyncio.timeout(30):
                    await self._recover()
            except (*LINK_ERRORS, ImportError) as exc:
                _log.error("adapter recovery failed: %s", exc)

    async def find(self, binding: DeviceBinding) -> Sighting | None:
        """A fresh sighting of ``binding``, scanning for it if needed (None if not heard)."""
        sighting = self.sighting(binding)
        if sighting is not None:
            return sighting
        self.wanted += 1
        try:
            async with self.lock:  # wait for the current scan, which may have heard this device too
                pass
            sighting = self.sighting(binding)
            if sighting is not None:
                return sighting
            await self.scan(
                self.settings.scan_window_s,
                until=lambda s: binding.matches(s.device.address, s.name),
                silence_expected=profile_for_role(binding.role).spot_check,
            )
        finally:
            self.wanted -= 1
        return self.sighting(binding)


def _backoff(previous: float, settings: BleSettings) -> float:
    return min(settings.backoff_max_s, max(settings.backoff_min_s, previous * 2))


class DeviceSession:
    """Keeps one bound device connected and its notifications flowing into the queue."""

    def __init__(
        self,
        binding: DeviceBinding,
        radio: Radio,
        recorder: Recorder,
        *,
        decoder: DeviceDecoder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.binding = binding
        self.radio = radio
        self.settings = radio.settings
        self.recorder = recorder
        self.decoder = decoder or DeviceDecoder(binding, recorder, clock=clock)
        self.profile: Profile = profile_for_role(binding.role)
        self._clock = clock
        self.connected = False
        self.connects = 0
        self.attempts = 0
        self.rssi: int | None = None
        self.info: dict[str, str] = {}
        self.last_reason: str | None = None
        self.backfilled = 0
        self.clock_writes = 0  # times this session set the device's clock
        self.ends: collections.Counter[str] = collections.Counter()  # SESSION_END_REASONS -> count
        self.released = False  # the kit ended this binding: the session is stopping and reports nothing more
        self._stopping = asyncio.Event()
        self._activity = asyncio.Event()

    # -- status ----------------------------------------------------------------------------------

    def link(self) -> DeviceLink:
        """This device's line in the gateway status."""
        return DeviceLink(
            device=self.binding.id,
            patient=self.binding.patient,
            role=self.binding.role,
            connected=self.connected,
            battery=self.decoder.battery,
            rssi=self.rssi,
            last_seen=self.decoder.last_seen_ms,
            never_connected=self.connects == 0 and not self.connected,
        )

    @property
    def waiting_for_slot(self) -> bool:
        """In sight, but every connection slot of the adapter is in use."""
        return self.binding.id in self.radio.waiting

    def idle_reason(self) -> str | None:
        """Why a device that is not connected is not (for the periodic device status), else None."""
        if self.connected:
            return None
        if self.waiting_for_slot:
            return "waiting_for_slot"
        if self.connects == 0:
            return "never_connected"
        return None

    def status(self, reason: str | None = None) -> DeviceStatus:
        """A device status message (its sequence number is set when queued)."""
        return DeviceStatus(
            patient=self.binding.patient,
            device=self.binding.id,
            gateway=self.recorder.gateway,
            t=int(self._clock() * 1000),
            role=self.binding.role,
            connected=self.connected,
            battery=self.decoder.battery,
            rssi=self.rssi,
            reason=reason,
            malformed_total=self.decoder.malformed,
            manufacturer=self.info.get("manufacturer"),
            model=self.info.get("model"),
            serial=self.info.get("serial"),
            firmware=self.info.get("firmware"),
        )

    def _report(self, reason: str | None = None) -> None:
        if not self.released:
            self.recorder.device_status(self.status(reason))

    # -- the session loop ------------------------------------------------------------------------

    def stop(self, *, released: bool = False) -> None:
        """Ask the session to end (with :meth:`run`'s task cancelled too); ``released``: report nothing more.

        Cancelling alone is not enough: a cancellation that arrives while the BLE library connects can be
        swallowed there (seen with the simulator's backend), and the session would go on streaming.
        """
        self.released = self.released or released
        self._stopping.set()

    async def run(self) -> None:
        """Connect, stream, reconnect: until cancelled or :meth:`stop` is called."""
        delay = 0.0
        while True:
            started = time.monotonic()
            reason = await self._attempt()
            task = asyncio.current_task()
            if self._stopping.is_set() or (task is not None and task.cancelling()):
                raise asyncio.CancelledError(f"device {self.binding.id}: session stopped ({reason})")
            self.last_reason = reason
            self.ends[reason.partition(":")[0]] += 1
            lasted = time.monotonic() - started
            if lasted >= STABLE_SESSION_S or (self.profile.spot_check and reason != "connect_failed"):
                # A spot-check device is asleep most of the time and awake for a short window: keep looking.
                delay = self.settings.backoff_min_s
            else:
                delay = _backoff(delay, self.settings)
            _log.info("device %s: %s; next attempt in %.1f s", self.binding.id, reason, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    async def _attempt(self) -> str:
        """One connection attempt and, if it connects, the whole session; returns why it ended."""
        self.attempts += 1
        sighting = await self.radio.find(self.binding)
        if sighting is None:
            return "not_found"
        self.rssi = sighting.rssi
        disconnected = asyncio.Event()
        client = BleakClient(
            sighting.device,
            lambda _client: disconnected.set(),
            timeout=self.settings.connect_timeout_s,
            **self.radio.client_kwargs,
        )
        async with self.radio.slot(self.binding):
            try:
                async with self.radio.operation():
                    async with asyncio.timeout(self.settings.connect_timeout_s + self.settings.operation_timeout_s):
                        await client.connect()
            except LINK_ERRORS as exc:
                self.radio.forget(sighting.device.address)
                return _reason("connect_failed", exc)
            reason = "stopped"
            try:
                reason = await self._connected(client, disconnected)
                return reason
            finally:
                await self._disconnect(client)
                self.radio.forget(sighting.device.address)
                if self.connected:
                    self.connected = False
                    self._report(reason)

    async def _disconnect(self, client: BleakClient) -> None:
        with contextlib.suppress(*LINK_ERRORS):
            async with asyncio.timeout(self.settings.operation_timeout_s):
                await client.disconnect()

    async def _bounded(self, operation: Awaitable[Any]) -> Any:
        async with asyncio.timeout(self.settings.operation_timeout_s):
            return await operation

    async def _connected(self, client: BleakClient, disconnected: asyncio.Event) -> str:
        try:
            await self._setup(client)
        except LINK_ERRORS as exc:
            return _reason("setup_failed" if not disconnected.is_set() else "link_lost_during_setup", exc)
        self.connects += 1
        self.connected = True
        self._report("connected")
        _log.info("device %s connected (connection %d)", self.binding.id, self.connects)
        if self.connects > 1 and self.settings.backfill and self.profile.record_access:
            try:
                await self._backfill(client)
            except LINK_ERRORS as exc:
                _log.warning("device %s: backfill failed: %s", self.binding.id, exc)
        return await self._stream(disconnected)

    async def _setup(self, client: BleakClient) -> None:
        characteristics = {uuid16_of(c.uuid): c for s in client.services for c in s.characteristics}
        for field, uuid16 in _DEVICE_INFORMATION.items():
            char = characteristics.get(uuid16)
            if char is not None and "read" in char.properties:
                data = await self._bounded(client.read_gatt_char(char))
                with contextlib.suppress(GattDecodeError):
                    self.info[field] = gatt.decode_device_information_string(bytes(data))[:64]
        battery = characteristics.get(gatt.BATTERY_LEVEL)
        if battery is not None and "read" in battery.properties:
            self.decoder.handle(gatt.BATTERY_LEVEL, await self._bounded(client.read_gatt_char(battery)))
        await self._set_clock(client, characteristics.get(CURRENT_TIME.uuid16))
        subscribed = 0
        for wanted in (*(c for p in PROFILES for c in p.characteristics), BATTERY):
            char = characteristics.get(wanted.uuid16)
            if char is None:
                continue
            if wanted.access is Access.READ_ONCE:
                if "read" in char.properties:
                    self.decoder.handle(wanted.uuid16, await self._bounded(client.read_gatt_char(char)))
                continue
            if (wanted.samples is None and wanted is not BATTERY) or not {"notify", "indicate"} & set(char.properties):
                continue
            await self._bounded(client.start_notify(char, self._callback(wanted.uuid16)))
            subscribed += wanted is not BATTERY
        if not subscribed:
            raise BleakError(f"device {self.binding.id} offers no measurement of any wearable profile")

    async def _set_clock(self, client: BleakClient, char: BleakGATTCharacteristic | None) -> None:
        """Set the device's clock (Current Time, 0x2A2B) when it offers it writable: no unset clock, no drift."""
        if char is None or not {"write", "write-without-response"} & set(char.properties):
            return
        value = CURRENT_TIME.encode(self.decoder.device_clock.now(self._clock()))
        try:
            await self._bounded(client.write_gatt_char(char, value, response="write" in char.properties))
        except BleakError as exc:  # a device refusing the write still measures: carry on
            _log.warning("device %s: cannot set its clock: %s", self.binding.id, exc)
            return
        self.clock_writes += 1

    def _callback(self, uuid16: int) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        handle = self.decoder.handle
        activity = self._activity
        if uuid16 == gatt.BATTERY_LEVEL:

            def on_battery(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                before = self.decoder.battery
                handle(uuid16, data)
                if self.decoder.battery != before and self.connected:
                    self._report("battery")

            return on_battery

        def on_measurement(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            handle(uuid16, data)
            activity.set()

        return on_measurement

    async def _stream(self, disconnected: asyncio.Event) -> str:
        """Wait for the link to drop, or for the device to go silent (then the caller disconnects).

        A spot-check device is let go once quiet for :data:`SPOT_CHECK_IDLE_S` (it has delivered
        every pending measurement; an unconfirmed indication stays on the device for next time).
        """
        idle_s = SPOT_CHECK_IDLE_S if self.profile.spot_check else self.settings.stale_after_s
        while True:
            self._activity.clear()
            waiters = [
                asyncio.ensure_future(disconnected.wait()),
                asyncio.ensure_future(self._activity.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            try:
                done, _ = await asyncio.wait(waiters, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self._stopping.is_set():
                return "stopped"
            if disconnected.is_set():
                return "link_lost"
            if not done and self.profile.spot_check:
                return "released"
            if not done:
                _log.warning("device %s silent for %.0f s: reconnecting", self.binding.id, self.settings.stale_after_s)
                return "stale"

    async def _backfill(self, client: BleakClient) -> None:
        """Fetch the oximeter's stored spot-check records (RACP), queue them, then delete them on the device."""
        characteristics = {uuid16_of(c.uuid): c for s in client.services for c in s.characteristics}
        racp = characteristics.get(gatt.RECORD_ACCESS_CONTROL_POINT)
        if racp is None or gatt.PLX_SPOT_CHECK_MEASUREMENT not in characteristics:
            return
        responses: asyncio.Queue[gatt.RacpMessage] = asyncio.Queue()

        def on_racp(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            try:
                responses.put_nowait(gatt.decode_racp(data))
            except GattDecodeError as exc:
                _log.warning("device %s: malformed RACP response: %s", self.binding.id, exc.problem)

        async def request(message: gatt.RacpRequest, idle_s: float) -> gatt.RacpMessage:
            await self._bounded(client.write_gatt_char(racp, gatt.encode_racp(message), response=True))
            while True:
                before = self.decoder.spot_checks  # not all notifications: continuous ones keep flowing
                try:
                    async with asyncio.timeout(idle_s):
                        return await responses.get()
                except TimeoutError:
                    if self.decoder.spot_checks == before:  # no records flowing either: give up
                        raise

        await self._bounded(client.start_notify(racp, on_racp))
        count = await request(gatt.RacpRequest.report_number_of_all_records(), self.settings.operation_timeout_s)
        if not isinstance(count, gatt.RacpNumberOfRecords) or count.count == 0:
            return
        before = self.decoder.spot_checks
        done = await request(gatt.RacpRequest.report_all_records(), self.settings.operation_timeout_s)
        received = self.decoder.spot_checks - before
        if isinstance(done, gatt.RacpResponse) and done.code == gatt.RacpResponseCode.success:
            await self.recorder.queue.flush()  # the records are on our disk before the device forgets them
            await request(gatt.RacpRequest.delete_all_records(), self.settings.operation_timeout_s)
            self.backfilled += received
            _log.info("device %s: backfilled %d stored records", self.binding.id, received)


def _reason(prefix: str, exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc)
    if "InProgress" in text:
        return f"{prefix}: adapter busy (org.bluez.Error.InProgress)"
    return f"{prefix}: {kind}: {text}" if text else f"{prefix}: {kind}"


def default_recovery(adapter: str | None) -> Callable[[], Awaitable[None]] | None:
    """The adapter recovery for this platform: a BlueZ power-cycle on Linux, else none."""
    if not sys.platform.startswith("linux"):
        return None
    return lambda: bluez_power_cycle(adapter)
