"""A patient's ward for the features that hang off the registry (review notes, observations), refused in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wardwatch.alerting.errors import RefusedRequestError
from wardwatch.alerting.registry.model import RegistryError

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService


def ward_of_patient(
    service: AlarmService,
    patient: str,
    refuse: Callable[[int, str], RefusedRequestError],
    *,
    admitted_for: str | None = None,
) -> str:
    """The ward of ``patient`` if the registry has them on one of ``service``'s wards, and admitted when
    ``admitted_for`` names what needs that (e.g. ``"review notes"``); else ``refuse(status, message)`` is raised:
    404 for a patient unknown or on another service's ward, 409 for one not admitted."""
    try:
        row = service.registry.patient(patient)
    except RegistryError as exc:
        raise refuse(404, f"patient {patient} is not in the registry: admit the patient first") from exc
    if row.ward not in service.config.wards:
        raise refuse(404, f"patient {patient} is not on a ward of this service")
    if admitted_for is not None and row.status != "admitted":
        raise refuse(409, f"patient {patient} is {row.status}: {admitted_for} need an admitted patient")
    return row.ward
