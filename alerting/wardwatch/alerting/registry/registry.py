"""The registry: patients, gateways and kit bindings of the wards this alerting instance owns.

Tables in the alerting SQLite store (``reg_*``); every change is one transaction with its audit entry
(who, what, why). After each change, and at start, the kit of every gateway the change touched and
its ward's manifest are published retained, QoS 1, with increasing revisions
(:mod:`wardwatch.core.registry`); the same documents feed this service's own
:class:`~wardwatch.core.registry.ProvenanceIndex`, so alerting judges samples by exactly what the
gateways and ingest are told. Ended bindings stay in the kits for ``[registry] retention_s``.

Patient identity is encrypted (:mod:`wardwatch.alerting.registry.identity`); it never enters a
document, a log line or an audit entry's details.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from wardwatch.alerting.audit import SYSTEM_ACTOR, AuditEntry
from wardwatch.alerting.errors import AlertingError
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.registry.identity import Identity, IdentityCipher, IdentityKeyError
from wardwatch.alerting.settings import RegistryConfig
from wardwatch.core.ids import check_id
from wardwatch.core.registry import (
    GatewayKit,
    KitDevice,
    ProvenanceIndex,
    WardManifest,
    encode_document,
    kit_from_bindings,
    kit_topic,
    manifest_topic,
)
from wardwatch.core.schema import DeviceRole

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

_log = logging.getLogger(__name__)

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


class RegistryError(AlertingError):
    """A registry change that cannot be made; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
        return {
            "patient": self.patient,
            "ward": self.ward,
            "status": self.status,
            "admitted_at": self.admitted_at,
            "discharged_at": self.discharged_at,
            "discharge_reason": self.discharge_reason,
            "profile": self.profile,
            "has_identity": self.has_identity,
        }


DischargeHook = Callable[[str, int], Sequence[ConditionChange]]
"""Called with (patient, time) when a patient is discharged: the engine forgets them (``Engine.discharge``)."""

AdmitHook = Callable[[str, str], None]
"""Called with (ward, patient) once a patient is admitted (the live board shows them)."""

KitHook = Callable[[str, str, str], None]
"""Called with (ward, patient, gateway) once a kit is assigned (the live board shows the patient's gateway)."""


