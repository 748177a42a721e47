"""A bleak backend over the bumble BLE stack: plain bleak code talks to simulated devices over real ATT.

For tests and demos only; the gateway package never imports it. Select it with bleak's own
``backend=`` argument: ``BleakScanner(backend=BumbleBleakScanner, bumble_central=central)`` /
``BleakClient(device, backend=BumbleBleakClient, bumble_central=central)``; :func:`bleak_arguments`
has both (the gateway takes them as ``client_kwargs`` / ``scanner_kwargs``).
"""

from .central import BumbleCentral
from .client import BumbleBleakClient
from .scanner import BumbleBleakScanner, advertisement_data
from .selection import BleakArguments, bleak_arguments, bleak_backend, current_central

__all__ = [
    "BleakArguments",
    "BumbleBleakClient",
    "BumbleBleakScanner",
    "BumbleCentral",
    "advertisement_data",
    "bleak_arguments",
    "bleak_backend",
    "current_central",
]
