"""The running alerting service fuzzed from its own OpenAPI document (schemathesis): no request gives a 5xx.

The service runs as in production (``wardwatch alerting run``, a child process, a real mosquitto);
schemathesis (the ``st`` command) generates valid and invalid requests for every operation from
``/api/v1/openapi.json`` with an admin's token, bounded by examples per operation and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.registry.identity import create_key_file
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import load_alerting_config
from wardwatch.alerting.store import Store
from wardwatch.core.schema import AlarmCategory, Priority
from wardwatch.core.servers import Mosquitto, free_port

PASSWORD = "fuzzing is a clinician's friend"
MAX_EXAMPLES = 40  # per operation and phase: keeps the run well under two minutes on two shared cores

CONFIG = """
database = "{db}"
log_level = "WARNING"
[mqtt]
host = "{host}"
port = {port}
tls = false
[api]
port = {api_port}
argon2_time_cost = 1
argon2_memory_kib = 1024
[registry]
identity_key_file = "{key}"
[wards.ward-a]
failsafe = "desk"
[wards.ward-a.destinations.desk]
channels = [{{ type = "mqtt" }}]
[wards.ward-a.escalation.high]
steps = [{{ destination = "desk", timeout_s = 60 }}]
"""


async def _healthy(base: str, child: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert child.returncode is None, "the alerting service exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz") as response:
                    if response.status == 200 and (await response.json())["inputs_ready"]:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError("the alerting service did not become healthy")


def _seed_alarms(config: Path) -> list[str]:
    """Open alarms in every state the API acts on, including latched high alarms whose condition cleared."""
    settings = load_alerting_config(config)
    with Store(settings.database) as store:
        service = AlarmService(settings, store)  # not started: used for its bookkeeping only
        now = service.clock.now_ms()
        for i in range(12):
            change = ConditionChange(
                patient=f"p-{i}",
                ward="ward-a",
                rule="spo2_low",
                category=AlarmCategory.PHYSIOLOGICAL,
                priority=Priority.HIGH if i % 2 else Priority.MEDIUM,
                active=True,
                t=now,
                value=84.0,
                text="SpO2 84 % below 90 %",
            )
            service.on_conditions([change])
            alarm_id = next(r.alarm_id for r in service.manager.open_alarms() if r.patient == f"p-{i}")
            if i % 3 == 0:
                service.on_conditions([dataclasses.replace(change, active=False)])  # latched if high
            elif i % 3 == 1:
                service.acknowledge(alarm_id, "ann", "at the bedside")
            elif i % 4 == 2:
                service.silence(alarm_id, "ann", "probe reseated", 30)
        return [r.alarm_id for r in service.manager.open_alarms()]


@pytest.fixture
async def service_url(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[str]:
    """The base URL of a running ``wardwatch alerting run`` with users root (admin) and ann (nurse).

    Open alarms in several states are listed in ``schemathesis.toml`` beside the database.
    """
    with Store(tmp_path / "alerting.db") as store:
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)
        auth.add_user("root", Role.ADMIN, PASSWORD, 0)
        auth.add_user("ann", Role.NURSE, PASSWORD, 0)
    api_port = free_port()
    config = tmp_path / "alerting.toml"
    key = tmp_path / "identity.key"
    create_key_file(key)
    config.write_text(
        CONFIG.format(db=tmp_path / "alerting.db", host=mosquitto.host, port=mosquitto.port, api_port=api_port, key=key)
    )
    alarms = ", ".join(f'"{a}"' for a in _seed_alarms(config))
    (tmp_path / "schemathesis.toml").write_text(
        f"[dictionaries.alarms]\nvalues = [{alarms}]\n\n"
        '[parameters]\n"path.alarm_id" = { dictionary = "alarms", probability = 0.8 }\n'
    )
    log = (tmp_path / "service.log").open("wb")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wardwatch.alerting.cli", "run", "--config", str(config), stdout=log, stderr=log
    )
    try:
        base = f"http://127.0.0.1:{api_port}"
        await _healthy(base, child)
        yield base
        assert child.returncode is None, "the alerting service died during the run"
    finally:
        if child.returncode is None:
            child.terminate()
            await asyncio.wait_for(child.wait(), 30)
        log.close()
    records = [json.loads(line) for line in (tmp_path / "service.log").read_text().splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("error", "critical") and r["logger"].startswith("wardwatch")]
    assert errors == []  # (aiohttp's own server logs schemathesis' malformed HTTP probes; it answers them 400)


async def _token(base: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base + "/api/v1/login", json={"name": "root", "password": PASSWORD}) as response,
    ):
        assert response.status == 200
        token: str = (await response.json())["token"]
        return token


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error(service_url: str, tmp_path: Path) -> None:
    token = await _token(service_url)
    report = tmp_path / "schemathesis.json"
    st = Path(sys.executable).parent / "st"
    command = [
        str(st),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{service_url}/api/v1/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20261204",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path",
        "/api/v1/logout",  # would end the token the run uses
        "--exclude-path",
        # an endless text/event-stream: schemathesis reads whole bodies, so every call would hit the request
        # timeout; the stream's auth, 404 and slow-client handling are tested in test_live_stream.py
        "/api/v1/wards/{ward}/stream",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
    )
    output, _ = await asyncio.wait_for(process.communicate(), 150)
    text = output.decode(errors="replace")
    print(text[-3000:])  # the summary: operations, test cases, failures (shown with pytest -rA or -s)
    assert process.returncode == 0, text[-5000:]
    summary: dict[str, Any] = json.loads(report.read_text())
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list | dict)}, indent=2))
