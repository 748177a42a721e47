"""End-to-end paging latency: sample published to MQTT -> page received by a webhook receiver.

Set-up (all real, on loopback): a mosquitto broker, the alerting service as a child process
(``wardwatch.alerting.cli run``: MQTT consumer, :class:`~wardwatch.alerting.engine.Engine`, alarm
manager, SQLite outbox, pager) and, in this process, a webhook receiver and a publisher that streams
``patients`` simulated patients (strap HR and oximeter SpO2, 1 Hz each, QoS 1, spread over 50 slices
per second). After a warm-up each patient's SpO2 drops below the limit once, at onsets spread over
``spread_s``. The SpO2 condition delay is configured to 0 s. The engine still confirms a sudden
step with its artefact filter (a 7-sample Hampel window: the 4th low sample makes the median low),
so two figures are reported:

* ``latency_ms_*``: from publishing the sample that made the condition true (the one that confirmed
  the step: the alarm's ``started``, taken from the alarm published on MQTT, is the onset it is dated
  from, and the confirming sample comes ``CONFIRM_SAMPLES`` seconds later) to the page's arrival: the
  pipeline's latency, excluding every clinical delay and confirmation;
* ``onset_to_page_ms_p50``: from the first low sample, i.e. including the filter's confirmation.

With ``login_flood_per_s`` (``wardwatch bench alerting --login-flood-per-s 200``), a separate process
sends that many login attempts per second to the API for as long as the patients stream (half with
random names, half guessing the real nurse's password, from ``flood_clients`` loopback addresses),
while the real nurse logs in with her password every 5 s from her own address and ``/healthz`` is
timed every 100 ms. The nurse's password hash uses the production argon2 cost. The ``login_flood``
block reports what the flood got (status counts), whether and how fast the nurse got in, and the
``/healthz`` latency; the page latencies above are then measured under the flood.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from wardwatch.alerting.auth import Authenticator, HashExecutor, Role
from wardwatch.alerting.engine._filters import CONFIRM_SAMPLES
from wardwatch.alerting.settings import load_alerting_config
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import Kit, WebhookReceiver, enrol_in_database
from wardwatch.core.config import MqttSettings
from wardwatch.core.errors import WaitTimeoutError
from wardwatch.core.loadgen import LoadPlan, LoadReport, replay_gateway, replay_patient_id, run_load
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import Alarm, AlarmState, Signal, decode
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import alarm_topic
from wardwatch.core.waiting import wait_for

WARD = "ward-a"
NURSE = "nurse-ann"
NURSE_ADDRESS = "127.0.0.2"  # the nurse's workstation; the flood comes from 127.0.0.10 and up
NURSE_LOGIN_EVERY_S = 5.0


def _config_text(
    tmp: Path, broker: Mosquitto, receiver: WebhookReceiver, api_port: int, hash_executor: HashExecutor = "thread"
) -> str:
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
login_hash_executor = "{hash_executor}"

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


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def end_to_end(
    *,
    patients: int = 1000,
    warmup_s: float = 5.0,
    spread_s: float = 20.0,
    login_flood_per_s: float = 0.0,
    flood_clients: int = 20,
    hash_executor: HashExecutor = "thread",
    live_streams: int = 0,
    workers: int = 0,
    replay_gateways: int = 0,
    replay_s: int = 600,
    replay_batch: int = 30,
    samples_per_message: int = 1,
) -> dict[str, Any]:
    """Run the benchmark; return its figures (latencies in ms).

    ``workers``: publishing processes (0: :func:`default_workers`). ``samples_per_message``: fewer, larger
    messages (each signal every k seconds with its last k samples). ``replay_gateways``: that many gateways
    also replay ``replay_s`` seconds of backlog (``replay_batch`` samples per message) after the warm-up.
    """
    load = {
        "workers": workers,
        "replay_gateways": replay_gateways,
        "replay_s": replay_s,
        "replay_batch": replay_batch,
        "samples_per_message": samples_per_message,
    }
    with tempfile.TemporaryDirectory(prefix="wardwatch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\n")
        nurse_password = secrets.token_urlsafe(16)
        with Store(tmp / "alerting.db") as store:  # production argon2 cost, as a real nurse's hash has
            Authenticator(store).add_user(NURSE, Role.NURSE, nurse_password, 0)
        async with Mosquitto(directory=tmp / "mosquitto") as broker, WebhookReceiver() as receiver:
            api_port = free_port()
            config = tmp / "alerting.toml"
            config.write_text(_config_text(tmp, broker, receiver, api_port, hash_executor))
            # admitted with their kits, as the registry's provenance check requires (100 patients per gateway)
            await enrol_in_database(
                load_alerting_config(config), _kits(patients, replay_gateways), capacity=2 * PER_GATEWAY
            )
            log = (tmp / "service.log").open("wb")
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wardwatch.alerting.cli", "run", "--config", str(config), stdout=log, stderr=log
            )
            try:
                await _wait_healthy(api_port, child)
                cpu_before = _cpu_seconds(child.pid)
                if live_streams > 0:
                    base = f"http://127.0.0.1:{api_port}"
                    async with _live_streams(base, nurse_password, live_streams) as watchers:
                        figures = await _stream(broker, receiver, patients, warmup_s, spread_s)
                    figures["service_cpu_s"] = round(_cpu_seconds(child.pid) - cpu_before, 2)
                    figures["live_streams"] = await watchers.report(base)
                    return figures
                if login_flood_per_s <= 0:
                    figures = await _stream(broker, receiver, patients, warmup_s, spread_s, **load)
                    figures["service_cpu_s"] = round(_cpu_seconds(child.pid) - cpu_before, 2)
                    return figures
                duration_s = warmup_s + spread_s + 5.0  # as long as the patients stream
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    flooding = asyncio.get_running_loop().run_in_executor(
                        pool,
                        run_login_flood,
                        f"http://127.0.0.1:{api_port}",
                        login_flood_per_s,
                        duration_s,
                        flood_clients,
                        nurse_password,
                    )
                    figures = await _stream(broker, receiver, patients, warmup_s, spread_s, **load)
                    figures["service_cpu_s"] = round(
                        _cpu_seconds(child.pid) - cpu_before, 2
                    )  # threads; no pool processes
                    figures["login_flood"] = await flooding
                figures["login_flood"]["hash_executor"] = hash_executor
                return figures
            finally:
                if child.returncode is None:
                    child.terminate()
                    try:
                        await asyncio.wait_for(child.wait(), 10)
                    except TimeoutError:
                        child.kill()
                        await child.wait()
                log.close()


PER_GATEWAY = 100


def _kits(patients: int, replay_gateways: int = 0) -> dict[str, Kit]:
    """Patient ``p-{i}`` wears ``hr-{i}`` and ``ox-{i}`` through gateway ``gw-{i // 100}``; each replay gateway's
    patient its own strap and oximeter (bound since the epoch: their backlog is old)."""
    replaying: dict[str, Kit] = {
        replay_patient_id(g): (
            replay_gateway(g),
            {f"hr-r{g:05d}": "heart_rate_strap", f"ox-r{g:05d}": "pulse_oximeter"},
        )
        for g in range(replay_gateways)
    }
    return replaying | {
        f"p-{i:05d}": (
            f"gw-{i // PER_GATEWAY:03d}",
            {f"hr-{i:05d}": "heart_rate_strap", f"ox-{i:05d}": "pulse_oximeter"},
        )
        for i in range(patients)
    }


class _Watchers:
    """Console-like live streams (SSE) reading the ward's board, and one client that never reads."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.events = [0] * clients
        self.bytes = [0] * clients

    async def read(self, http: aiohttp.ClientSession, base: str, token: str, index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with http.get(f"{base}/api/v1/wards/{WARD}/stream", headers=headers, timeout=timeout) as response:
            async for line in response.content:
                self.bytes[index] += len(line)
                if line.startswith(b"event: "):
                    self.events[index] += 1

    async def report(self, base: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as response:
            text = await response.text()
        dropped = {
            line.split('why="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("wardwatch_alerting_live_dropped_total{")
        }
        return {
            "clients": self.clients,
            "stalled_clients": 1,
            "events_per_client_min": min(self.events),
            "megabytes_per_client_max": round(max(self.bytes) / 1e6, 2),
            "dropped": dropped,
        }


@contextlib.asynccontextmanager
async def _live_streams(base: str, nurse_password: str, clients: int) -> AsyncIterator[_Watchers]:
    """``clients`` reading live streams of the ward (one nurse's session) and one stalled socket, for the block."""
    import socket

    watchers = _Watchers(clients)
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/api/v1/login", json={"name": NURSE, "password": nurse_password}) as response:
            token = (await response.json())["token"]
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        loop = asyncio.get_running_loop()
        host, port = base.removeprefix("http://").split(":")
        await loop.sock_connect(stalled, (host, int(port)))
        request = f"GET /api/v1/wards/{WARD}/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        await loop.sock_sendall(stalled, request.encode())
        readers = [asyncio.create_task(watchers.read(http, base, token, i)) for i in range(clients)]
        try:
            yield watchers
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            stalled.close()


async def _stream(
    broker: Mosquitto,
    receiver: WebhookReceiver,
    patients: int,
    warmup_s: float,
    spread_s: float,
    *,
    workers: int = 0,
    replay_gateways: int = 0,
    replay_s: int = 600,
    replay_batch: int = 30,
    samples_per_message: int = 1,
) -> dict[str, Any]:
    """Offer the load from worker processes (:mod:`wardwatch.core.loadgen`) and measure pages here."""
    settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
    onset_s = tuple(warmup_s + spread_s * i / patients for i in range(patients))
    plan = LoadPlan(
        host=broker.host,
        port=broker.port,
        ward=WARD,
        patients=patients,
        duration_s=warmup_s + spread_s + 5.0,
        onset_s=onset_s,
        workers=workers or default_workers(patients),
        replay_gateways=replay_gateways,
        replay_s=replay_s,
        replay_batch=replay_batch,
        replay_at_s=warmup_s,
        samples_per_message=samples_per_message,
    )
    started: dict[str, int] = {}  # alarm id -> started (t of the sample that raised it)
    async with MqttClient(settings, "bench-alarms", clean_start=True) as alarms:
        await alarms.wait_connected(10)
        await alarms.subscribe(alarm_topic(WARD, "+"))

        async def collect() -> None:
            async for message in alarms.messages():
                alarm = decode(message.payload)
                if isinstance(alarm, Alarm) and alarm.state is AlarmState.ACTIVE:
                    started.setdefault(alarm.alarm_id, alarm.started)

        collector = asyncio.create_task(collect())
        report = await asyncio.to_thread(run_load, plan)
        low = report.low_samples
        onsets = {p for p, samples in low.items() if len(samples) > CONFIRM_SAMPLES[Signal.SPO2]}
        with contextlib.suppress(WaitTimeoutError):  # late pages still count (and show in the latencies)
            await wait_for(
                lambda: len({r.body.get("patient") for r in receiver.unique("/nurse")} & onsets) >= len(onsets),
                15.0,
                max_interval=0.1,
            )
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    return page_figures(report, receiver, started, onsets)


def default_workers(patients: int) -> int:
    """Publishing processes for ``patients`` (one carries about 5,000 messages/s here)."""
    return max(1, min(4, -(-patients * 2 // 5000)))


def confirming_publish_ns(samples: list[tuple[int, int]], onset_t: int) -> int | None:
    """When the sample that confirmed a step starting at ``onset_t`` was published (``None``: not sent).

    The alarm is dated from its first low sample; the engine's filter confirms the step on the
    ``CONFIRM_SAMPLES``-th low sample after it. Matched by position in the patient's own sequence, not by
    adding seconds to the onset's time stamp (samples are not exactly 1,000 ms apart).
    """
    times = [t for t, _ in samples]
    if onset_t not in times:
        return None
    index = times.index(onset_t) + CONFIRM_SAMPLES[Signal.SPO2]
    return samples[index][1] if index < len(samples) else None


def page_figures(
    report: LoadReport, receiver: WebhookReceiver, started: dict[str, int], onsets: set[str]
) -> dict[str, Any]:
    """Offered/achieved load, pages received/missing and latencies (only if the load was offered)."""
    low = report.low_samples
    first_page: dict[str, tuple[int, str]] = {}
    for request in receiver.unique("/nurse"):
        pid = request.body.get("patient", "")
        if pid in onsets and pid not in first_page:
            first_page[pid] = (request.received_ns, request.body["alarm_id"])
    onset_latencies = [(received - low[p][0][1]) / 1e6 for p, (received, _) in first_page.items()]
    latencies = []
    for pid, (received, alarm_id) in first_page.items():
        sent = confirming_publish_ns(low[pid], started.get(alarm_id, -1))
        if sent is not None:
            latencies.append((received - sent) / 1e6)
    replay_pages = [r.body for r in receiver.unique("/nurse") if str(r.body.get("patient")).startswith("p-r")]
    figures: dict[str, Any] = {
        "patients": report.plan.patients,
        "signals": ["heart_rate", "spo2"],
        "rate_hz_per_signal": 1,
        "samples_per_message": report.plan.samples_per_message,
        **report.summary(),
        "clinical_delay_s": 0.0,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "onsets": len(onsets),
        "pages_received": len(first_page),
        "pages_missing": len(onsets) - len(first_page),
        "pages_matched_to_confirming_sample": len(latencies),
    }
    if report.plan.replay_gateways:
        figures["replay"]["pages_for_ended_conditions"] = len(replay_pages)
        figures["replay"]["pages_by_rule"] = dict(
            collections.Counter(str(page["dedup_key"]).rsplit("/", 1)[1] for page in replay_pages)
        )
    if not report.problems and latencies:
        figures.update(
            {
                "onset_to_page_ms_p50": round(statistics.median(onset_latencies), 2),
                "latency_ms_p50": round(statistics.median(latencies), 2),
                "latency_ms_p90": round(_percentile(latencies, 0.90), 2),
                "latency_ms_p99": round(_percentile(latencies, 0.99), 2),
                "latency_ms_max": round(max(latencies), 2),
                "target_p99_ms": 100,
            }
        )
    elif report.problems:
        figures["latency_not_reported"] = "the load generator could not offer the load: " + "; ".join(report.problems)
    return figures


# -- the login flood (runs in a process of its own, so it does not disturb the publisher's timing) ------------


def run_login_flood(
    base: str, rate_per_s: float, duration_s: float, clients: int, nurse_password: str
) -> dict[str, Any]:
    """Flood ``base``'s login for ``duration_s`` while the nurse logs in now and then; return the figures."""
    return asyncio.run(_login_flood(base, rate_per_s, duration_s, clients, nurse_password))


async def _login_flood(
    base: str, rate_per_s: float, duration_s: float, clients: int, nurse_password: str
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=15)
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{10 + i}", 0)), timeout=timeout)
        for i in range(clients)
    ]
    nurse = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(NURSE_ADDRESS, 0)), timeout=timeout)
    statuses: collections.Counter[str] = collections.Counter()
    nurse_logins: list[tuple[float, int]] = []  # (ms, status)
    health_ms: list[float] = []
    attempts: list[asyncio.Task[None]] = []

    async def attempt(i: int) -> None:
        name, password = (f"x{secrets.token_hex(6)}", "guess") if i % 2 else (NURSE, f"guess-{i}")
        try:
            async with sessions[i % clients].post(
                base + "/api/v1/login", json={"name": name, "password": password}
            ) as response:
                statuses[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1

    async def nurse_logs_in() -> None:
        while True:
            started = time.perf_counter()
            try:
                async with nurse.post(
                    base + "/api/v1/login", json={"name": NURSE, "password": nurse_password}
                ) as response:
                    nurse_logins.append(((time.perf_counter() - started) * 1000, response.status))
            except (aiohttp.ClientError, TimeoutError):
                nurse_logins.append(((time.perf_counter() - started) * 1000, 0))
            await asyncio.sleep(NURSE_LOGIN_EVERY_S)

    async def health() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                started = time.perf_counter()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(base + "/healthz") as response:
                        await response.read()
                        health_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.1)

    helpers = [asyncio.create_task(nurse_logs_in()), asyncio.create_task(health())]
    start = time.monotonic()
    total = round(rate_per_s * duration_s)
    for i in range(total):
        delay = start + i / rate_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        attempts.append(asyncio.create_task(attempt(i)))
    sent_over_s = time.monotonic() - start
    await asyncio.gather(*attempts)
    service_counts: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(base + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(("wardwatch_alerting_logins_total", "wardwatch_alerting_password_verifications")):
                key, _, value = line.rpartition(" ")
                service_counts[key.removeprefix("wardwatch_alerting_")] = float(value)
    for helper in helpers:
        helper.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    for session in [*sessions, nurse]:
        await session.close()
    ok = [ms for ms, status in nurse_logins if status == 200]
    return {
        "attempts": total,
        "attempts_per_s": round(total / sent_over_s, 1),
        "clients": clients,
        "statuses": dict(statuses),
        "nurse_logins": len(nurse_logins),
        "nurse_logins_ok": len(ok),
        "nurse_logged_in": bool(ok),
        "nurse_statuses": dict(collections.Counter(str(status) for _, status in nurse_logins)),
        "nurse_login_ms_p50": round(statistics.median(ok), 1) if ok else None,
        "nurse_login_ms_max": round(max(ok), 1) if ok else None,
        "nurse_login_ms": [round(ms) for ms, _ in nurse_logins],
        "healthz_ms_p50": round(statistics.median(health_ms), 2) if health_ms else None,
        "healthz_ms_p99": round(_percentile(health_ms, 0.99), 2) if health_ms else None,
        "healthz_ms_max": round(max(health_ms), 2) if health_ms else None,
        "service_counts": service_counts,
    }
