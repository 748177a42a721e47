"""End-to-end paging latency: sample published to MQTT -> page received by a webhook receiver.

Set-up (all real, on loopback): a mosquitto broker, the alerting service as a child process
(``wardwatch.alerting.cli run``: MQTT consumer, :class:`~wardwatch.alerting.engine.Engine`, alarm
manager, SQLite outbox, pager) and, in this process, a webhook receiver and a publisher that streams
``patients`` simulated patients (strap HR and oximeter SpO2, 1 Hz each, QoS 1, spread over 50 slices
per second). After a warm-up each patient's SpO2 drops below the limit once, at onsets spread over
``spread_s``. The SpO2 condition delay is configured to 0 s. The engine still confirms a sudden
step with its artefact filter (a 7-sample Hampel window: the 4th low sample makes the median low),
so two figures are reported:

* ``latency_ms_*``: from publishing the sample that made the condition true (the alarm's
  ``started``, taken from the alarm published on MQTT) to the page's arrival: the pipeline's
  latency, excluding every clinical delay and confirmation;
* ``onset_to_page_ms_p50``: from the first low sample, i.e. including the filter's confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.config import MqttSettings
from wardwatch.core.errors import WaitTimeoutError
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import SCHEMA_VERSION, Alarm, AlarmState, Sample, Signal, Vitals, decode, encode
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import alarm_topic, vitals_topic
from wardwatch.core.waiting import wait_for

SLICES_PER_S = 50
WARD = "ward-a"


def _config_text(tmp: Path, broker: Mosquitto, receiver: WebhookReceiver, api_port: int) -> str:
    return f"""
database = "{tmp / "alerting.db"}"
rules = "{tmp / "rules.toml"}"
log_level = "WARNING"

