"""The engine behind the alerting service's ``ConditionSource`` protocol (ward-first argument order)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wardwatch.alerting.engine._engine import Engine
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import load_rules
from wardwatch.core.schema import DataGap, DeviceStatus, GatewayStatus, Vitals


class EngineSource:
    """Adapts :class:`Engine` to the service: ``on_vitals(ward, msg)`` etc., plus threshold overrides."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def on_vitals(self, ward: str, message: Vitals) -> list[ConditionChange]:
        """Feed one vitals message."""
        return self.engine.on_vitals(message, ward)

    def on_device_status(self, ward: str, message: DeviceStatus) -> list[ConditionChange]:
        """Feed one device status."""
        return self.engine.on_device_status(message, ward)

    def on_gateway_status(self, ward: str, message: GatewayStatus) -> list[ConditionChange]:
        """Feed one gateway status (learns device bindings)."""
        del ward  # the status names its ward
        return self.engine.on_gateway_status(message)

    def on_availability(self, ward: str, gateway: str, online: bool, t: int) -> list[ConditionChange]:
        """A gateway came online or went offline."""
        return self.engine.on_gateway_availability(ward, gateway, online, t)

    def on_data_gap(self, ward: str, message: DataGap) -> list[ConditionChange]:
        """A gateway dropped readings."""
        return self.engine.on_data_gap(message, ward)

    def tick(self, now: int) -> list[ConditionChange]:
        """Time passed."""
        return self.engine.tick(now)

    def set_patient_thresholds(self, patient: str, overrides: dict[str, Any]) -> None:
        """Replace ``patient``'s overrides (already validated and audited by the manager)."""
        self.engine.set_rules(self.engine.rules.replacing_patient_overrides(patient, overrides))


def build_source(config: object, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> EngineSource:
    """The engine for ``config.rules`` (a rules TOML path or ``None``) with stored per-patient overrides applied."""
    path = getattr(config, "rules", None)
    rules = load_rules(Path(path) if path is not None else None)
    for patient, changes in (overrides or {}).items():
        rules = rules.replacing_patient_overrides(patient, changes)
    return EngineSource(Engine(rules))
