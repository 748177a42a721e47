"""What the gateway's tests share: BLE settings for the simulated radio, a gateway, a publisher (or any service) run
in the background until it is ready, alerting configured to page every priority to a webhook, and a queue writer
killed with SIGKILL.

Import as ``from tests.gateway.harness import ...`` (fixtures stay in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from wardwatch.alerting.settings import AlertingConfig, config_from_mapping
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BleakArguments
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import BleSettings, GatewayConfig
from wardwatch.gateway.publisher import Publisher
from wardwatch.gateway.queue import DurableQueue

READY_TIMEOUT = 30.0
"""Seconds a service (gateway, ingest, alerting) may take to be ready."""

FAST_BLE = BleSettings(
    connect_timeout_s=3.0,
    operation_timeout_s=3.0,
    scan_window_s=1.0,
    seen_ttl_s=5.0,
    backoff_min_s=0.05,
    backoff_max_s=0.5,
    stale_after_s=30.0,
)
"""BLE timings for the simulated radio: quick scans and reconnects."""


@contextlib.asynccontextmanager
async def running_task(
    coro: Coroutine[Any, Any, None], ready: asyncio.Event | None = None, *, what: str = "service ready"
) -> AsyncIterator[asyncio.Task[None]]:
    """``coro`` as a task until the block ends (cancelled then); with ``ready``, the block starts once it is set,
    and a task that ended first raises what stopped it."""
    task: asyncio.Task[None] = asyncio.create_task(coro)
    try:
        if ready is not None:
            await wait_for(lambda: ready.is_set() or task.done(), READY_TIMEOUT, what=what)
            if task.done():
                task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_gateway(
    config: GatewayConfig, bleak: BleakArguments | None = None, **gateway_kwargs: Any
) -> AsyncIterator[Gateway]:
    """An unmodified gateway (no default recovery) using the simulated central's ``bleak`` arguments, ready."""
    gateway = Gateway(
        config,
        use_default_recovery=False,
        client_kwargs=bleak.client_kwargs if bleak else None,
        scanner_kwargs=bleak.scanner_kwargs if bleak else None,
        **gateway_kwargs,
    )
    async with running_task(gateway.run(), gateway.ready, what="gateway ready"):
        yield gateway


def paging_alerting_config(tmp_path: Path, mosquitto: Mosquitto, receiver: WebhookReceiver) -> AlertingConfig:
    """Alerting for ward-a on ``mosquitto`` (no TLS, no API) paging every priority to ``receiver``'s ``/nurse``."""
    steps = {"steps": [{"destination": "nurse", "timeout_s": 60}]}
    config = config_from_mapping(
        {
            "database": str(tmp_path / "alerting.db"),
            "api": {"enabled": False},
            "paging": {"attempts_per_channel": 2, "backoff_min_s": 0.01, "backoff_max_s": 0.05},
            "wards": {
                "ward-a": {
                    "destinations": {"nurse": {"channels": [{"type": "webhook", "url": receiver.url("/nurse")}]}},
                    "escalation": {"high": steps, "medium": steps, "low": steps},
                    "failsafe": "nurse",
                }
            },
        }
    )
    config.mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    return config


@contextlib.asynccontextmanager
async def running_publisher(
    queue: DurableQueue,
    settings: MqttSettings,
    *,
    in_flight: int = 64,
    client_id: str = "gw-01",
    gateway: str = "gw-01",
    ward: str = "ward-a",
) -> AsyncIterator[Publisher]:
    """The gateway's publisher draining ``queue`` to the broker of ``settings`` until the block ends."""
    async with MqttClient(settings, client_id, backoff_min_s=0.1, backoff_max_s=1.0) as mqtt:
        publisher = Publisher(queue, mqtt, gateway=gateway, ward=ward, in_flight=in_flight)
        async with running_task(publisher.run()):
            yield publisher


async def committed_before_kill_9(script: str, *args: str, until: int) -> int:
    """Run ``python -c script *args`` (it prints each count it has committed, one a line) and SIGKILL it once it
    printed ``until`` or more: the last count it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    committed = -1
    try:
        async with asyncio.timeout(60):
            while committed < until:
                line = await proc.stdout.readline()
                assert line, "writer exited early"
                committed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return committed
