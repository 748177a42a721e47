"""``BumbleBleakClient``: bleak's client interface over real ATT on a :class:`BumbleCentral`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, hci
from bumble.core import UUID
from bumble.device import Connection, Peer

from .central import BumbleCentral
from .selection import current_central

__all__ = ["BumbleBleakClient"]

_log = logging.getLogger(__name__)

_PROPERTY_NAMES = (
    (0x01, "broadcast"),
    (0x02, "read"),
    (0x04, "write-without-response"),
    (0x08, "write"),
    (0x10, "notify"),
    (0x20, "indicate"),
    (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)


def _really_cancelled() -> bool:
    """Whether our task is being cancelled (bumble cancels pending ATT futures when a link drops)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _uuid_str(value: UUID) -> str:
    return str(uuid.UUID(bytes=bytes(reversed(value.to_bytes(force_128=True)))))


class BumbleBleakClient(BaseBleakClient):
    """A bleak client whose link is a bumble LE connection (``bumble_central=`` or the selected one)."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        bumble_central: BumbleCentral | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._central = bumble_central
        self._bumble_address: hci.Address | None = None
        self._name = self.address
        if isinstance(address_or_ble_device, BLEDevice):
            if isinstance(address_or_ble_device.details, hci.Address):
                self._bumble_address = address_or_ble_device.details
            self._name = address_or_ble_device.name or self.address
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}
        self._disconnected = asyncio.Event()

    # --- connectivity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The device's advertised name (or its address)."""
        return self._name

    @property
    def mtu_size(self) -> int:
        """The ATT MTU of the link (23 unless negotiated)."""
        return int(self._connection.att_mtu) if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        """Whether the LE link is up."""
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect and discover services; bounded by the client's timeout (``TimeoutError``)."""
        if pair:
            _log.debug("pairing is not simulated; connecting without it")
        if self._connection is not None:
            return
        timeout = float(kwargs.get("timeout", self._timeout))
        central = self._central = self._central or current_central()
        address = self._bumble_address or central.resolve(self.address)
        self._disconnected = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                connection = await central.connect(address, timeout)
                self._connection = connection
                connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
                self._peer = Peer(connection)
                self.services = await self._discover(self._peer)
        except TimeoutError:
            await self._abandon()
            raise
        except asyncio.CancelledError:
            await self._abandon()
            if _really_cancelled():
                raise
            raise BleakError(f"{self.address}: device disconnected during connect") from None
        except BleakError:
            await self._abandon()
            raise
        except Exception as exc:
            await self._abandon()
            if self._disconnected.is_set():
                raise BleakError(f"{self.address}: device disconnected during connect ({exc!r})") from exc
            if isinstance(exc, att.ATT_Error):
                raise BleakGATTProtocolError(exc.error_code) from exc
            raise BleakDeviceNotFoundError(self.address, f"cannot connect to {self.address}: {exc!r}") from exc
        if self._connection is None:
            raise BleakError(f"{self.address}: device disconnected during connect")

    async def _abandon(self) -> None:
        connection = self._connection
        self._connection = None
        self._peer = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        await peer.discover_services()
        for service in peer.services:
            await service.discover_characteristics()
            bleak_service = BleakGATTService(service, service.handle, _uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for char in service.characteristics:
                await char.discover_descriptors()
                props = [name for bit, name in _PROPERTY_NAMES if char.properties & bit]
                bleak_char = BleakGATTCharacteristic(
                    char,
                    char.handle,
                    _uuid_str(char.uuid),
                    cast(Any, props),
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                for desc in char.descriptors:
                    collection.add_descriptor(BleakGATTDescriptor(desc, desc.handle, _uuid_str(desc.type), bleak_char))
        return collection

    def _on_disconnection(self, reason: int) -> None:
        _log.debug("%s disconnected (reason 0x%02x)", self.address, reason)
        was_connected = self._connection is not None
        self._connection = None
        self._peer = None
        self._subscribers.clear()
        self._disconnected.set()
        if was_connected and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        """Close the link and wait until it is down."""
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(Exception):
            await connection.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._disconnected.wait()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pairing is not simulated: a no-op."""
        _log.debug("pair() is a no-op on the bumble backend")

    async def unpair(self) -> None:
        """Pairing is not simulated: a no-op."""
        _log.debug("unpair() is a no-op on the bumble backend")

    # --- I/O --------------------------------------------------------------------------------------

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def _att(self, operation: Any) -> Any:
        try:
            return await operation
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc
        except asyncio.CancelledError:
            if _really_cancelled():
                raise
            raise BleakError(f"{self.address}: link lost during the ATT operation") from None
        except Exception as exc:
            if isinstance(exc, BleakError | asyncio.CancelledError):
                raise
            raise BleakError(f"{self.address}: ATT operation failed: {exc!r}") from exc

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a characteristic value over ATT."""
        self._require_peer()
        value = await self._att(characteristic.obj.read_value())
        return bytearray(value)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a descriptor value over ATT."""
        self._require_peer()
        value = await self._att(descriptor.obj.read_value())
        return bytearray(value)

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        """Write a characteristic (request or command)."""
        self._require_peer()
        await self._att(characteristic.obj.write_value(bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        """Write a descriptor (with response)."""
        self._require_peer()
        await self._att(descriptor.obj.write_value(bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Enable notifications (or indications when that is all the characteristic has)."""
        self._require_peer()

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = subscriber
        await self._att(characteristic.obj.subscribe(subscriber, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Disable notifications/indications."""
        self._require_peer()
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._att(characteristic.obj.unsubscribe(subscriber))
