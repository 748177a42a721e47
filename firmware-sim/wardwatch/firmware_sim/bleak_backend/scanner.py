"""``BumbleBleakScanner``: bleak's scanner interface over a :class:`BumbleCentral`."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.uuids import normalize_uuid_16, normalize_uuid_32
from bumble.core import AdvertisingData
from bumble.device import Advertisement

from .central import BumbleCentral
from .selection import current_central

__all__ = ["BumbleBleakScanner", "advertisement_data"]

_T = AdvertisingData


def _uuids(data: AdvertisingData) -> list[str]:
    found: list[str] = []
    for kind in (_T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS):
        for raw in data.get_all(kind, raw=True):
            found += [normalize_uuid_16(int.from_bytes(raw[i : i + 2], "little")) for i in range(0, len(raw) - 1, 2)]
    for kind in (_T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS, _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS):
        for raw in data.get_all(kind, raw=True):
            found += [normalize_uuid_32(int.from_bytes(raw[i : i + 4], "little")) for i in range(0, len(raw) - 3, 4)]
    for kind in (_T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS):
        for raw in data.get_all(kind, raw=True):
            found += [str(uuid.UUID(bytes=bytes(reversed(raw[i : i + 16])))) for i in range(0, len(raw) - 15, 16)]
    return list(dict.fromkeys(found))


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """bleak's view of one bumble advertising report."""
    data: AdvertisingData = advertisement.data
    name_raw = data.get_all(_T.COMPLETE_LOCAL_NAME, raw=True) or data.get_all(_T.SHORTENED_LOCAL_NAME, raw=True)
    name = bytes(name_raw[0]).decode("utf-8", "replace") if name_raw else None
    manufacturer = {
        int.from_bytes(raw[:2], "little"): bytes(raw[2:])
        for raw in data.get_all(_T.MANUFACTURER_SPECIFIC_DATA, raw=True)
        if len(raw) >= 2
    }
    service_data = {
        normalize_uuid_16(int.from_bytes(raw[:2], "little")): bytes(raw[2:])
        for raw in data.get_all(_T.SERVICE_DATA_16_BIT_UUID, raw=True)
        if len(raw) >= 2
    }
    tx_raw = data.get_all(_T.TX_POWER_LEVEL, raw=True)
    tx_power = int.from_bytes(tx_raw[0][:1], "little", signed=True) if tx_raw else None
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer,
        service_data=service_data,
        service_uuids=_uuids(data),
        tx_power=tx_power,
        rssi=int(advertisement.rssi),
        platform_data=(advertisement,),
    )


class BumbleBleakScanner(BaseBleakScanner):
    """Scans on the :class:`BumbleCentral` given as ``bumble_central=`` (bleak's ``backend=`` selects this class)."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bumble_central: BumbleCentral | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        del scanning_mode, kwargs  # the simulated radio always answers scan requests
        self._central = bumble_central

    async def start(self) -> None:
        """Start scanning (clears the devices seen so far)."""
        self.seen_devices = {}
        self._central = self._central or current_central()
        await self._central.add_listener(self)

    async def stop(self) -> None:
        """Stop scanning."""
        if self._central is not None:
            await self._central.remove_listener(self)

    def handle_advertisement(self, advertisement: Advertisement) -> None:
        """Turn a bumble report into bleak's device + advertisement data and call the callbacks."""
        adv = advertisement_data(advertisement)
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        key = str(advertisement.address).split("/")[0].upper()
        device = self.create_or_update_device(key, key, adv.local_name, advertisement.address, adv)
        self.call_detection_callbacks(device, adv)
