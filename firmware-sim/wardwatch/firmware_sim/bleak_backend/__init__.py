"""A bleak backend over the bumble BLE stack: plain bleak code talks to simulated devices over real ATT.

For tests and demos only; the gateway package never imports it. Use either
``BleakScanner(backend=BumbleBleakScanner, bumble_central=central)`` /
``BleakClient(device, backend=BumbleBleakClient, bumble_central=central)``, or wrap unmodified code
in ``with use_bumble_backend(central):`` so that ``BleakScanner()``/``BleakClient()`` pick it.
"""

from .central import BumbleCentral
from .client import BumbleBleakClient
from .scanner import BumbleBleakScanner, advertisement_data
from .selection import bleak_backend, current_central, use_bumble_backend

__all__ = [
    "BumbleBleakClient",
    "BumbleBleakScanner",
    "BumbleCentral",
    "advertisement_data",
    "bleak_backend",
    "current_central",
    "use_bumble_backend",
]