class Registry:
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

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.store.connection.execute(sql, tuple(args)).fetchall()

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

    # -- documents --------------------------------------------------------------------------------

    def _build(self, now: int, gateways: Iterable[tuple[str, str, int]]) -> list[GatewayKit]:
        """Kits of ``(ward, gateway, revision)`` from the tables (ended bindings within the retention)."""
        keep_from = now - round(self.config.retention_s * 1000)
        kits: list[GatewayKit] = []
        for ward, gateway, revision in gateways:
            rows = self._rows(
                "SELECT device, patient, role, since, until, address, name FROM reg_bindings"
                " WHERE gateway = ? AND (until IS NULL OR until >= ?)",
                (gateway, keep_from),
            )
            devices = [
                KitDevice(
                    id=device,
                    patient=patient,
                    role=DeviceRole(role),
                    since=since,
                    until=until,
                    address=address,
                    name=name,
                )
                for device, patient, role, since, until, address, name in rows
            ]
            kits.append(kit_from_bindings(ward, gateway, revision, now, devices))
        return kits

    def _manifest(self, ward: str, now: int) -> WardManifest:
        issued = max(now, self._manifest_issued.get(ward, 0) + 1)  # strictly increasing per ward
        self._manifest_issued[ward] = issued
        rows = self._rows("SELECT gateway, revision FROM reg_gateways WHERE ward = ?", (ward,))
        return WardManifest(ward=ward, issued_at=issued, gateways=dict(rows))

    def _rebuild(self, now: int) -> list[GatewayKit | WardManifest]:
        """Every kit and manifest of the owned wards, applied to the index (what :meth:`publish_all` sends)."""
        documents: list[GatewayKit | WardManifest] = []
        for ward in self.wards:
            rows = self._rows("SELECT gateway, revision FROM reg_gateways WHERE ward = ?", (ward,))
            documents += self._build(now, [(ward, gateway, revision) for gateway, revision in rows])
            documents.append(self._manifest(ward, now))
        for document in documents:
            self.index.apply(document)
        return documents

    async def _publish(self, documents: Sequence[GatewayKit | WardManifest]) -> None:
        """Retained, QoS 1; kits before the manifest that names their revisions."""
        publisher = self.service.publisher
        if publisher is None:
            return
        for document in documents:
            if isinstance(document, GatewayKit):
                topic = kit_topic(document.ward, document.gateway)
            else:
                topic = manifest_topic(document.ward)
            try:
                await publisher.publish(topic, encode_document(document), qos=1, retain=True)
                self.service.set_problem("registry_publish", None)
            except Exception as exc:  # the change is committed; the next change or start publishes again
                self.service.metrics.failures.labels(stage="registry").inc()
                self.service.set_problem(
                    "registry_publish", f"publishing registry document {topic} failed ({type(exc).__name__}: {exc})"
                )

    async def publish_all(self) -> None:
        """At start: bump every kit's revision, rebuild and publish every kit and manifest.

        Also resolves alarms still open for discharged patients (a crash between a discharge and the
        resolution of its alarms).
        """
        discharged = {row[0] for row in self._rows("SELECT patient FROM reg_patients WHERE status = 'discharged'")}
        for record in self.service.manager.open_alarms():
            if record.patient in discharged:
                self.service.resolve(record.alarm_id, SYSTEM_ACTOR, DISCHARGED)
        async with self._lock:
            with self.store.transaction() as (db, _audit):
                for ward in self.wards:
                    db.execute("UPDATE reg_gateways SET revision = revision + 1 WHERE ward = ?", (ward,))
            await self._publish(self._rebuild(self.service.clock.now_ms()))

    async def expire_ended(self) -> list[str]:
        """Republish (at a new revision) every kit holding a binding that ended longer than the retention ago.

        Returns the gateways whose kit changed. Run now and then (:meth:`expire_periodically`).
        """
        async with self._lock:
            keep_from = self.service.clock.now_ms() - round(self.config.retention_s * 1000)
            stale = [
                (ward, gateway)
                for (ward, gateway), kit in list(self.index.kits.items())
                if ward in self.wards and any(d.until is not None and d.until < keep_from for d in kit.devices)
            ]
            if not stale:
                return []
            with self.store.transaction() as (db, _audit):
                for _ward, gateway in stale:
                    db.execute("UPDATE reg_gateways SET revision = revision + 1 WHERE gateway = ?", (gateway,))
            for ward in sorted({ward for ward, _ in stale}):
                await self._changed(ward, [gateway for w, gateway in stale if w == ward])
            return [gateway for _, gateway in stale]

    async def expire_periodically(self, interval_s: float = 3600.0) -> None:
        """:meth:`expire_ended` every ``interval_s`` until cancelled (the kits stay as small as the retention)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.expire_ended()
            except Exception as exc:  # housekeeping: the kits only stay larger than needed
                self.service.metrics.failures.labels(stage="registry").inc()
                _log.warning("expiring ended bindings failed: %r", exc)

    async def _changed(self, ward: str, gateways: Iterable[str]) -> None:
        """After a committed change: rebuild the touched kits and the ward's manifest; apply; publish."""
        now = self.service.clock.now_ms()
        names = sorted(set(gateways))
        rows = [
            (ward, gateway, int(self._rows("SELECT revision FROM reg_gateways WHERE gateway = ?", (gateway,))[0][0]))
            for gateway in names
        ]
        documents: list[GatewayKit | WardManifest] = [*self._build(now, rows), self._manifest(ward, now)]
        for document in documents:
            self.index.apply(document)
        await self._publish(documents)

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
                    service.resolve(record.alarm_id, actor, DISCHARGED)
                except Exception:  # the alarm stays open and visible: say so
                    service.metrics.failures.labels(stage="registry").inc()
                    _log.exception("resolving alarm %s at discharge failed", record.alarm_id)
        for hook in self.discharge_hooks:  # after: the engine's clears find no open alarm left
            try:
                changes = hook(patient, now)
            except Exception:
                service.metrics.failures.labels(stage="registry").inc()
                _log.exception("the engine failed to forget a discharged patient")
                continue
            service.on_conditions(changes)


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


__all__ = [
    "CONTINUOUS_ROLES",
    "DeviceSpec",
    "IdentityKeyError",
    "PatientRow",
    "Registry",
    "RegistryError",
]
