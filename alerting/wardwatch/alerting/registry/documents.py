"""The registry's documents: kits and ward manifests built from its tables, applied to its index, published.

Retained, QoS 1, kits before the manifest that names their revisions (:mod:`wardwatch.core.registry`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from wardwatch.alerting.audit import SYSTEM_ACTOR
from wardwatch.alerting.registry.model import DISCHARGED
from wardwatch.alerting.settings import RegistryConfig
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
    from wardwatch.alerting.store import Store

_log = logging.getLogger(__name__)


class _KitDocuments:
    """The documents of :class:`~wardwatch.alerting.registry.registry.Registry` (its base): build, apply, publish."""

    service: AlarmService
    config: RegistryConfig
    store: Store
    wards: tuple[str, ...]
    index: ProvenanceIndex
    _lock: asyncio.Lock
    _manifest_issued: dict[str, int]

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.store.connection.execute(sql, tuple(args)).fetchall()

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
                self.service.resolve(record.alarm_id, SYSTEM_ACTOR, DISCHARGED, recheck=False)
        for patient in discharged & {watch.patient for watch in self.service.manager.watched()}:
            self.service.end_watches(patient)
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
