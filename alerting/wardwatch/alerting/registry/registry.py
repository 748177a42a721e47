"""The registry: patients, gateways and kit bindings of the wards this alerting instance owns.

Tables in the alerting SQLite store (``reg_*``); every change is one transaction with its audit entry
(who, what, why). After each change, and at start, the kit of every gateway the change touched and
its ward's manifest are published retained, QoS 1, with increasing revisions
(:mod:`wardwatch.core.registry`); the same documents feed this service's own
:class:`~wardwatch.core.registry.ProvenanceIndex`, so alerting judges samples by exactly what the
gateways and ingest are told. Ended bindings stay in the kits for ``[registry] retention_s``.

Patient identity is encrypted (:mod:`wardwatch.alerting.registry.identity`); it never enters a
document, a log line or an audit entry's details.

The tables and row types are in :mod:`~wardwatch.alerting.registry.model`; building and publishing the
documents in :mod:`~wardwatch.alerting.registry.documents` (the base of :class:`Registry`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.registry.documents import _KitDocuments
from wardwatch.alerting.registry.identity import Identity, IdentityCipher, IdentityKeyError
from wardwatch.alerting.registry.model import (
    CONTINUOUS_ROLES,
    DISCHARGED,
    SCHEMA,
    AdmitHook,
    DeviceSpec,
    DischargeHook,
    KitHook,
    PatientRow,
    RegistryError,
    _bind,
    _continuous_bound,
    _patient_row,
    _refuse_bound,
)
from wardwatch.alerting.settings import RegistryConfig
from wardwatch.core.ids import check_id
from wardwatch.core.registry import GatewayKit, ProvenanceIndex

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

_log = logging.getLogger(__name__)


class Registry(_KitDocuments):
    """The registry of ``service``'s wards (in its store); publishes documents through its publisher."""

    def __init__(self, service: AlarmService) -> None:
        self.service = service
        self.config: RegistryConfig = service.config.registry
        self.store = service.store
        self.wards = tuple(service.config.wards)
        self.index = ProvenanceIndex.empty()
        self.discharge_hooks: list[DischargeHook] = []
        self.admit_hooks: list[AdmitHook] = []
        self.kit_hooks: list[KitHook] = []
        self._lock = asyncio.Lock()
        self._manifest_issued: dict[str, int] = {}
        self._cipher: IdentityCipher | None = None
        self.store.add_schema(SCHEMA)
        if self.config.identity_key_file is not None:
            self._cipher = IdentityCipher(self.config.identity_key_file)  # a missing key stops the start
        self._issued: set[str] = set()
        self._refresh_issued()
        self._rebuild(self.service.clock.now_ms())

    # -- reading ----------------------------------------------------------------------------------

    def _refresh_issued(self) -> None:
        self._issued = {row[0] for row in self._rows("SELECT patient FROM reg_patients")}

    def issued(self, patient: str) -> bool:
        """Whether the registry ever issued ``patient`` (admitted now or earlier)."""
        return patient in self._issued

    def patient(self, patient: str) -> PatientRow:
        """One patient (404 if the registry never issued the id)."""
        rows = self._rows(
            "SELECT patient, ward, status, admitted_at, discharged_at, discharge_reason, profile,"
            " identity IS NOT NULL FROM reg_patients WHERE patient = ?",
            (patient,),
        )
        if not rows:
            raise RegistryError(404, f"no patient {patient} in the registry")
        return _patient_row(rows[0])

    def patients(self, ward: str, status: str | None = None) -> list[PatientRow]:
        """The patients of ``ward`` (optionally only ``admitted`` or ``discharged``), by admission."""
        sql = (
            "SELECT patient, ward, status, admitted_at, discharged_at, discharge_reason, profile,"
            " identity IS NOT NULL FROM reg_patients WHERE ward = ?"
        )
        args: list[Any] = [ward]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [_patient_row(row) for row in self._rows(sql + " ORDER BY admitted_at, patient", args)]

    def bindings(self, patient: str) -> list[dict[str, Any]]:
        """Every binding of ``patient``, oldest first."""
        rows = self._rows(
            "SELECT device, role, address, name, gateway, since, until FROM reg_bindings WHERE patient = ?"
            " ORDER BY since, device",
            (patient,),
        )
        keys = ("device", "role", "address", "name", "gateway", "since", "until")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def gateways(self, ward: str) -> list[dict[str, Any]]:
        """The gateways of ``ward`` with their capacity, slots in use and kit revision."""
        rows = self._rows(
            "SELECT g.gateway, g.ward, g.home, g.capacity, g.revision,"
            " (SELECT COUNT(*) FROM reg_bindings b WHERE b.gateway = g.gateway AND b.until IS NULL)"
            " FROM reg_gateways g WHERE g.ward = ? ORDER BY g.gateway",
            (ward,),
        )
        keys = ("gateway", "ward", "home", "capacity", "revision", "bound")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def kit(self, ward: str, gateway: str) -> GatewayKit | None:
        """The kit document this registry last built for ``gateway``."""
        return self.index.kits.get((ward, gateway))

    def identity(self, patient: str, actor: str) -> Identity | None:
        """The patient's identity, decrypted; the read is audited (callers check the actor's role)."""
        cipher = self._need_cipher()
        row = self.patient(patient)
        blob = self._rows("SELECT identity FROM reg_patients WHERE patient = ?", (patient,))[0][0]
        identity = cipher.decrypt(patient, blob) if blob is not None else None
        entry = AuditEntry(
            t=self.service.clock.now_ms(),
            actor=actor,
            action="identity_read",
            patient=patient,
            ward=row.ward,
            details={"found": identity is not None},
        )
        self.store.audit(entry)
        return identity

    def _need_cipher(self) -> IdentityCipher:
        if self._cipher is None:
            raise RegistryError(
                503,
                "patient identity is not configured: set [registry] identity_key_file to a key made with "
                "`wardwatch alerting registry-key PATH`",
            )
        return self._cipher

    # -- changes ----------------------------------------------------------------------------------

    def _ward(self, ward: str) -> str:
        if ward not in self.wards:
            raise RegistryError(400, f"ward must be one of this service's wards: {', '.join(self.wards)}")
        return ward

    def _gateway(self, gateway: str) -> tuple[str, int]:
        rows = self._rows("SELECT ward, capacity FROM reg_gateways WHERE gateway = ?", (gateway,))
        if not rows:
            raise RegistryError(404, f"no gateway {gateway} in the registry (register it first)")
        return str(rows[0][0]), int(rows[0][1])

    def _admitted(self, patient: str) -> PatientRow:
        row = self.patient(patient)
        if row.status != "admitted":
            raise RegistryError(409, f"patient {patient} was discharged; admit them again for a new stay")
        return row

    async def register_gateway(
        self, ward: str, gateway: str, home: str, capacity: int, actor: str, reason: str
    ) -> dict[str, Any]:
        """Register a gateway (or change its home label and capacity); 409 if it belongs to another ward."""
        self._ward(ward)
        check_id(gateway, "gateway id")
        async with self._lock:
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                held = db.execute("SELECT ward FROM reg_gateways WHERE gateway = ?", (gateway,)).fetchone()
                if held is not None and held[0] != ward:
                    raise RegistryError(409, f"gateway {gateway} is registered in ward {held[0]}")
                bound = _continuous_bound(db, gateway)
                if bound > capacity:
                    raise RegistryError(
                        409, f"gateway {gateway} has {bound} continuous devices bound; capacity {capacity} is too small"
                    )
                db.execute(
                    "INSERT INTO reg_gateways (gateway, ward, home, capacity, revision, created)"
                    " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (gateway) DO UPDATE SET home = excluded.home,"
                    " capacity = excluded.capacity, revision = revision + 1",
                    (gateway, ward, home, capacity, now),
                )
                audit.append(
                    AuditEntry(
                        t=now,
                        actor=actor,
                        action="gateway_registered",
                        ward=ward,
                        reason=reason,
                        details={"gateway": gateway, "home": home, "capacity": capacity, "new": held is None},
                    )
                )
            await self._changed(ward, [gateway])
        return next(g for g in self.gateways(ward) if g["gateway"] == gateway)

    async def admit(
        self,
        ward: str,
        actor: str,
        reason: str,
        *,
        profile: str | None = None,
        identity: Identity | None = None,
        patient: str | None = None,
    ) -> PatientRow:
        """Admit a patient to ``ward``; the registry issues the id (``patient``: a requested id, e.g. a demo's)."""
        self._ward(ward)
        cipher = self._need_cipher() if identity is not None else None
        issued = patient if patient is not None else f"p-{secrets.token_hex(8)}"
        check_id(issued, "patient id")
        async with self._lock:
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                if db.execute("SELECT 1 FROM reg_patients WHERE patient = ?", (issued,)).fetchone():
                    raise RegistryError(409, f"patient id {issued} was issued before; ids are never reused")
                blob = cipher.encrypt(issued, identity) if cipher is not None and identity is not None else None
                db.execute(
                    "INSERT INTO reg_patients (patient, ward, status, admitted_at, profile, identity)"
                    " VALUES (?, ?, 'admitted', ?, ?, ?)",
                    (issued, ward, now, profile, blob),
                )
                audit.append(
                    AuditEntry(
                        t=now,
                        actor=actor,
                        action="patient_admitted",
                        patient=issued,
                        ward=ward,
                        reason=reason,
                        details={"profile": profile, "identity": identity is not None},
                    )
                )
            self._issued.add(issued)
            await self._changed(ward, [])
        self._run_hooks(self.admit_hooks, ward, issued)
        if profile is not None:  # the patient's rule profile, applied to the engine like any override
            self.service.set_thresholds(issued, {"profile": profile}, actor, reason)
        return self.patient(issued)

    async def set_identity(self, patient: str, identity: Identity, actor: str, reason: str) -> None:
        """Store (replace) the patient's identity, encrypted; audited (without the identity itself)."""
        cipher = self._need_cipher()
        row = self.patient(patient)
        async with self._lock:
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                db.execute(
                    "UPDATE reg_patients SET identity = ? WHERE patient = ?",
                    (cipher.encrypt(patient, identity), patient),
                )
                audit.append(
                    AuditEntry(t=now, actor=actor, action="identity_set", patient=patient, ward=row.ward, reason=reason)
                )

    async def assign_kit(
        self,
        patient: str,
        gateway: str,
        devices: Sequence[DeviceSpec],
        actor: str,
        reason: str,
        *,
        since: int | None = None,
    ) -> list[dict[str, Any]]:
        """Bind ``devices`` to ``patient`` through ``gateway`` from now; 409 over capacity or if a device is bound.

        ``since``: an earlier start (test fixtures replaying old samples, imports); the API always binds from now.
        """
        for device in devices:
            check_id(device.id, "device id")
        if len({device.id for device in devices}) != len(devices):
            raise RegistryError(400, "a device is listed twice")
        async with self._lock:
            row = self._admitted(patient)
            ward, capacity = self._gateway(gateway)
            if ward != row.ward:
                raise RegistryError(409, f"gateway {gateway} is in ward {ward}, patient {patient} in {row.ward}")
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                for device in devices:
                    _refuse_bound(db, device.id)
                bound = _continuous_bound(db, gateway)
                adding = sum(1 for device in devices if device.role in CONTINUOUS_ROLES)
                if bound + adding > capacity:
                    raise RegistryError(
                        409,
                        f"gateway {gateway} over capacity: {bound} continuous device(s) bound + {adding} new > "
                        f"{capacity} connection slots; use another gateway for this kit or free a slot",
                    )
                for device in devices:
                    _bind(db, device, patient, gateway, now if since is None else since)
                db.execute("UPDATE reg_gateways SET revision = revision + 1 WHERE gateway = ?", (gateway,))
                audit.append(
                    AuditEntry(
                        t=now,
                        actor=actor,
                        action="kit_assigned",
                        patient=patient,
                        ward=ward,
                        reason=reason,
                        details={"gateway": gateway, "devices": [msgspec.to_builtins(device) for device in devices]},
                    )
                )
            await self._changed(ward, [gateway])
        self._run_hooks(self.kit_hooks, ward, patient, gateway)
        return self.bindings(patient)

    def _run_hooks(self, hooks: Sequence[Callable[..., None]], *args: str) -> None:
        """Tell the watchers of a change (the live board); a failing one is counted, the change stands."""
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                self.service.metrics.failures.labels(stage="registry").inc()
                _log.exception("a registry hook failed after a change %s (the change stands)", args)

    async def swap_device(
        self, patient: str, old_device: str, new: DeviceSpec, actor: str, reason: str
    ) -> list[dict[str, Any]]:
        """End ``old_device``'s binding now and bind ``new`` in its place (same gateway; role from ``new``)."""
        check_id(new.id, "device id")
        async with self._lock:
            row = self._admitted(patient)
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                held = db.execute(
                    "SELECT gateway, role FROM reg_bindings WHERE device = ? AND patient = ? AND until IS NULL",
                    (old_device, patient),
                ).fetchone()
                if held is None:
                    raise RegistryError(404, f"device {old_device} is not bound to patient {patient}")
                gateway, old_role = str(held[0]), str(held[1])
                _refuse_bound(db, new.id)
                _, capacity = self._gateway(gateway)
                db.execute("UPDATE reg_bindings SET until = ? WHERE device = ? AND until IS NULL", (now, old_device))
                gains_slot = new.role in CONTINUOUS_ROLES and old_role not in CONTINUOUS_ROLES
                if gains_slot and _continuous_bound(db, gateway) + 1 > capacity:
                    raise RegistryError(409, f"gateway {gateway} over capacity: no slot for {new.id}")
                _bind(db, new, patient, gateway, now)
                db.execute("UPDATE reg_gateways SET revision = revision + 1 WHERE gateway = ?", (gateway,))
                audit.append(
                    AuditEntry(
                        t=now,
                        actor=actor,
                        action="device_swapped",
                        patient=patient,
                        ward=row.ward,
                        reason=reason,
                        details={"gateway": gateway, "old": old_device, "new": msgspec.to_builtins(new)},
                    )
                )
            await self._changed(row.ward, [gateway])
        return self.bindings(patient)

    async def discharge(self, patient: str, actor: str, reason: str) -> PatientRow:
        """Discharge: bindings end now, the engine forgets the patient, open alarms resolve ("discharged")."""
        async with self._lock:
            row = self._admitted(patient)
            now = self.service.clock.now_ms()
            with self.store.transaction() as (db, audit):
                gateways = [
                    str(g[0])
                    for g in db.execute(
                        "SELECT DISTINCT gateway FROM reg_bindings WHERE patient = ? AND until IS NULL", (patient,)
                    )
                ]
                db.execute("UPDATE reg_bindings SET until = ? WHERE patient = ? AND until IS NULL", (now, patient))
                db.execute(
                    "UPDATE reg_patients SET status = 'discharged', discharged_at = ?, discharge_reason = ?"
                    " WHERE patient = ?",
                    (now, reason, patient),
                )
                for gateway in gateways:
                    db.execute("UPDATE reg_gateways SET revision = revision + 1 WHERE gateway = ?", (gateway,))
                audit.append(
                    AuditEntry(
                        t=now,
                        actor=actor,
                        action="patient_discharged",
                        patient=patient,
                        ward=row.ward,
                        reason=reason,
                        details={"gateways": gateways},
                    )
                )
            await self._changed(row.ward, gateways)
            self._end_alarms(patient, now, actor)
        return self.patient(patient)

    def _end_alarms(self, patient: str, now: int, actor: str) -> None:
        """The engine forgets the patient; every open alarm of theirs is resolved with reason "discharged"."""
        service = self.service
        for record in service.manager.open_alarms():
            if record.patient == patient:
                try:
                    service.resolve(record.alarm_id, actor, DISCHARGED, recheck=False)
                except Exception:  # the alarm stays open and visible: say so
                    service.metrics.failures.labels(stage="registry").inc()
                    _log.exception("resolving alarm %s at discharge failed", record.alarm_id)
        service.end_watches(patient)  # alarms resolved by hand while present: monitoring ends
        for hook in self.discharge_hooks:  # after: the engine's clears find no open alarm left
            try:
                changes = hook(patient, now)
            except Exception:
                service.metrics.failures.labels(stage="registry").inc()
                _log.exception("the engine failed to forget a discharged patient")
                continue
            service.on_conditions(changes)


__all__ = [
    "CONTINUOUS_ROLES",
    "DeviceSpec",
    "IdentityKeyError",
    "PatientRow",
    "Registry",
    "RegistryError",
]
