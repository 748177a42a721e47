"""``wardwatch gateway scan``: list nearby wearables so a technician can bind them in the config."""

from __future__ import annotations

import json
from typing import Any

from bleak.exc import BleakError

from wardwatch.core import gatt
from wardwatch.core.profiles import PROFILES
from wardwatch.gateway.ble import Radio, Sighting, uuid16_of
from wardwatch.gateway.config import BleSettings

__all__ = ["describe", "scan_main"]

_KNOWN = {
    **{p.service: str(p.role) for p in PROFILES},
    gatt.BATTERY_SERVICE: "battery",
    gatt.DEVICE_INFORMATION_SERVICE: "device_information",
}


def describe(sighting: Sighting) -> dict[str, Any]:
    """A sighting as JSON-ready data: name, address, services, RSSI, and the role it suggests."""
    services = []
    for uuid in sighting.services:
        uuid16 = uuid16_of(uuid)
        services.append(_KNOWN.get(uuid16, uuid) if uuid16 is not None else uuid)
    roles = [str(p.role) for p in PROFILES if str(p.role) in services]
    role = roles[-1] if roles else None
    return {
        "name": sighting.name,
        "address": sighting.device.address,
        "rssi": sighting.rssi,
        "services": services,
        "role": role,
    }


async def scan_main(*, duration: float, adapter: str | None, all_devices: bool, as_json: bool) -> int:
    """Scan once and print what was heard, strongest signal first."""
    radio = Radio(BleSettings(adapter=adapter))
    try:
        sightings = await radio.scan(duration, all_devices=all_devices)
    except (BleakError, OSError) as exc:
        print(f"wardwatch gateway scan: cannot scan: {exc} (is bluetoothd running, and may this user use it?)")
        return 1
    rows = sorted((describe(s) for s in sightings), key=lambda row: -row["rssi"])
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no {'devices' if all_devices else 'heart-rate or pulse-oximeter devices'} heard in {duration:g} s")
        return 0
    print(f"{'ADDRESS':<18} {'RSSI':>5}  {'ROLE':<17} {'NAME':<24} SERVICES")
    for row in rows:
        print(
            f"{row['address']:<18} {row['rssi']:>5}  {row['role'] or '-':<17} {(row['name'] or '-'):<24} "
            f"{', '.join(row['services'])}"
        )
    print(
        "\nbind a device in the config: [[devices]] id = ..., patient = ..., role = ..., address = ... (or name = ...)"
    )
    return 0
