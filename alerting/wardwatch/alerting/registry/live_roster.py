"""The registry's admissions and discharges on the live board (the console's tiles appear and disappear).

At start the board is given the registry's roster (admitted patients get a tile before their first
reading, naming the gateway of their kit from the registry's current bindings, not only from the
gateway's next status message; discharged ones never come back, even if a late sample of theirs is
still accepted). Then each
admission adds a tile (``admitted`` event), a kit names the patient's gateway on it (``values``) and each
discharge removes it (``discharged`` event), without the console reloading. Board updates are guarded:
a fault here never fails an admission, a kit or a discharge.
"""

from __future__ import annotations

from collections.abc import Sequence

from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.live import LiveBoard
from wardwatch.alerting.registry.registry import Registry

__all__ = ["connect_live_roster", "kit_gateways"]


def kit_gateways(registry: Registry, ward: str) -> dict[str, str]:
    """Patient -> the gateway of their current kit in ``ward`` (the registry's index of kit documents)."""
    gateways: dict[str, str] = {}
    for (kit_ward, gateway), kit in registry.index.kits.items():
        if kit_ward == ward:
            for device in kit.current_devices():
                gateways[device.patient] = gateway
    return gateways


def connect_live_roster(registry: Registry, live: LiveBoard) -> None:
    """Load the registry's roster into ``live`` and keep it following admissions and discharges."""
    for ward in registry.wards:
        rows = registry.patients(ward)
        live.load_roster(
            ward,
            admitted=[row.patient for row in rows if row.status == "admitted"],
            discharged=[row.patient for row in rows if row.status == "discharged"],
            gateways=kit_gateways(registry, ward),
        )

    def admitted(ward: str, patient: str) -> None:
        live.guard(lambda: live.on_admitted(ward, patient))

    def kit(ward: str, patient: str, gateway: str) -> None:
        live.guard(lambda: live.on_kit(ward, patient, gateway))

    def discharged(patient: str, t: int) -> Sequence[ConditionChange]:
        live.guard(lambda: live.on_discharged(registry.patient(patient).ward, patient))
        return ()

    registry.admit_hooks.append(admitted)
    registry.kit_hooks.append(kit)
    registry.discharge_hooks.append(discharged)
