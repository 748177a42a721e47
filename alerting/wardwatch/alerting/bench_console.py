"""Page latency with and without console sessions open, in one run: issue 13's "20 console sessions open while
1,000 patients stream: alerting page latency p99 still <= 100 ms".

Set-up as :func:`wardwatch.alerting.bench_e2e.end_to_end` (a mosquitto broker, the alerting service as a child
process, a webhook receiver, the load from worker processes of :mod:`wardwatch.core.loadgen`: ``patients``
patients streaming HR and SpO2 at 1 Hz, each desaturating once at onsets spread over ``spread_s``), plus the
real console back end (``wardwatch console``, a process of its own) in front of the alerting API. ``sessions``
nurses are logged in to the console before the load starts (each login is an argon2 verification at the API).

While the onsets come, the sessions' live streams (``GET /api/stream`` through the console: one upstream
server-sent-events stream per session, each reading the whole ward's board) are opened and closed in
alternating blocks (``blocks``: off, on, off, on, ...), so drift over the run falls on both sides. Each page is
put on the side its confirming sample was published on: ``open`` (every stream had its snapshot and was
reading) or ``closed`` (none open); onsets while streams were opening or closing are counted apart. The JSON
has both sides' latency percentiles and their ratio, the load generator's own report (latencies are withheld
if it could not offer the load), what the streams received and the CPU the service and the console used.

The streams are read in a process of their own: read in the measuring process, 20 streams of a 1,000-patient
board delayed the page receiver's own clock and doubled the p50 they were supposed to measure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.bench_e2e import (
    NURSE,
    PER_GATEWAY,
    WARD,
    _config_text,
    _cpu_seconds,
    _kits,
    _percentile,
    _wait_healthy,
    confirming_publish_ns,
    default_workers,
)
from wardwatch.alerting.engine._filters import CONFIRM_SAMPLES
from wardwatch.alerting.settings import load_alerting_config
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver, enrol_in_database
from wardwatch.core.config import MqttSettings
from wardwatch.core.loadgen import LoadPlan, LoadReport, run_load
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import Alarm, AlarmState, Signal, decode
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import alarm_topic
from wardwatch.core.waiting import wait_for

__all__ = ["run_streams", "sessions_under_load"]

COOKIE = "ww_console"  # the console's session cookie (wardwatch.console.app.COOKIE; a part imports no other part)

LOAD_START_S = 1.0  # run_load's workers start together about this long (+0.5 s per worker) after it is called


@dataclass
class _Consoles:
    """Logged-in console sessions whose live streams open and close together (in a process of its own: reading
    20 streams must not delay the clock of the page receiver in the measuring process)."""

    base: str
    sessions: list[aiohttp.ClientSession]
    events: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    open_intervals: list[tuple[int, int]] = field(default_factory=list)  # (ns all reading, ns closing began)
    switching: list[tuple[int, int]] = field(default_factory=list)  # opening or closing: neither side
    snapshot_ms: list[float] = field(default_factory=list)  # stream requested -> its snapshot received
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def _read(self, index: int, ready: asyncio.Event) -> None:
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with self.sessions[index].get(self.base + "/api/stream", timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"console stream refused: {response.status} {await response.text()}")
            tail = b""  # an event's first line may straddle two chunks (a snapshot is a line of ~0.5 MB)
            async for chunk in response.content.iter_any():
                self.bytes[index] += len(chunk)
                window = tail + chunk
                self.events[index] += window.count(b"event: ") - tail.count(b"event: ")
                if not ready.is_set() and b"event: snapshot" in window:
                    self.snapshot_ms.append((time.perf_counter() - started) * 1000)
                    ready.set()
                tail = window[-32:]

    async def open(self) -> None:
        """Open every session's stream; returns when each has its snapshot."""
        began = time.time_ns()
        readies = [asyncio.Event() for _ in self.sessions]
        self._readers = [asyncio.create_task(self._read(i, ready)) for i, ready in enumerate(readies)]
        all_ready = asyncio.ensure_future(asyncio.gather(*(ready.wait() for ready in readies)))
        watched: list[asyncio.Future[Any]] = [all_ready, *self._readers]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        all_ready.cancel()
        for task in self._readers:
            if task.done():
                raise RuntimeError(f"a console stream ended while opening: {task.exception()!r}")
        if not all(ready.is_set() for ready in readies):
            raise RuntimeError("the console streams did not all get their snapshot within 30 s")
        ready_ns = time.time_ns()
        self.switching.append((began, ready_ns))
        self.open_intervals.append((ready_ns, 0))

    async def close(self) -> None:
        """Close every stream (the console then closes its upstream streams)."""
        began = time.time_ns()
        start, _ = self.open_intervals[-1]
        self.open_intervals[-1] = (start, began)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers = []
        self.switching.append((began, time.time_ns() + 500_000_000))  # the console notices within its check


