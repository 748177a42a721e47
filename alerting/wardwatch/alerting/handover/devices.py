"""Each patient's device history: the kit bindings over time and the devices' connection and battery transitions.

The bindings (since/until, swaps) are the registry's. Connection and battery events come from the
device status and gateway status messages the service already receives; only transitions are stored
(connected <-> disconnected, with the battery level then; a battery step of :data:`BATTERY_STEP` % or
crossing :data:`BATTERY_LOW` % otherwise),
at most :data:`MAX_EVENTS_PER_DEVICE` per device (older ones are dropped), in ``device_events``; the
gateways' online/offline changes in ``gateway_events`` likewise. Nothing here may reach the alarm path:
:meth:`DeviceHistory.observe` and :meth:`DeviceHistory.gateway` count and log a failure, never raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.schema import DeviceStatus, GatewayStatus

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

_log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS device_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ward TEXT NOT NULL,
    patient TEXT NOT NULL,
    device TEXT NOT NULL,
    gateway TEXT NOT NULL,
    t INTEGER NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('connected', 'disconnected', 'battery')),
    battery INTEGER,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS device_events_patient ON device_events (patient, t);
CREATE INDEX IF NOT EXISTS device_events_device ON device_events (device, id);
CREATE TABLE IF NOT EXISTS gateway_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ward TEXT NOT NULL,
    gateway TEXT NOT NULL,
    t INTEGER NOT NULL,
    online INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_events_gateway ON gateway_events (gateway, id);
"""
BATTERY_STEP: Final = 10
"""A battery change of this many percent (since the last one stored) is an event."""
BATTERY_LOW: Final = 20
"""Crossing this level (the console's "LOW") is an event whatever the step."""
MAX_EVENTS_PER_DEVICE: Final = 500
"""Events kept per device (and per gateway): a flapping link cannot fill the store."""


@dataclass(slots=True)
class _Last:
    """What was last stored for one device."""

    connected: bool | None
    battery: int | None


