"""What ``wardwatch up`` was asked to run (:class:`StackOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StackOptions:
    """What ``wardwatch up`` was asked to run."""

    state: Path
    scenario: str = "demo"
    speed: float = 1.0
    duration_s: float | None = None
    mqtt_port: int | None = None
    api_port: int | None = None
    influx_url: str | None = None  # an existing InfluxDB instead of starting one
    influx_api: str = "v1"  # "v1": /write (1.x, or 2.x/3.x compatibility API); "v2": /api/v2/write with a token
    influx_token: str | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    # an existing broker instead of starting one: a `wardwatch broker init` folder whose credentials/ hold a
    # [mqtt] section per principal (ingest, alerting, one per gateway), loaded into that broker beforehand
    broker_credentials: Path | None = None
    ble: str = "sim"  # "sim": simulator's bleak backend over TCP; "bluez": simulator on vhci, gateways on BlueZ
    quiet: bool = False
    # for fault tests: each gateway reaches the broker through its own TcpProxy (Stack.proxies[home])
    gateway_proxy: bool = False
    # more broker principals: user -> ACL lines (e.g. a test's recorder); passwords in Stack.mqtt_users
    extra_mqtt_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # multiplies the escalation timeouts written to the alerting config (0.1: minutes become seconds)
    escalation_scale: float = 1.0
    # for tests of the capacity report: start gateways that `wardwatch gateway check` refuses (more
    # continuous devices than connection slots) instead of refusing the scenario
    allow_over_capacity: bool = False
    # also the FHIR exporter (`wardwatch fhir`): into fhir_url, else the local test server (`fhir testserver`)
    fhir: bool = False
    fhir_url: str | None = None
    # the nurses' web console (`wardwatch console`) on this port (default: a free one); off with console=False
    console: bool = True
    console_port: int | None = None
    console_idle_logout_s: float = 900.0