def run_streams(base: str, cookies: list[str], schedule: list[tuple[float, bool]]) -> dict[str, Any]:
    """In a process of its own: open (``True``) or close the sessions' streams at each wall-clock time of
    ``schedule``; return when and what they read."""
    return asyncio.run(_run_streams(base, cookies, schedule))


async def _run_streams(base: str, cookies: list[str], schedule: list[tuple[float, bool]]) -> dict[str, Any]:
    sessions = [aiohttp.ClientSession(headers={"Cookie": f"{COOKIE}={sid}"}) for sid in cookies]
    consoles = _Consoles(base, sessions, [0] * len(sessions), [0] * len(sessions))
    try:
        for at, opening in schedule:
            await asyncio.sleep(max(0.0, at - time.time()))
            if opening:
                await consoles.open()
            elif consoles.open_intervals and consoles.open_intervals[-1][1] == 0:
                await consoles.close()
        if consoles.open_intervals and consoles.open_intervals[-1][1] == 0:
            await consoles.close()
    finally:
        for session in sessions:
            await session.close()
    return {
        "open_intervals": consoles.open_intervals,
        "switching": consoles.switching,
        "snapshot_ms": consoles.snapshot_ms,
        "events": consoles.events,
        "bytes": consoles.bytes,
    }


@contextlib.asynccontextmanager
async def _console(
    api_port: int, tmp: Path, sessions: int, password: str, logins: dict[str, float]
) -> AsyncIterator[tuple[str, list[str], int]]:
    """The console back end as its own process, and ``sessions`` nurses logged in to it, each from a browser
    of its own (loopback address 127.0.0.10, .11, ...), all at once; ``logins``: how long that took and how
    many attempts were throttled (429)."""
    port = free_port()
    config = tmp / "console.toml"
    config.write_text(
        f'ward = "{WARD}"\nport = {port}\nidle_logout_s = 3600\nlog_level = "WARNING"\n'
        f'[alerting]\nurl = "http://127.0.0.1:{api_port}"\n'
    )
    log = (tmp / "console.log").open("wb")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wardwatch.core", "console", "--config", str(config), stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    clients = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{10 + i % 240}", 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        for i in range(sessions)
    ]
    try:

        async def healthy() -> bool:
            if child.returncode is not None:
                raise RuntimeError(f"the console exited ({child.returncode}); see {tmp / 'console.log'}")
            with contextlib.suppress(aiohttp.ClientError):
                async with clients[0].get(base + "/healthz") as response:
                    return response.status == 200
            return False

        await wait_for(healthy, 30, what="the console back end", max_interval=0.2)
        started = time.perf_counter()
        throttled = await asyncio.gather(*(_log_in(client, base, password) for client in clients))
        logins.update(sessions=sessions, seconds=round(time.perf_counter() - started, 3), throttled=sum(throttled))
        cookies = [client.cookie_jar.filter_cookies(URL(base))[COOKIE].value for client in clients]
        yield base, cookies, child.pid
    finally:
        for client in clients:
            await client.close()
        if child.returncode is None:
            child.terminate()
            await child.wait()
        log.close()


async def _log_in(client: aiohttp.ClientSession, base: str, password: str) -> int:
    """Log in through the console; on 429 wait as ``Retry-After`` says. How many attempts were throttled."""
    for throttled in range(60):
        async with client.post(base + "/api/login", json={"name": NURSE, "password": password}) as response:
            if response.status == 200:
                return throttled
            if response.status != 429:
                raise RuntimeError(f"console login failed: {response.status} {await response.text()}")
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    raise RuntimeError("console login still throttled after 60 attempts")