[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false

[api]
port = {api_port}

[paging]
concurrency = 256

[wards.{WARD}]
failsafe = "desk"
[wards.{WARD}.destinations.nurse]
channels = [{{ type = "webhook", url = "{receiver.url("/nurse")}" }}]
[wards.{WARD}.destinations.desk]
channels = [{{ type = "webhook", url = "{receiver.url("/desk")}" }}]
[wards.{WARD}.escalation.high]
steps = [{{ destination = "nurse", timeout_s = 600 }}]
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _wait_healthy(port: int, child: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if child.returncode is not None:
                raise RuntimeError(f"alerting service exited with status {child.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200 and (await response.json())["inputs_ready"]:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError("alerting service did not become healthy")


async def end_to_end(*, patients: int = 1000, warmup_s: float = 5.0, spread_s: float = 20.0) -> dict[str, Any]:
    """Run the benchmark; return its figures (latencies in ms)."""
    with tempfile.TemporaryDirectory(prefix="wardwatch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\n")
        async with Mosquitto(directory=tmp / "mosquitto") as broker, WebhookReceiver() as receiver:
            api_port = free_port()
            config = tmp / "alerting.toml"
            config.write_text(_config_text(tmp, broker, receiver, api_port))
            log = (tmp / "service.log").open("wb")
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wardwatch.alerting.cli", "run", "--config", str(config), stdout=log, stderr=log
            )
            try:
                await _wait_healthy(api_port, child)
                return await _stream(broker, receiver, patients, warmup_s, spread_s)
            finally:
                if child.returncode is None:
                    child.terminate()
                    try:
                        await asyncio.wait_for(child.wait(), 10)
                    except TimeoutError:
                        child.kill()
                        await child.wait()
                log.close()


async def _stream(
    broker: Mosquitto, receiver: WebhookReceiver, patients: int, warmup_s: float, spread_s: float
) -> dict[str, Any]:
    settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
    ids = [f"p-{i:05d}" for i in range(patients)]
    onset_at = {pid: warmup_s + spread_s * i / patients for i, pid in enumerate(ids)}
    triggered: dict[str, int] = {}
    sent_ns: dict[tuple[str, int], int] = {}  # (patient, sample t) of low SpO2 samples -> publish time
    started: dict[str, int] = {}  # alarm id -> started (t of the sample that raised it)
    seq = dict.fromkeys(ids, 0)
    published = 0
    async with (
        MqttClient(settings, "bench-publisher", clean_start=True, max_inflight=65535) as mqtt,
        MqttClient(settings, "bench-alarms", clean_start=True) as alarms,
    ):
        await mqtt.wait_connected(10)
        await alarms.wait_connected(10)
        await alarms.subscribe(alarm_topic(WARD, "+"))

        async def collect() -> None:
            async for message in alarms.messages():
                alarm = decode(message.payload)
                if isinstance(alarm, Alarm) and alarm.state is AlarmState.ACTIVE:
                    started.setdefault(alarm.alarm_id, alarm.started)

        collector = asyncio.create_task(collect())
        start = time.monotonic()
        end = warmup_s + spread_s + 5.0
        tick = 0
        while True:
            elapsed_target = tick / SLICES_PER_S
            if elapsed_target > end:
                break
            delay = start + elapsed_target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_s = time.monotonic() - start
            t_ms = time.time_ns() // 1_000_000
            for i in range(tick % SLICES_PER_S, patients, SLICES_PER_S):
                pid = ids[i]
                gateway = f"gw-{i // 100:03d}"
                seq[pid] += 1
                low = now_s >= onset_at[pid]
                spo2 = 85.0 if low else 97.0
                hr = Vitals(
                    v=SCHEMA_VERSION,
                    patient=pid,
                    device=f"hr-{i:05d}",
                    gateway=gateway,
                    signal=Signal.HEART_RATE,
                    seq=seq[pid],
                    samples=(Sample(t=t_ms, v=72.0),),
                )
                ox = Vitals(
                    v=SCHEMA_VERSION,
                    patient=pid,
                    device=f"ox-{i:05d}",
                    gateway=gateway,
                    signal=Signal.SPO2,
                    seq=seq[pid],
                    samples=(Sample(t=t_ms, v=spo2),),
                )
                mqtt.publish_nowait(vitals_topic(WARD, gateway, pid, hr.device, "heart_rate"), encode(hr))
                if low:
                    now_ns = time.time_ns()
                    triggered.setdefault(pid, now_ns)
                    sent_ns[(pid, t_ms)] = now_ns
                mqtt.publish_nowait(vitals_topic(WARD, gateway, pid, ox.device, "spo2"), encode(ox))
                published += 2
            tick += 1
        duration = time.monotonic() - start
        with contextlib.suppress(WaitTimeoutError):  # late pages still count (and show in the latencies)
            await wait_for(
                lambda: len({r.body.get("patient") for r in receiver.unique("/nurse")}) >= len(triggered),
                15.0,
                max_interval=0.1,
            )
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    first_page: dict[str, tuple[int, str]] = {}
    for request in receiver.unique("/nurse"):
        pid = request.body.get("patient", "")
        if pid in triggered and pid not in first_page:
            first_page[pid] = (request.received_ns, request.body["alarm_id"])
    onset_latencies = [(first_page[p][0] - triggered[p]) / 1e6 for p in first_page]
    latencies = []
    for pid, (received, alarm_id) in first_page.items():
        sent = sent_ns.get((pid, started.get(alarm_id, -1)))
        if sent is not None:
            latencies.append((received - sent) / 1e6)
    figures: dict[str, Any] = {
        "patients": patients,
        "signals": ["heart_rate", "spo2"],
        "rate_hz_per_signal": 1,
        "messages_published": published,
        "messages_per_s": round(published / duration),
        "clinical_delay_s": 0.0,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "onsets": len(triggered),
        "pages_received": len(first_page),
        "pages_missing": len(triggered) - len(first_page),
        "pages_matched_to_trigger_sample": len(latencies),
    }
    if onset_latencies:
        figures["onset_to_page_ms_p50"] = round(statistics.median(onset_latencies), 2)
    if latencies:
        figures.update(
            {
                "latency_ms_p50": round(statistics.median(latencies), 2),
                "latency_ms_p90": round(_percentile(latencies, 0.90), 2),
                "latency_ms_p99": round(_percentile(latencies, 0.99), 2),
                "latency_ms_max": round(max(latencies), 2),
                "target_p99_ms": 100,
            }
        )
    return figures
