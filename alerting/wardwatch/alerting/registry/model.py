"""The registry's data model: its tables, row and request types, its error, and the binding queries."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from wardwatch.alerting.errors import RefusedRequestError
from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import DeviceRole

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reg_gateways (
    gateway TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    home TEXT NOT NULL DEFAULT '',
    capacity INTEGER NOT NULL CHECK (capacity >= 0),
    revision INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reg_patients (
    patient TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('admitted', 'discharged')),
    admitted_at INTEGER NOT NULL,
    discharged_at INTEGER,
    discharge_reason TEXT,
    profile TEXT,
    identity BLOB
);
CREATE INDEX IF NOT EXISTS reg_patients_ward ON reg_patients (ward, status);
CREATE TABLE IF NOT EXISTS reg_bindings (
    binding INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    role TEXT NOT NULL,
    address TEXT,
    name TEXT,
    patient TEXT NOT NULL REFERENCES reg_patients (patient),
    gateway TEXT NOT NULL REFERENCES reg_gateways (gateway),
    since INTEGER NOT NULL,
    until INTEGER
);
CREATE INDEX IF NOT EXISTS reg_bindings_gateway ON reg_bindings (gateway, until);
CREATE INDEX IF NOT EXISTS reg_bindings_patient ON reg_bindings (patient);
CREATE UNIQUE INDEX IF NOT EXISTS reg_bindings_current ON reg_bindings (device) WHERE until IS NULL;
"""

CONTINUOUS_ROLES: Final = frozenset({DeviceRole.HEART_RATE_STRAP, DeviceRole.PULSE_OXIMETER})
"""Devices that hold a gateway connection slot all the time (spot-check devices would share slots)."""

DISCHARGED: Final = "discharged"


class RegistryError(RefusedRequestError):
    """A registry change that cannot be made; ``status`` is the HTTP status that says why."""


class DeviceSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A device to bind: its id, role and how the gateway finds it (address, or advertised name)."""

    id: str
    role: DeviceRole
    address: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class PatientRow:
    """A patient as the registry holds it (identity apart)."""

    patient: str
    ward: str
    status: str
    admitted_at: int
    discharged_at: int | None
    discharge_reason: str | None
    profile: str | None
    has_identity: bool

    def as_json(self) -> dict[str, Any]:
        """The API's view (no identity)."""
        return dataclasses.asdict(self)


DischargeHook = Callable[[str, int], Sequence[ConditionChange]]
"""Called with (patient, time) when a patient is discharged: the engine forgets them (``Engine.discharge``)."""

AdmitHook = Callable[[str, str], None]
"""Called with (ward, patient) once a patient is admitted (the live board shows them)."""

KitHook = Callable[[str, str, str], None]
"""Called with (ward, patient, gateway) once a kit is assigned (the live board shows the patient's gateway)."""


def _patient_row(row: Sequence[Any]) -> PatientRow:
    patient, ward, status, admitted_at, discharged_at, discharge_reason, profile, has_identity = row
    return PatientRow(patient, ward, status, admitted_at, discharged_at, discharge_reason, profile, bool(has_identity))


def _continuous_bound(db: sqlite3.Connection, gateway: str) -> int:
    roles = sorted(str(role) for role in CONTINUOUS_ROLES)
    row = db.execute(
        "SELECT COUNT(*) FROM reg_bindings WHERE gateway = ? AND until IS NULL AND role IN (?, ?)", (gateway, *roles)
    ).fetchone()
    return int(row[0])


def _refuse_bound(db: sqlite3.Connection, device: str) -> None:
    held = db.execute("SELECT patient FROM reg_bindings WHERE device = ? AND until IS NULL", (device,)).fetchone()
    if held is not None:
        raise RegistryError(409, f"device {device} is bound to patient {held[0]}; swap or discharge first")


def _bind(db: sqlite3.Connection, device: DeviceSpec, patient: str, gateway: str, now: int) -> None:
    db.execute(
        "INSERT INTO reg_bindings (device, role, address, name, patient, gateway, since) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (device.id, str(device.role), device.address, device.name, patient, gateway, now),
    )
