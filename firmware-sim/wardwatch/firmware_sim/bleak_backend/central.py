"""The central side of the bleak backend: one bumble ``Device`` in the central role.

A :class:`BumbleCentral` is the simulated counterpart of a host's Bluetooth adapter: scanners and
clients of the bleak backend share it (one scan at a time on the radio, connects serialised, many
links at once). Attach it to an in-process :class:`~wardwatch.firmware_sim.radio.SimRadio` or to a
controller reached through a bumble transport (``tcp-client:127.0.0.1:PORT`` for a simulator in
another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from bumble import hci
from bumble.device import Advertisement, Device

from wardwatch.firmware_sim.radio import ControllerRadio, Radio, static_random_address

if TYPE_CHECKING:
    from bumble.device import Connection

__all__ = ["AdvertisementListener", "BumbleCentral"]

_log = logging.getLogger(__name__)


class AdvertisementListener(Protocol):
    """Receives every advertisement the central hears while it is registered."""

    def handle_advertisement(self, advertisement: Advertisement) -> None:
        """Called for each advertising report."""
        ...


class BumbleCentral:
    """A simulated adapter for the bleak backend (async context manager: power on/off)."""

    def __init__(self, radio: Radio, *, name: str = "wardwatch-central", address: str | None = None) -> None:
        self.name = name
        self.address = address or static_random_address(f"central:{name}:{id(self)}")
        self._radio = radio
        self._device: Device | None = None
        self._listeners: list[AdvertisementListener] = []
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self.addresses: dict[str, hci.Address] = {}  # "AA:BB:..." -> address with its type, as heard

    @classmethod
    @contextlib.asynccontextmanager
    async def over_transport(cls, spec: str, *, name: str = "wardwatch-central") -> AsyncIterator[BumbleCentral]:
        """A central on the controller behind bumble transport ``spec`` (e.g. ``tcp-client:127.0.0.1:9000``)."""
        async with ControllerRadio.open(spec) as radio, cls(radio, name=name) as central:
            yield central

    async def __aenter__(self) -> Self:
        device = self._radio.make_device(self.name, self.address)
        device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await device.power_on()
        self._device = device
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        device = self._device
        if device is None:
            return
        for connection in list(device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()
        with contextlib.suppress(Exception):
            await device.power_off()
        self._radio.release(device)
        self._device = None

    @property
    def device(self) -> Device:
        """The bumble device (raises if the central is not powered)."""
        if self._device is None:
            raise RuntimeError("BumbleCentral is not open: use `async with BumbleCentral(radio) as central`")
        return self._device

    def resolve(self, address: str) -> hci.Address:
        """The typed address for an ``AA:BB:..`` string (as heard; static random otherwise)."""
        known = self.addresses.get(address.upper())
        if known is not None:
            return known
        return hci.Address(address.upper(), hci.Address.RANDOM_DEVICE_ADDRESS)

    async def add_listener(self, listener: AdvertisementListener) -> None:
        """Start delivering advertisements to ``listener`` (scanning starts with the first one)."""
        async with self._scan_lock:
            self._listeners.append(listener)
            if len(self._listeners) == 1:
                await self.device.start_scanning(active=True, filter_duplicates=False)

    async def remove_listener(self, listener: AdvertisementListener) -> None:
        """Stop delivering to ``listener`` (scanning stops with the last one)."""
        async with self._scan_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
                if not self._listeners and self._device is not None:
                    with contextlib.suppress(Exception):
                        await self._device.stop_scanning()

    async def connect(self, address: hci.Address, timeout: float) -> Connection:
        """Open an LE link (one connection attempt at a time on this central)."""
        async with self.connect_lock:
            device = self.device
            try:
                connection: Connection = await device.connect(address, timeout=timeout)
            except BaseException:
                if device.is_le_connecting:
                    with contextlib.suppress(Exception):
                        await device.cancel_connection()  # type: ignore[no-untyped-call]
                raise
            return connection

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        self.addresses[str(advertisement.address).split("/")[0].upper()] = advertisement.address
        for listener in list(self._listeners):
            try:
                listener.handle_advertisement(advertisement)
            except Exception:  # one broken callback must not stop the others
                _log.exception("advertisement listener failed")
