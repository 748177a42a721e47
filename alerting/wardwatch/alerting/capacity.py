"""Gateway capacity: one operator alarm per gateway whose bound devices cannot all get a connection slot.

A gateway's adapter has a fixed number of connection slots (a Raspberry Pi's ~7). Bound devices in
sight that find every slot in use are listed in the gateway's status (``waiting_for_slot``). They
send nothing, and without this module each would page the nurse as "no data" although no patient
took anything off. Instead:

* one technical alarm per gateway, ``gateway_over_capacity`` (medium), "gateway gw-x over capacity:
  N devices not connected", raised from the first status that lists waiting devices and cleared by
  the first that lists none. It concerns no single patient, so its ``patient`` field carries the
  gateway id (dedup key ``{ward}/{gateway}/gateway_over_capacity``), and the alarm manager pages the
  ward's ``operator`` destination for it (:data:`OPERATOR_RULES`) rather than the nurses' escalation;
* the engine raises no ``device_silent`` for a device while its gateway reports it waiting, and
  restarts that device's no-data timer when it stops waiting.

Pure functions of the status messages (no clock, no I/O), like the engine that calls them.
"""

from __future__ import annotations

from typing import Final

from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import AlarmCategory, GatewayStatus, Priority

__all__ = [
    "MONITORING_DELAYED",
    "OPERATOR_RULES",
    "OVER_CAPACITY",
    "OVER_CAPACITY_PRIORITY",
    "capacity_change",
    "reason_text",
]

OVER_CAPACITY: Final = "gateway_over_capacity"
OVER_CAPACITY_PRIORITY: Final = Priority.MEDIUM  # patients go unmonitored, but nothing clinical is known
#: The alerting instance itself is behind (alerting/intake.py); its ``patient`` field is the service id.
MONITORING_DELAYED: Final = "monitoring_delayed"
#: Rules about the equipment rather than a patient: paged to the ward's operator, not to the nurses.
OPERATOR_RULES: Final = frozenset({OVER_CAPACITY, MONITORING_DELAYED})

_REASON_TEXT: Final = {
    "never_connected": "never connected",
    "waiting_for_slot": "waiting for a connection slot",
}


def reason_text(reason: str) -> str:
    """How a device-status ``reason`` reads in an alarm text ("never_connected" -> "never connected")."""
    return _REASON_TEXT.get(reason, reason)


def capacity_change(before: frozenset[str] | None, status: GatewayStatus) -> ConditionChange | None:
    """The over-capacity alarm's change when a gateway's waiting list goes from ``before`` to ``status``'s.

    Raised (or updated, when the number changes) while devices wait; cleared when none does.
    ``before`` is None for the first status since the engine started: then an empty list also clears
    (an alarm restored from the store after a restart must not outlive its condition; with none open,
    the manager ignores the clear).
    """
    waiting = status.waiting_for_slot
    if before is not None and len(waiting) == len(before):
        return None
    gateway = status.gateway
    if not waiting:
        text = f"gateway {gateway}: every device in sight has a connection slot again"
        return ConditionChange(
            gateway,
            status.ward,
            OVER_CAPACITY,
            AlarmCategory.TECHNICAL,
            OVER_CAPACITY_PRIORITY,
            False,
            status.t,
            0.0,
            text,
        )
    slots = f"all {status.connection_slots} connection slots" if status.connection_slots else "every connection slot"
    devices = "1 device" if len(waiting) == 1 else f"{len(waiting)} devices"
    text = (
        f"gateway {gateway} over capacity: {devices} not connected "
        f"({slots} in use; waiting: {', '.join(sorted(waiting))})"
    )
    return ConditionChange(
        gateway,
        status.ward,
        OVER_CAPACITY,
        AlarmCategory.TECHNICAL,
        OVER_CAPACITY_PRIORITY,
        True,
        status.t,
        float(len(waiting)),
        text,
    )