def _side(sent_ns: int, streams: dict[str, Any]) -> str:
    """``open``, ``closed`` or ``switching`` at ``sent_ns``."""
    if any(start <= sent_ns <= end for start, end in streams["switching"]):
        return "switching"
    if any(start <= sent_ns and (end == 0 or sent_ns < end) for start, end in streams["open_intervals"]):
        return "open"
    return "closed"


def _latencies(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"pages": 0}
    return {
        "pages": len(values),
        "latency_ms_p50": round(statistics.median(values), 2),
        "latency_ms_p90": round(_percentile(values, 0.90), 2),
        "latency_ms_p99": round(_percentile(values, 0.99), 2),
        "latency_ms_max": round(max(values), 2),
    }


async def sessions_under_load(
    *, patients: int = 1000, sessions: int = 20, warmup_s: float = 5.0, spread_s: float = 40.0, blocks: int = 4
) -> dict[str, Any]:
    """Run the benchmark (see the module); return its figures."""
    with tempfile.TemporaryDirectory(prefix="wardwatch-bench-console-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rules.toml").write_text("[defaults]\nspo2_delay_s = 0.0\n")
        password = secrets.token_urlsafe(16)
        with Store(tmp / "alerting.db") as store:
            Authenticator(store).add_user(NURSE, Role.NURSE, password, 0)
        async with Mosquitto(directory=tmp / "mosquitto") as broker, WebhookReceiver() as receiver:
            api_port = free_port()
            config = tmp / "alerting.toml"
            # the console forwards each browser's address (as `wardwatch up` configures it)
            text = _config_text(tmp, broker, receiver, api_port)
            config.write_text(text.replace("[api]\n", '[api]\ntrusted_proxies = ["127.0.0.1"]\n', 1))
            await enrol_in_database(load_alerting_config(config), _kits(patients), capacity=2 * PER_GATEWAY)
            log = (tmp / "service.log").open("wb")
            service = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wardwatch.alerting.cli", "run", "--config", str(config), stdout=log, stderr=log
            )
            try:
                await _wait_healthy(api_port, service)
                logins: dict[str, float] = {}
                async with _console(api_port, tmp, sessions, password, logins) as (base, cookies, console_pid):
                    cpu = {"service": _cpu_seconds(service.pid), "console": _cpu_seconds(console_pid)}
                    report, started, streams = await _run(broker, patients, warmup_s, spread_s, blocks, base, cookies)
                    cpu = {
                        "service": round(_cpu_seconds(service.pid) - cpu["service"], 2),
                        "console": round(_cpu_seconds(console_pid) - cpu["console"], 2),
                    }
                    figures = _figures(report, receiver, started, streams)
                    figures["cpu_s"] = cpu
                    figures["logins"] = logins
                    async with (
                        aiohttp.ClientSession() as http,
                        http.get(f"http://127.0.0.1:{api_port}/metrics") as response,
                    ):
                        metrics = await response.text()
                    figures["streams"]["dropped_by_alerting"] = sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in metrics.splitlines()
                        if line.startswith("wardwatch_alerting_live_dropped_total{")
                    )
                    return figures
            finally:
                if service.returncode is None:
                    service.terminate()
                    try:
                        await asyncio.wait_for(service.wait(), 10)
                    except TimeoutError:
                        service.kill()
                        await service.wait()
                log.close()


