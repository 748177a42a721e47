"""Gateway configuration: a TOML file (see ``deploy/gateway/gateway.example.toml``) validated at start-up.

Load with :func:`load_gateway_config`; every problem is a :class:`~wardwatch.core.errors.ConfigError`
naming the key and the fix. Environment variables ``WARDWATCH_<SECTION>__<KEY>`` override the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final

import msgspec

from wardwatch.core.config import MqttSettings, load_config
from wardwatch.core.errors import ConfigError
from wardwatch.core.ids import Identifier
from wardwatch.core.schema import DeviceRole

__all__ = [
    "CONTINUOUS_ROLES",
    "BleSettings",
    "DeviceBinding",
    "GatewayConfig",
    "MetricsSettings",
    "QueueSettings",
    "load_gateway_config",
]

_MAC_RE: Final = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
# BlueZ on Linux names devices by MAC; macOS CoreBluetooth and test backends use UUID-like strings.
_UUID_RE: Final = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]

#: Roles that stream continuously and so hold a connection slot for as long as they are worn. Spot-check
#: devices (blood-pressure cuffs, thermometers: issue #15) connect briefly and may share slots over time.
CONTINUOUS_ROLES: Final = frozenset({DeviceRole.HEART_RATE_STRAP, DeviceRole.PULSE_OXIMETER})


class DeviceBinding(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One bound wearable: found by ``address`` (or by advertised ``name`` where addresses rotate)."""

    id: Identifier
    patient: Identifier
    role: DeviceRole
    address: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.address is None) == (self.name is None):
            raise ValueError(f"device {self.id!r}: set exactly one of `address` or `name`")
        if self.address is not None:
            address = self.address.upper()
            if not (_MAC_RE.match(address) or _UUID_RE.match(address)):
                raise ValueError(
                    f"device {self.id!r}: address {self.address!r} is not a Bluetooth address like AA:BB:CC:DD:EE:FF"
                )
        if self.name is not None and not self.name.strip():
            raise ValueError(f"device {self.id!r}: name must not be empty")

    def matches(self, address: str, name: str | None) -> bool:
        """Whether an advertisement from ``address`` named ``name`` is this device."""
        if self.address is not None:
            return address.upper() == self.address.upper()
        return name is not None and name == self.name


class BleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Radio behaviour; the defaults suit a Raspberry Pi's on-board adapter."""

    adapter: str | None = None  # e.g. "hci1"; None: the system default adapter
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=32)] = 7  # Broadcom ~7 slots, CSR ~5
    connect_timeout_s: PositiveFloat = 20.0
    operation_timeout_s: PositiveFloat = 10.0  # reads, start_notify, RACP steps
    scan_window_s: PositiveFloat = 10.0  # one scan burst when a bound device is not in sight
    seen_ttl_s: PositiveFloat = 30.0  # how long an advertisement counts as "in sight"
    backoff_min_s: PositiveFloat = 1.0
    backoff_max_s: PositiveFloat = 60.0
    stale_after_s: PositiveFloat = 60.0  # a connected device silent this long is reconnected
    scan_stall_scans: Annotated[int, msgspec.Meta(ge=1)] = 5  # empty scans in a row before adapter recovery
    backfill: bool = True  # ask oximeters for stored records (RACP) after a reconnect
    # Another bleak backend instead of the platform's (BlueZ on Linux): "module:callable" returning an
    # async context manager, called with backend_options, that yields an object with client_kwargs and
    # scanner_kwargs for BleakClient / BleakScanner (bleak's own backend= argument). The simulator provides
    # "wardwatch.firmware_sim.bleak_backend:bleak_backend" (options: transport = "tcp-client:HOST:PORT").
    backend: str | None = None
    backend_options: dict[str, str] = msgspec.field(default_factory=dict)


class QueueSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The durable on-disk queue (SQLite, WAL) that every reading passes through."""

    path: Path = Path("/var/lib/wardwatch-gateway/queue.sqlite3")
    max_messages: Annotated[int, msgspec.Meta(ge=10)] = 500_000  # ~300 B each: ~150 MB, ~7 h of 7 devices
    commit_interval_s: PositiveFloat = 0.2
    commit_batch: Annotated[int, msgspec.Meta(ge=1)] = 500  # commit sooner at this many messages (held samples)
    in_flight: Annotated[int, msgspec.Meta(ge=1, le=65000)] = 256  # unacknowledged publishes at once
    # One vitals_batch message per device per commit instead of one vitals message per signal and
    # notification (no added latency: messages wait for the commit either way). Consumers (ingest,
    # alerting, fhir) accept both; set false only for consumers older than vitals_batch.
    batch_vitals: bool = True


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Prometheus ``/metrics`` endpoint; off unless ``port`` is set."""

    host: str = "127.0.0.1"  # loopback: a node exporter / agent on the Pi scrapes it
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0  # 0: no metrics endpoint
    device_labels: bool = False  # per-device last-seen ages, labelled by the pseudonymous device id


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Everything ``wardwatch gateway`` needs."""

    gateway_id: Identifier
    ward: Identifier
    mqtt: MqttSettings
    devices: tuple[DeviceBinding, ...] = ()
    ble: BleSettings = BleSettings()
    queue: QueueSettings = QueueSettings()
    metrics: MetricsSettings = MetricsSettings()
    status_interval_s: PositiveFloat = 60.0
    device_timezone: str = "local"  # zone of device clocks (PLX spot-check timestamps): "local", "UTC", IANA name
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        seen_ids: set[str] = set()
        seen_keys: set[str] = set()
        for device in self.devices:
            if device.id in seen_ids:
                raise ValueError(f"device id {device.id!r} is bound twice")
            seen_ids.add(device.id)
            key = f"address:{device.address.upper()}" if device.address else f"name:{device.name}"
            if key in seen_keys:
                raise ValueError(f"{key.replace(':', ' ', 1)} is bound to two device entries")
            seen_keys.add(key)
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"log_level {self.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        if self.ble.backoff_min_s > self.ble.backoff_max_s:
            raise ValueError("ble.backoff_min_s must not exceed ble.backoff_max_s")

    @property
    def continuous_devices(self) -> tuple[DeviceBinding, ...]:
        """Bound devices that each need a connection slot of their own all the time."""
        return tuple(d for d in self.devices if d.role in CONTINUOUS_ROLES)

    def capacity_problem(self) -> str | None:
        """Why this config binds more continuous devices than the adapter has slots (None if it does not)."""
        continuous = len(self.continuous_devices)
        slots = self.ble.max_connections
        if continuous <= slots:
            return None
        return (
            f"gateway {self.gateway_id} binds {continuous} continuous devices but its adapter has {slots} "
            f"connection slots (ble.max_connections): {continuous - slots} of them would never connect. "
            f"Bind at most {slots} continuous devices to this gateway and move the others to another gateway "
            "(or set ble.max_connections to what this adapter really supports)"
        )

    def binding(self, device_id: str) -> DeviceBinding:
        """The binding with id ``device_id``."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def load_gateway_config(path: Path | str | None, *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the gateway's config file (plus ``WARDWATCH_*`` overrides)."""
    config = load_config(GatewayConfig, path, environ=environ)
    if config.mqtt.tls and config.mqtt.ca_file is not None and not config.mqtt.ca_file.is_file():
        raise ConfigError(f"CA file {config.mqtt.ca_file} does not exist", key="mqtt.ca_file", source=str(path))
    for key, file in (("mqtt.cert_file", config.mqtt.cert_file), ("mqtt.key_file", config.mqtt.key_file)):
        if file is not None and not file.is_file():
            raise ConfigError(f"{file} does not exist", key=key, source=str(path))
    if config.device_timezone not in {"local", "UTC"}:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(config.device_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {config.device_timezone!r}: use 'local', 'UTC' or an IANA name (Europe/London)",
                key="device_timezone",
                source=str(path),
            ) from None
    return config
