"""Which :class:`BumbleCentral` the bleak backend uses, and making plain bleak pick the backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .central import BumbleCentral

__all__ = ["bleak_backend", "current_central", "use_bumble_backend"]

_stack: list[BumbleCentral] = []


def current_central() -> BumbleCentral:
    """The central selected by the innermost :func:`use_bumble_backend`."""
    if not _stack:
        raise RuntimeError(
            "no BumbleCentral selected: pass bumble_central= to BleakScanner/BleakClient "
            "or wrap the code in `with use_bumble_backend(central):`"
        )
    return _stack[-1]


@contextlib.contextmanager
def use_bumble_backend(central: BumbleCentral) -> Iterator[BumbleCentral]:
    """Within the block, plain ``bleak.BleakScanner()``/``BleakClient(...)`` (no ``backend=``) use bumble.

    Patches bleak's platform backend lookup (``bleak.get_platform_client_backend_type`` and
    ``bleak.get_platform_scanner_backend_type``, the names ``bleak/__init__.py`` calls) and restores
    it on exit. Nested blocks select their own central.
    """
    import bleak
    import bleak.backends.client as bleak_client
    import bleak.backends.scanner as bleak_scanner

    from .client import BumbleBleakClient
    from .scanner import BumbleBleakScanner

    def client_type() -> tuple[type[Any], str]:
        return BumbleBleakClient, "bumble"

    def scanner_type() -> tuple[type[Any], str]:
        return BumbleBleakScanner, "bumble"

    patches: list[tuple[Any, str, Any]] = [
        (bleak, "get_platform_client_backend_type", client_type),
        (bleak, "get_platform_scanner_backend_type", scanner_type),
        (bleak_client, "get_platform_client_backend_type", client_type),
        (bleak_scanner, "get_platform_scanner_backend_type", scanner_type),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    _stack.append(central)
    try:
        yield central
    finally:
        _stack.remove(central)
        for module, name, value in saved:
            setattr(module, name, value)


@contextlib.asynccontextmanager
async def bleak_backend(transport: str, name: str = "wardwatch-central") -> AsyncIterator[BumbleCentral]:
    """Plug-in for the gateway's ``ble.backend``: plain bleak talks to simulated devices over ``transport``.

    ``transport`` is the bumble HCI transport of a controller on the simulator's link, e.g.
    ``tcp-client:127.0.0.1:9000`` against ``wardwatch sim run --transport tcp-server:127.0.0.1:9000``.
    """
    async with BumbleCentral.over_transport(transport, name=name) as central:
        with use_bumble_backend(central):
            yield central