class DeviceHistory:
    """Device transitions of the service's patients, and their kit bindings from the registry."""

    def __init__(self, service: AlarmService) -> None:
        self._service = service
        self._last: dict[str, _Last] = {}
        self._online: dict[str, bool] = {}
        self._warn = RateLimitedLog(_log, interval_s=30.0)
        self.stored = 0  # events written since start
        service.store.add_schema(SCHEMA)

    # -- inputs (from the MQTT input; never raise) --------------------------------------------------

    def on_device_status(self, ward: str, status: DeviceStatus) -> None:
        """A device status message (admitted by the provenance and time checks)."""
        self._guard(
            lambda: self._observe(
                ward,
                status.patient,
                status.device,
                status.gateway,
                status.t,
                status.connected,
                status.battery,
                status.reason,
            )
        )

    def on_gateway_status(self, status: GatewayStatus) -> None:
        """A gateway's periodic status: each device's link and battery."""

        def observe_all() -> None:
            for link in status.devices:
                self._observe(
                    status.ward, link.patient, link.device, status.gateway, status.t, link.connected, link.battery, None
                )

        self._guard(observe_all)

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> None:
        """A gateway came online or went offline."""
        self._guard(lambda: self._gateway(ward, gateway, online, t))

    def _guard(self, update: Callable[[], None]) -> None:
        try:
            update()
        except Exception as exc:  # history only: never at the cost of the alarm path
            self._service.metrics.failures.labels(stage="device_history").inc()
            self._warn.warning("device-history", "recording device history failed: %r", exc)

    def _observe(
        self,
        ward: str,
        patient: str,
        device: str,
        gateway: str,
        t: int,
        connected: bool,
        battery: int | None,
        reason: str | None,
    ) -> None:
        last = self._last.get(device)
        if last is None:
            last = self._last[device] = self._stored_state(device)
        events: list[tuple[str, int | None, str | None]] = []
        if last.connected != connected:  # a link event carries the battery level too
            events.append(("connected" if connected else "disconnected", battery, reason if not connected else None))
        elif battery is not None and (
            last.battery is None
            or abs(battery - last.battery) >= BATTERY_STEP
            or (battery <= BATTERY_LOW) != (last.battery <= BATTERY_LOW)
        ):
            events.append(("battery", battery, None))
        if not events:
            return
        with self._service.store.transaction() as (db, _):
            for event, level, why in events:
                db.execute(
                    "INSERT INTO device_events (ward, patient, device, gateway, t, event, battery, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ward, patient, device, gateway, t, event, level, why),
                )
            db.execute(
                "DELETE FROM device_events WHERE device = ? AND id <= (SELECT id FROM device_events WHERE device = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (device, device, MAX_EVENTS_PER_DEVICE),
            )
        last.connected = connected
        if battery is not None:
            last.battery = battery
        self.stored += len(events)

    def _stored_state(self, device: str) -> _Last:
        """The device's last stored link state and battery (after a restart: no repeated events)."""
        db = self._service.store.connection
        link = db.execute(
            "SELECT event FROM device_events WHERE device = ? AND event != 'battery' ORDER BY id DESC LIMIT 1",
            (device,),
        ).fetchone()
        level = db.execute(
            "SELECT battery FROM device_events WHERE device = ? AND battery IS NOT NULL ORDER BY id DESC LIMIT 1",
            (device,),
        ).fetchone()
        return _Last(None if link is None else link[0] == "connected", None if level is None else level[0])

    def _gateway(self, ward: str, gateway: str, online: bool, t: int) -> None:
        if gateway not in self._online:
            row = self._service.store.connection.execute(
                "SELECT online FROM gateway_events WHERE gateway = ? ORDER BY id DESC LIMIT 1", (gateway,)
            ).fetchone()
            if row is not None:
                self._online[gateway] = bool(row[0])
        if self._online.get(gateway) == online:
            return
        with self._service.store.transaction() as (db, _):
            db.execute(
                "INSERT INTO gateway_events (ward, gateway, t, online) VALUES (?, ?, ?, ?)",
                (ward, gateway, t, int(online)),
            )
            db.execute(
                "DELETE FROM gateway_events WHERE gateway = ? AND id <= (SELECT id FROM gateway_events"
                " WHERE gateway = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (gateway, gateway, MAX_EVENTS_PER_DEVICE),
            )
        self._online[gateway] = online
        self.stored += 1

    # -- reading ------------------------------------------------------------------------------------

    def history(self, patient: str, limit: int) -> dict[str, Any]:
        """The patient's bindings (oldest first, swaps marked) and newest ``limit`` device and gateway events."""
        bindings = self._service.registry.bindings(patient)
        for binding in bindings:
            binding["replaced_by"] = next(
                (
                    other["device"]
                    for other in bindings
                    if binding["until"] is not None
                    and other["role"] == binding["role"]
                    and other["device"] != binding["device"]
                    and other["since"] == binding["until"]
                ),
                None,
            )
        db = self._service.store.connection
        rows = db.execute(
            "SELECT t, device, gateway, event, battery, reason FROM device_events WHERE patient = ?"
            " ORDER BY t DESC, id DESC LIMIT ?",
            (patient, limit),
        ).fetchall()
        keys = ("t", "device", "gateway", "event", "battery", "reason")
        events = [dict(zip(keys, row, strict=True)) for row in rows]
        gateway_events: list[dict[str, Any]] = []
        for gateway in sorted({b["gateway"] for b in bindings}):
            spans = [(b["since"], b["until"]) for b in bindings if b["gateway"] == gateway]
            first = min(since for since, _ in spans)
            last = None if any(until is None for _, until in spans) else max(u for _, u in spans if u is not None)
            found = db.execute(
                "SELECT t, online FROM gateway_events WHERE gateway = ? AND t >= ? AND t <= ? ORDER BY t DESC, id DESC"
                " LIMIT ?",
                (gateway, first, last if last is not None else 2**62, limit),
            ).fetchall()
            gateway_events += [{"t": t, "gateway": gateway, "online": bool(online)} for t, online in found]
        gateway_events.sort(key=lambda e: e["t"], reverse=True)
        return {"patient": patient, "bindings": bindings, "events": events, "gateway_events": gateway_events[:limit]}
