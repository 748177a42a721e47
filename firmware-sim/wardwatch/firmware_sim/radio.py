"""Where simulated devices live: an in-process radio (bumble ``LocalLink``) or a real controller.

* :class:`SimRadio` — one ``LocalLink``; every peripheral and central gets its own virtual
  controller on it. :meth:`SimRadio.expose` adds a controller whose HCI is served over a bumble
  transport (``tcp-server:HOST:PORT`` for a central in another process, ``vhci`` for the host's
  own BlueZ), so the link's devices are seen from outside the process.
* :class:`ControllerRadio` — a real controller (``usb:0``, ``serial:...``): one device over the air.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from bumble import hci
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from .errors import SimError

__all__ = ["ControllerRadio", "Radio", "SimRadio", "static_random_address"]

_log = logging.getLogger(__name__)


def static_random_address(key: str) -> str:
    """A stable static random BLE address (two top bits set) derived from ``key``."""
    digest = zlib.crc32(key.encode()).to_bytes(4, "big") + zlib.adler32(key.encode()).to_bytes(4, "big")
    raw = bytearray(digest[:6])
    raw[0] |= 0xC0
    return ":".join(f"{b:02X}" for b in raw)


class Radio(Protocol):
    """Makes bumble devices attached to some controller."""

    def make_device(self, name: str, address: str) -> Device:
        """A powered-off bumble ``Device`` with its own controller."""
        ...

    def release(self, device: Device) -> None:
        """Detach a device made by :meth:`make_device` (after it is powered off)."""
        ...


class SimRadio:
    """An in-process radio: a bumble ``LocalLink`` shared by simulated peripherals and centrals."""

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self._controllers: dict[int, Controller] = {}
        self._count = 0

    def make_device(self, name: str, address: str) -> Device:
        """A bumble ``Device`` on a fresh virtual controller of this link."""
        self._count += 1
        controller = Controller(f"C{self._count}-{name}", link=self.link)
        device = Device(name=name, address=hci.Address(address), host=Host(controller, AsyncPipeSink(controller)))
        self._controllers[id(device)] = controller
        return device

    def release(self, device: Device) -> None:
        """Take the device's controller off the link."""
        controller = self._controllers.pop(id(device), None)
        if controller is not None and controller in self.link.controllers:
            self.link.remove_controller(controller)

    @contextlib.asynccontextmanager
    async def expose(self, transport: str, *, bluez_compatible: bool = False) -> AsyncIterator[Any]:
        """Serve a controller of this link over the bumble HCI ``transport`` while the context is open.

        ``bluez_compatible`` clears the LL privacy and extended advertising feature bits, which
        the Linux kernel's BlueZ needs on a virtual controller (``vhci``).
        """
        try:
            opened = await open_transport(transport)
        except Exception as exc:  # bumble raises many kinds; say which transport failed
            raise SimError(f"cannot open HCI transport {transport!r}: {exc}") from exc
        async with opened:
            self._count += 1
            controller = Controller(
                f"C{self._count}-hci", host_source=opened.source, host_sink=opened.sink, link=self.link
            )
            if bluez_compatible:
                controller.le_features &= ~(hci.LeFeatureMask.LL_PRIVACY | hci.LeFeatureMask.LE_EXTENDED_ADVERTISING)
            _log.info("HCI controller served on %s", transport)
            try:
                yield opened
            finally:
                if controller in self.link.controllers:
                    self.link.remove_controller(controller)
                await _close_connections(opened)


async def _close_connections(transport: Any) -> None:
    """Close a transport's stream connection (bumble's TCP server leaves the accepted one open)."""
    stream = getattr(transport.sink, "transport", None)
    if stream is not None and hasattr(stream, "close") and not stream.is_closing():
        stream.close()
    server = getattr(transport, "server", None)  # bumble's TCP server transport never closes its listener
    if server is not None:
        server.close()
    await asyncio.sleep(0)  # let asyncio run the transports' connection_lost (closes the sockets)


class ControllerRadio:
    """A real (or remote) controller reached through a bumble transport: one device at a time."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._used = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, spec: str) -> AsyncIterator[ControllerRadio]:
        """Open ``spec`` (e.g. ``usb:0``, ``tcp-client:127.0.0.1:1234``) for the context's lifetime."""
        try:
            transport = await open_transport(spec)
        except Exception as exc:
            raise SimError(f"cannot open HCI transport {spec!r}: {exc}") from exc
        async with transport:
            yield cls(transport)
        await _close_connections(transport)

    def make_device(self, name: str, address: str) -> Device:
        """The one device this controller carries."""
        if self._used:
            raise SimError("a real controller carries one simulated device; give one transport per device")
        self._used = True
        return Device.with_hci(name, hci.Address(address), self._transport.source, self._transport.sink)

    def release(self, device: Device) -> None:
        """Free the controller for another device."""
        del device
        self._used = False
