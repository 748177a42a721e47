"""Selecting the bumble backend through bleak's own ``backend=`` argument (no patching of bleak)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

from .central import BumbleCentral

__all__ = ["BleakArguments", "bleak_arguments", "bleak_backend", "current_central"]


def current_central() -> NoReturn:
    """Raise: a bumble client or scanner was made without its central."""
    raise RuntimeError(
        "no BumbleCentral given: pass backend=BumbleBleakClient/BumbleBleakScanner with bumble_central=central "
        "to BleakClient/BleakScanner (bleak_arguments(central) has both)"
    )


@dataclass(frozen=True, slots=True)
class BleakArguments:
    """Keyword arguments that make plain ``BleakClient(...)`` / ``BleakScanner(...)`` use a backend."""

    client_kwargs: dict[str, Any]
    scanner_kwargs: dict[str, Any]


def bleak_arguments(central: BumbleCentral) -> BleakArguments:
    """``backend=`` and ``bumble_central=`` for bleak's client and scanner on ``central``."""
    from .client import BumbleBleakClient
    from .scanner import BumbleBleakScanner

    return BleakArguments(
        {"backend": BumbleBleakClient, "bumble_central": central},
        {"backend": BumbleBleakScanner, "bumble_central": central},
    )


@contextlib.asynccontextmanager
async def bleak_backend(transport: str, name: str = "wardwatch-central") -> AsyncIterator[BleakArguments]:
    """Plug-in for the gateway's ``ble.backend``: the bleak arguments for simulated devices over ``transport``.

    ``transport`` is the bumble HCI transport of a controller on the simulator's link, e.g.
    ``tcp-client:127.0.0.1:9000`` against ``wardwatch sim run --transport tcp-server:127.0.0.1:9000``.
    The gateway passes ``client_kwargs`` / ``scanner_kwargs`` to every ``BleakClient`` / ``BleakScanner``.
    """
    async with BumbleCentral.over_transport(transport, name=name) as central:
        yield bleak_arguments(central)
