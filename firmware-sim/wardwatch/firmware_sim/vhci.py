"""The simulator on Linux's own BlueZ through ``/dev/vhci``: a link whose LE data carries the right addresses.

bumble's ``LocalLink`` tags LE ACL data with the *sender controller's random address*. A controller
served to the kernel over ``vhci`` is driven by BlueZ, which connects with its *public* address, so a
peripheral receiving BlueZ's data finds no connection for that random address (bumble logs
``no connection for <addr>``) and the link stalls. :class:`VhciLink` tags each LE PDU with the
address the sender uses on that connection instead, which is what a real radio does.

Use :class:`VhciRadio` in place of :class:`~wardwatch.firmware_sim.radio.SimRadio` and serve it with
``radio.expose("vhci", bluez_compatible=True)`` (which also clears the LL privacy and extended
advertising feature bits that BlueZ cannot use on a virtual controller).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bumble import core
from bumble.link import LocalLink

from .radio import SimRadio

__all__ = ["VhciLink", "VhciRadio"]


class VhciLink(LocalLink):
    """A ``LocalLink`` whose LE ACL data carries the sender's own address on that connection."""

    def send_acl_data(
        self, sender_controller: Any, destination_address: Any, transport: core.PhysicalTransport, data: bytes
    ) -> None:
        """Deliver ``data`` to the controller connected at ``destination_address``."""
        if transport != core.PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        connection = sender_controller.le_connections.get(destination_address)
        source = connection.self_address if connection is not None else sender_controller.random_address
        destination = self.find_le_controller(destination_address)
        if destination is not None:
            asyncio.get_running_loop().call_soon(destination.on_link_acl_data, source, transport, data)


class VhciRadio(SimRadio):
    """A :class:`~wardwatch.firmware_sim.radio.SimRadio` on a :class:`VhciLink` (for ``expose("vhci")``)."""

    def __init__(self) -> None:
        super().__init__()
        self.link = VhciLink()  # type: ignore[no-untyped-call]  # bumble's LocalLink.__init__ is unannotated
