"""Settings of ``wardwatch fhir`` (TOML file + ``WARDWATCH_*`` environment overrides)."""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from wardwatch.core import config as core_config
from wardwatch.core import topics
from wardwatch.core.config import MqttSettings, Secret

__all__ = [
    "ExportSettings",
    "FhirConfig",
    "FhirServerSettings",
    "IdentifierSystems",
    "InfluxSettings",
    "MetricsSettings",
]

_MAC_RE: Final = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")

#: How a window of continuous samples reaches the record (see docs/fhir.md).
Representation = Literal["summary", "sampled", "both"]


class FhirServerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The FHIR R4 server that receives the transactions."""

    url: str = "http://localhost:8103/"
    token: Secret | None = None  # sent as "Authorization: Bearer ..."
    timeout_s: float = 30.0
    # Medplum (and its router) runs a transaction with conditional entries only up to 8 entries.
    max_bundle_entries: int = 8
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        if not self.url.endswith("/"):
            self.url += "/"
        if self.max_bundle_entries < 4:
            raise ValueError("max_bundle_entries must be at least 4 (patient, two devices, one observation)")
        if not 0 < self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_min_s <= retry_max_s")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


class IdentifierSystems(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Identifier systems (URIs) of the pseudonymous ids; a site sets its own namespace."""

    patient: str = "urn:wardwatch:patient"
    device: str = "urn:wardwatch:device"
    gateway: str = "urn:wardwatch:gateway"
    observation: str = "urn:wardwatch:observation"
    alarm: str = "urn:wardwatch:alarm"

    def __post_init__(self) -> None:
        for key in ("patient", "device", "gateway", "observation", "alarm"):
            value = getattr(self, key)
            if not value or any(c.isspace() for c in value) or ":" not in value:
                raise ValueError(f"identifiers.{key} = {value!r} must be an absolute URI (e.g. urn:wardwatch:{key})")


class ExportSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What is exported and how continuous data is summarised."""

    # "summary": one Observation per signal and interval (mean, effectivePeriod); "sampled": the interval's
    # samples as valueSampledData; "both": the two Observations. Raw samples stay in InfluxDB either way.
    representation: Representation = "summary"
    interval_s: int = 60
    # A window is exported once a later sample of its series came and none of its own for settle_s; or
    # grace_s after its end (wall clock); or when nothing arrived for it for idle_s.
    settle_s: float = 0.5
    grace_s: float = 10.0
    idle_s: float = 30.0
    # Unacknowledged messages the broker may send: must cover every series' open window.
    receive_maximum: int = 20_000
    identifiers: IdentifierSystems = msgspec.field(default_factory=IdentifierSystems)
    # Device id -> Bluetooth address, where the site knows it (Device.identifier eui-48/bluetooth).
    bluetooth_addresses: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.interval_s <= 3600:
            raise ValueError("interval_s must be 1..3600")
        if not 0 <= self.settle_s <= self.idle_s:
            raise ValueError("need 0 <= settle_s <= idle_s")
        if self.grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        if not 1 <= self.receive_maximum <= 65_535:
            raise ValueError("receive_maximum must be 1..65535 (MQTT 5 Receive Maximum)")
        for device, address in self.bluetooth_addresses.items():
            if not _MAC_RE.match(address):
                raise ValueError(f"bluetooth_addresses.{device} = {address!r} is not like AA:BB:CC:DD:EE:FF")


class SubscriptionSettings(core_config.SubscriptionSettings, kw_only=True):
    """The exporter's own persistent MQTT session."""

    client_id: str = "wardwatch-fhir"
    filters: list[str] = msgspec.field(
        default_factory=lambda: [
            topics.vitals_filter(),
            topics.ward_filter(topics.DEVICE),
            topics.ward_filter(topics.ALARM),
            topics.ward_filter(topics.SCORE),  # NEWS2 (Observation; the total code only when full)
        ]
    )


class InfluxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where ``wardwatch fhir backfill`` reads: InfluxDB's 1.x ``/query`` API, as ingest writes it."""

    url: str = "http://localhost:8086"
    database: str = "wardwatch"
    retention_policy: str = "raw"
    username: str | None = None
    password: Secret | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")


class MetricsSettings(core_config.MetricsSettings, kw_only=True):
    """The Prometheus endpoint (``GET /metrics``); ``port = 0`` turns it off."""

    port: int = 9465


class FhirConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything ``wardwatch fhir`` reads from its config file."""

    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    fhir: FhirServerSettings = msgspec.field(default_factory=FhirServerSettings)
    export: ExportSettings = msgspec.field(default_factory=ExportSettings)
    subscription: SubscriptionSettings = msgspec.field(default_factory=SubscriptionSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    influx: InfluxSettings = msgspec.field(default_factory=InfluxSettings)  # read by backfill only
    log_level: str = "INFO"
