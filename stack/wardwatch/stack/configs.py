"""The config file ``wardwatch up`` writes for each part it runs (alerting, ingest, gateways, FHIR, console).

Each goes to ``<state>/config/<part>.toml``; the parts read them as they would in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from wardwatch.core.tomlfile import write_toml
from wardwatch.stack.errors import StackError
from wardwatch.stack.options import StackOptions

INGEST_DATABASE: Final = "wardwatch"
GATEWAY_SLOTS: Final = 7  # each home gateway's BLE connection slots (a Raspberry Pi's), its registry capacity
# InfluxDB users of a started influxd (passwords in <state>/secrets/influx-<user>): the admin makes the schema,
# ingest may only write, the reader (dashboards, the console, you) may only read
INFLUX_ADMIN, INFLUX_INGEST, INFLUX_READER = "admin", "ingest", "reader"


class PartConfigs:
    """Writes each part's config file into ``<state>/config``."""

    def __init__(self, state: Path, options: StackOptions, influx_users: dict[str, str]) -> None:
        self.state = state
        self.options = options
        self.influx_users = influx_users  # InfluxDB user -> password (filled when the stack starts influxd)

    def ingest(self, mqtt: dict[str, Any], influx_url: str) -> Path:
        """Ingest's config: writes as the options' (or the started influxd's write-only) user."""
        return write_toml(
            self.state / "config" / "ingest.toml",
            {
                "log_level": "INFO",
                "mqtt": mqtt,
                "influx": self.influx_section(influx_url),
                "metrics": {"host": "127.0.0.1", "port": 0},
                # provenance: the registry's documents kept on disk, so a restart judges its backlog at once
                "registry": {"state_file": self.state / "ingest" / "registry.json"},
            },
        )

    def fhir(self, mqtt: dict[str, Any], url: str) -> Path:
        """The FHIR exporter's config: its own broker principal, exporting to ``url``."""
        return write_toml(
            self.state / "config" / "fhir.toml",
            {
                "log_level": "INFO",
                "mqtt": mqtt,
                "fhir": {"url": url},
                "metrics": {"host": "127.0.0.1", "port": 0},
            },
        )

    def console(self, ward: str, port: int, api_port: int, influx_url: str) -> Path:
        """The console's config: the alerting API for its users, trends as the InfluxDB reader."""
        influx: dict[str, Any] = {"url": influx_url, "database": INGEST_DATABASE}
        if self.influx_users:
            influx |= {"username": INFLUX_READER, "password": self.influx_users[INFLUX_READER]}
        return write_toml(
            self.state / "config" / "console.toml",
            {
                "ward": ward,
                "host": "127.0.0.1",
                "port": port,
                "idle_logout_s": self.options.console_idle_logout_s,
                "log_level": "INFO",
                "alerting": {"url": f"http://127.0.0.1:{api_port}"},
                "influx": influx,
            },
        )

    def influx_section(self, url: str) -> dict[str, Any]:
        """Ingest's [influx] section: the write-only user of a started influxd, or the options' InfluxDB."""
        options = self.options
        if options.influx_api == "v1" and self.influx_users:
            return {
                "api": "v1",
                "url": url,
                "database": INGEST_DATABASE,
                "username": INFLUX_INGEST,
                "password": self.influx_users[INFLUX_INGEST],
                "create_schema": False,
            }
        if options.influx_api == "v1":
            return {"api": "v1", "url": url, "database": INGEST_DATABASE}
        missing = [name for name in ("influx_token", "influx_org", "influx_bucket") if not getattr(options, name)]
        if options.influx_api != "v2" or missing or options.influx_url is None:
            raise StackError(
                "InfluxDB 2.x/3.x needs --influx-api v2 with --influx-url, --influx-token, --influx-org and "
                f"--influx-bucket (missing: {', '.join(missing) or 'influx-url'})"
            )
        return {
            "api": "v2",
            "url": url,
            "token": options.influx_token,
            "org": options.influx_org,
            "bucket": options.influx_bucket,
        }

    def identity_key(self) -> Path:
        """The registry's identity key file."""
        return self.state / "secrets" / "alerting-identity.key"

    def alerting(self, ward: str, mqtt: dict[str, Any], receiver: str, api_port: int) -> Path:
        """Alerting's config: every destination pages the local receiver first, escalation scaled."""

        def hook(destination: str) -> dict[str, Any]:
            # channels fail over in order: the local page receiver first, the nurse-app topic if it is down
            return {"channels": [{"type": "webhook", "url": f"{receiver}/{destination}"}, {"type": "mqtt"}]}

        def scale(seconds: int) -> int | float:
            value = round(seconds * self.options.escalation_scale, 3)
            return int(value) if value == int(value) else value

        return write_toml(
            self.state / "config" / "alerting.toml",
            {
                "service_id": "alerting-1",
                "database": self.state / "alerting" / "alerting.db",
                # the audit log's key, away from the database (created 0600 by the first `alerting user add`)
                "audit_key_file": self.state / "secrets" / "alerting-audit.key",
                # patient identity in the registry, encrypted with this key (docs/registry.md)
                "registry": {"identity_key_file": self.identity_key()},
                "log_level": "INFO",
                "mqtt": mqtt,
                # the console (on this host) forwards the browser's address: logins are throttled and audited by it
                "api": {"host": "127.0.0.1", "port": api_port, "trusted_proxies": ["127.0.0.1"]},
                "paging": {"backoff_min_s": 0.2, "backoff_max_s": 2.0},
                "wards": {
                    ward: {
                        "failsafe": "charge-desk",
                        # equipment alarms of no single patient (a gateway over capacity) page the operator
                        "operator": "operator",
                        "operator_timeout_s": scale(900),
                        "destinations": {
                            "primary-nurse": hook("primary-nurse"),
                            "charge-nurse": hook("charge-nurse"),
                            "charge-desk": hook("charge-desk"),
                            "operator": hook("operator"),
                        },
                        "escalation": {
                            "high": {
                                "ack_timeout_s": scale(300),
                                "steps": [
                                    {"destination": "primary-nurse", "timeout_s": scale(60)},
                                    {"destination": "charge-nurse", "timeout_s": scale(120)},
                                ],
                            },
                            "medium": {
                                "ack_timeout_s": scale(900),
                                "steps": [
                                    {"destination": "primary-nurse", "timeout_s": scale(180)},
                                    {"destination": "charge-nurse", "timeout_s": scale(300)},
                                ],
                            },
                        },
                    }
                },
            },
        )

    def gateway(
        self,
        home: str,
        ward: str,
        patients: list[dict[str, Any]],
        mqtt: dict[str, Any],
        port: int,
        bluez: bool,
        *,
        with_devices: bool = False,
    ) -> Path:
        """A home gateway's config. Its devices come as its kit from the registry over MQTT (docs/provenance.md);
        ``with_devices`` writes them into the file too, for ``wardwatch gateway check`` before anything starts."""
        devices = [
            {
                "id": device["id"],
                "patient": patient["id"],
                "role": device["kind"],
                "name": device["name"],
            }
            for patient in patients
            for device in patient["devices"]
        ]
        ble: dict[str, Any] = {
            "scan_window_s": 3.0,
            "backoff_min_s": 0.5,
            "backoff_max_s": 10.0,
            "max_connections": GATEWAY_SLOTS,  # the capacity the registry knows the gateway by
        }
        if not bluez:
            ble["backend"] = "wardwatch.firmware_sim.bleak_backend:bleak_backend"
            ble["backend_options"] = {"transport": f"tcp-client:127.0.0.1:{port}", "name": f"{home}-central"}
        return write_toml(
            self.state / "config" / f"gateway-{home}.toml",
            {
                "gateway_id": home,
                "ward": ward,
                "status_interval_s": 15.0,
                "log_level": "INFO",
                "mqtt": mqtt,
                "ble": ble,
                "queue": {"path": self.state / "gateways" / home / "queue.sqlite3"},
                "devices": devices if with_devices else [],
            },
        )
