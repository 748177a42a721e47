"""The local FHIR R4 test server (Medplum's FHIR router in Node, ``fhir/testserver``) as a child process.

``scripts/setup`` installs its npm packages (``npm ci``); :class:`FhirTestServer` starts ``node server.mjs``
on a free port in its own directory and keeps its resources across :meth:`stop`/:meth:`start` (saved on
SIGTERM), so a test can take the server away for a while and bring it back with its data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from wardwatch.core.schema import DeviceRole, Sample, Signal, Vitals, encode
from wardwatch.core.servers import LOOPBACK, Mosquitto, free_port
from wardwatch.core.servers.process import ChildServer, http_request
from wardwatch.core.testing import DeadLetters, mqtt_settings, publish_all
from wardwatch.core.topics import vitals_topic
from wardwatch.fhir.config import ExportSettings, FhirConfig, FhirServerSettings, MetricsSettings
from wardwatch.fhir.errors import FhirError

__all__ = [
    "TESTSERVER_DIR",
    "DeadLetters",
    "FhirTestServer",
    "FhirTestServerMissingError",
    "fhir_config",
    "publish_all",
    "vitals_stream",
]

TIMEOUT: Final = 30.0

#: Where ``server.mjs`` and its ``node_modules`` live in a source checkout.
TESTSERVER_DIR: Final = Path(__file__).resolve().parents[3] / "fhir" / "testserver"


class FhirTestServerMissingError(FhirError):
    """The Node test server or its packages are not installed."""


class FhirTestServer(ChildServer):
    """``node fhir/testserver/server.mjs`` on a free loopback port; an async context manager."""

    _name = "fhir-testserver"
    _package = "nodejs"

    def __init__(
        self,
        *,
        directory: Path | str | None = None,
        port: int | None = None,
        keep_directory: bool = False,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        server_dir: Path = TESTSERVER_DIR,
    ) -> None:
        super().__init__(
            binary="node",
            directory=directory,
            keep_directory=keep_directory,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        if not (server_dir / "node_modules" / "@medplum" / "fhir-router").is_dir():
            raise FhirTestServerMissingError(
                f"the FHIR test server's npm packages are missing in {server_dir}: run scripts/setup "
                f"(or `npm ci` in {server_dir})"
            )
        self._server_dir = server_dir
        self._ports_given = port is not None
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        """Base URL of the FHIR API (ends in ``/``)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def config_path(self) -> Path:
        """The saved repository (the server has no config file)."""
        return self.directory / "resources.json"

    def _write_config(self) -> None:
        pass

    def _pick_new_ports(self) -> None:
        self.port = free_port()

    def _argv(self, exe: str) -> list[str]:
        script = str(self._server_dir / "server.mjs")
        return [exe, script, "--host", self.host, "--port", str(self.port), "--data", str(self.config_path)]

    async def _probe(self) -> bool:
        try:
            status, _ = await http_request(self.host, self.port, "GET", "/healthcheck", timeout=2.0)
        except (OSError, TimeoutError, ConnectionError):
            return False
        return status == 200

    # -- helpers for tests ---------------------------------------------------------------------------

    async def request(self, method: str, target: str, body: Any = None) -> tuple[int, Any]:
        """One request; returns the status and the parsed JSON body."""
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/fhir+json"} if body is not None else {}
        status, raw = await http_request(
            self.host, self.port, method, target, body=payload, headers=headers, timeout=30.0
        )
        return status, json.loads(raw) if raw else None

    async def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        """All resources of a search (``_count`` pages followed), e.g. ``search("Observation", code=...)``."""
        query = "&".join(f"{quote(k)}={quote(v, safe='|:/')}" for k, v in {**params, "_count": "1000"}.items())
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            status, bundle = await self.request("GET", f"/{resource_type}?{query}&_offset={offset}")
            if status != 200:
                raise AssertionError(f"search {resource_type}?{query} answered {status}: {bundle}")
            page = [entry["resource"] for entry in bundle.get("entry", [])]
            found += page
            if len(page) < 1000:
                return found
            offset += len(page)

    async def validate(self, resource: dict[str, Any], profile: str | None = None) -> list[dict[str, Any]]:
        """Medplum's ``validateResource`` issues of ``resource`` (against ``profile`` too, if given)."""
        if profile is not None:
            resource = {**resource, "meta": {"profile": [profile]}}
        status, outcome = await self.request("POST", f"/{resource['resourceType']}/$validate", resource)
        if status != 200:
            raise AssertionError(f"$validate answered {status}: {outcome}")
        issues: list[dict[str, Any]] = outcome["issue"]
        return [i for i in issues if i["severity"] in ("error", "fatal")]


def node_available() -> bool:
    """Whether ``node`` is on PATH."""
    return shutil.which("node") is not None


def fhir_config(
    broker: Mosquitto, server: FhirTestServer, *, client_id: str = "fhir-test", **export: Any
) -> FhirConfig:
    """An exporter config for the test servers (no metrics endpoint, fast retries, 10 s intervals)."""
    mqtt = mqtt_settings(broker, client_id)
    settings = {"interval_s": 10, "settle_s": 0.5, "grace_s": 1.0, **export}
    return FhirConfig(
        mqtt=mqtt,
        fhir=FhirServerSettings(url=server.url, retry_min_s=0.05, retry_max_s=1.0, timeout_s=10.0),
        export=ExportSettings(**settings),
        metrics=MetricsSettings(port=0),
    )


#: The simulated wearables of each patient: (device id suffix, role, signals).
DEVICES: Final = (
    ("hr", DeviceRole.HEART_RATE_STRAP, (Signal.HEART_RATE, Signal.RR_INTERVAL)),
    ("ox", DeviceRole.PULSE_OXIMETER, (Signal.SPO2, Signal.PULSE_RATE)),
)
_BASE: Final = {Signal.HEART_RATE: 70.0, Signal.RR_INTERVAL: 0.85, Signal.SPO2: 96.0, Signal.PULSE_RATE: 68.0}


def vitals_stream(
    patients: int, seconds: int, start_ms: int, *, ward: str = "ward-a", gateway: str = "gw-01"
) -> list[tuple[str, bytes]]:
    """1 Hz messages of one sample per signal and second for ``patients`` patients, in time order."""
    messages = []
    for second in range(seconds):
        t = start_ms + second * 1000
        for p in range(patients):
            patient = f"p-{p:03d}"
            for suffix, _role, signals in DEVICES:
                device = f"dev-{suffix}-{p:03d}"
                for signal in signals:
                    value = _BASE[signal] + (second % 5) * (0.01 if signal is Signal.RR_INTERVAL else 1)
                    message = Vitals(
                        patient=patient,
                        device=device,
                        gateway=gateway,
                        signal=signal,
                        seq=second,
                        samples=(Sample(t=t, v=value),),
                    )
                    messages.append((vitals_topic(ward, gateway, patient, device, signal), encode(message)))
    return messages
