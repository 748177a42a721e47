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

# the engine's part lives in the engine package (it imports nothing from alerting outside it)
from wardwatch.alerting.engine.capacity import (
    OVER_CAPACITY,
    OVER_CAPACITY_PRIORITY,
    capacity_change,
    reason_text,
)

__all__ = [
    "MONITORING_DELAYED",
    "OPERATOR_RULES",
    "OVER_CAPACITY",
    "OVER_CAPACITY_PRIORITY",
    "PROVENANCE_REFUSED",
    "capacity_change",
    "reason_text",
]

#: Messages refused by the registry's provenance check (wardwatch.alerting.registry.provenance).
PROVENANCE_REFUSED: Final = "provenance_refused"
#: The alerting instance itself is behind (alerting/intake.py); its ``patient`` field is the service id.
MONITORING_DELAYED: Final = "monitoring_delayed"
#: Rules about the equipment rather than a patient: paged to the ward's operator, not to the nurses.
OPERATOR_RULES: Final = frozenset({OVER_CAPACITY, PROVENANCE_REFUSED, MONITORING_DELAYED})