async def _run(
    broker: Mosquitto, patients: int, warmup_s: float, spread_s: float, blocks: int, base: str, cookies: list[str]
) -> tuple[LoadReport, dict[str, int], dict[str, Any]]:
    """Offer the load while the streams open and close in blocks over the confirming samples; the alarms'
    ``started`` and what the streams did."""
    workers = default_workers(patients)
    plan = LoadPlan(
        host=broker.host,
        port=broker.port,
        ward=WARD,
        patients=patients,
        duration_s=warmup_s + spread_s + 5.0,
        onset_s=tuple(warmup_s + spread_s * i / patients for i in range(patients)),
        workers=workers,
    )
    # the blocks are of confirming samples (the side a page is put on): CONFIRM_SAMPLES s after each onset
    begins = time.time() + LOAD_START_S + 0.5 * workers + warmup_s + CONFIRM_SAMPLES[Signal.SPO2]
    schedule = [(begins + block * spread_s / blocks, block % 2 == 1) for block in range(blocks)]
    schedule.append((begins + spread_s + 8.0, False))  # open until the last pages are in
    started: dict[str, int] = {}
    settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
    async with MqttClient(settings, "bench-alarms", clean_start=True) as alarms:
        await alarms.wait_connected(10)
        await alarms.subscribe(alarm_topic(WARD, "+"))

        async def collect() -> None:
            async for message in alarms.messages():
                alarm = decode(message.payload)
                if isinstance(alarm, Alarm) and alarm.state is AlarmState.ACTIVE:
                    started.setdefault(alarm.alarm_id, alarm.started)

        collector = asyncio.create_task(collect())
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            reading = asyncio.get_running_loop().run_in_executor(pool, run_streams, base, cookies, schedule)
            report = await asyncio.to_thread(run_load, plan)
            streams = await reading
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    return report, started, streams


def _figures(
    report: LoadReport, receiver: WebhookReceiver, started: dict[str, int], streams: dict[str, Any]
) -> dict[str, Any]:
    low = report.low_samples
    onsets = {p for p, samples in low.items() if len(samples) > CONFIRM_SAMPLES[Signal.SPO2]}
    first_page: dict[str, tuple[int, str]] = {}
    for request in receiver.unique("/nurse"):
        pid = request.body.get("patient", "")
        if pid in onsets and pid not in first_page:
            first_page[pid] = (request.received_ns, request.body["alarm_id"])
    sides: dict[str, list[float]] = {"closed": [], "open": [], "switching": []}
    slow: list[tuple[float, str, int]] = []  # (latency ms, side, confirming sample sent ns)
    for pid, (received, alarm_id) in first_page.items():
        sent = confirming_publish_ns(low[pid], started.get(alarm_id, -1))
        if sent is not None:
            side = _side(sent, streams)
            sides[side].append((received - sent) / 1e6)
            slow.append((round((received - sent) / 1e6, 1), side, sent))
    figures: dict[str, Any] = {
        "bench": "console_sessions_under_load",
        "patients": report.plan.patients,
        "sessions": len(streams["events"]),
        **report.summary(),
        "onsets": len(onsets),
        "pages_received": len(first_page),
        "pages_missing": len(onsets) - len(first_page),
    }
    if report.problems:
        figures["latency_not_reported"] = "the load generator could not offer the load: " + "; ".join(report.problems)
    else:
        closed, opened = _latencies(sides["closed"]), _latencies(sides["open"])
        figures |= {
            "streams_closed": closed,
            "streams_open": opened,
            "while_switching": _latencies(sides["switching"]),
            "target_p99_ms": 100,
            # the slowest pages, when (s after the first confirming sample) and on which side: a stall of the
            # machine shows as a cluster at one moment, a cost of the streams as a spread over their blocks
            "slowest": [
                {"latency_ms": ms, "side": side, "at_s": round((sent - min(t for _, _, t in slow)) / 1e9, 2)}
                for ms, side, sent in sorted(slow, reverse=True)[:8]
            ],
        }
        if sides["closed"] and sides["open"]:
            figures["ratio_p50"] = round(opened["latency_ms_p50"] / closed["latency_ms_p50"], 2)
            figures["ratio_p99"] = round(opened["latency_ms_p99"] / closed["latency_ms_p99"], 2)
    snapshots = streams["snapshot_ms"]
    figures["streams"] = {
        "opened_times": len(streams["open_intervals"]),
        "snapshot_ms_p50": round(statistics.median(snapshots), 1) if snapshots else None,
        "snapshot_ms_max": round(max(snapshots), 1) if snapshots else None,
        "events_per_session_min": min(streams["events"]),
        "megabytes_per_session_max": round(max(streams["bytes"]) / 1e6, 2),
    }
    return figures
