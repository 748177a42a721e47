"""Gateway capacity, as the engine decides it: the over-capacity alarm's change from a gateway's status.

Moved here from ``wardwatch.alerting.capacity`` (which re-exports it) so the pure engine package
depends on nothing else in ``alerting`` but its event and rule types. The behaviour is described
in :mod:`wardwatch.alerting.capacity`.
"""

from __future__ import annotations

from typing import Final

from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import AlarmCategory, GatewayStatus, Priority

__all__ = [
    "OVER_CAPACITY",
    "OVER_CAPACITY_PRIORITY",
    "capacity_change",
    "reason_text",
]

OVER_CAPACITY: Final = "gateway_over_capacity"
OVER_CAPACITY_PRIORITY: Final = Priority.MEDIUM  # patients go unmonitored, but nothing clinical is known

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
